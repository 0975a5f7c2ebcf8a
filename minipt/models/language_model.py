r"""What the two language models share: the loss, sampling the next token, and counting parameters.

:class:`~minipt.models.transformer.TransformerLM` and :class:`~minipt.models.gru.GRULM` differ only in how
they turn token ids into hidden states. Everything around that lives here, written once:

* :func:`language_model_loss` — the mean next-token (or masked-token) cross-entropy;
* :func:`next_token_probabilities` and :func:`sample_next_token` — temperature, top-k and top-p sampling;
* :class:`LanguageModel` — the base class with ``num_parameters`` and the shared argument checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minipt import fast as fast_paths
from minipt import functional as MF
from minipt.errors import MiniptError

__all__ = [
    "ModelInputError",
    "LanguageModel",
    "language_model_loss",
    "check_sampling_arguments",
    "next_token_probabilities",
    "sample_next_token",
]


ModelInputError = MiniptError  # an argument or a tensor a model cannot use: minipt's one error class


def language_model_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100, fast: bool = False) -> Tensor:
    r"""Mean cross-entropy of every position's prediction against its target token.

    .. math::
        \mathcal{L} = \frac{1}{|\mathcal{P}|} \sum_{(b, t) \in \mathcal{P}} -\log
            \operatorname{softmax}(z_{b,t})_{y_{b,t}}, \qquad
        \mathcal{P} = \{(b, t) : y_{b,t} \neq -100\}

    For next-token pretraining :math:`y_{b,t} = x_{b,t+1}`; for masked-LM pretraining only the masked positions
    carry a target and the others are ``-100``, as is padding. A model that predicts the uniform distribution
    scores :math:`\ln V` (``V`` the vocabulary size), the loss of a fresh model.

    ``fast=True`` computes the same loss with :func:`minipt.fast.cross_entropy` (the same bits; its backward
    pass is softmax minus one-hot in one go).

    Shapes: ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)``; output a scalar.
    """
    B, T, V = logits.shape
    if targets.shape != (B, T):
        raise ModelInputError(f"targets must have the shape of idx ({B}, {T}), got {tuple(targets.shape)}")
    cross_entropy = fast_paths.cross_entropy if fast else MF.cross_entropy
    return cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), ignore_index=ignore_index)


def check_sampling_arguments(
    temperature: float, top_k: int | None, vocab_size: int, top_p: float | None = None
) -> None:
    """``temperature`` must be > 0, ``top_k`` (when given) between 1 and ``vocab_size``, ``top_p`` (when given)
    in ``(0, 1]``."""
    if not temperature > 0:  # NaN too
        raise ModelInputError(
            f"temperature must be > 0, got {temperature} (for greedy decoding use top_k=1 instead)"
        )
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ModelInputError(f"top_k must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:  # NaN too
        raise ModelInputError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def next_token_probabilities(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    r"""The distribution the next token is drawn from: temperature, then top-k, then top-p, then softmax.

    .. math::
        p_i = \frac{e^{z_i / \tau}}{\sum_{j \in K} e^{z_j / \tau}} \ \text{ for } i \in K, \qquad p_i = 0
        \ \text{ otherwise}

    with :math:`\tau` the ``temperature`` and :math:`K` the ``top_k`` largest logits (all of them when
    ``top_k`` is None; ties with the k-th largest are kept too). :math:`\tau < 1` sharpens the distribution,
    :math:`\tau > 1` flattens it; :math:`\tau = 0` would divide by zero (use ``top_k=1`` for greedy decoding).

    ``top_p`` (nucleus sampling, Holtzman et al. 2020) then keeps the **smallest** set of most probable tokens
    whose probability adds up to at least :math:`p`: a token stays when the tokens ranked above it hold less than
    :math:`p` (the most probable always stays). Worked example: probabilities :math:`(0.5, 0.3, 0.15, 0.05)`,
    :math:`p = 0.75`: the mass above each is :math:`(0, 0.5, 0.8, 0.95)`, so the first two stay and are
    renormalised to :math:`(0.625, 0.375, 0, 0)`.

    Shapes: ``logits`` ``(B, V)``; output ``(B, V)``, rows summing to 1.
    """
    check_sampling_arguments(temperature, top_k, vocab_size=logits.shape[-1], top_p=top_p)
    scaled = logits / temperature  # (B, V)
    if top_k is not None:
        kth_largest = scaled.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        scaled = scaled.masked_fill(scaled < kth_largest, float("-inf"))
    if top_p is not None:
        ranked, order = MF.softmax(scaled, dim=-1).sort(dim=-1, descending=True)  # (B, V) each
        mass_above = ranked.cumsum(dim=-1) - ranked  # (B, V): what the tokens ranked above hold
        outside = (mass_above >= top_p).scatter(-1, order, mass_above >= top_p)  # (B, V), back in vocabulary order
        scaled = scaled.masked_fill(outside, float("-inf"))
    return MF.softmax(scaled, dim=-1)  # (B, V)


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    suppress_tokens: Sequence[int] = (),
    top_p: float | None = None,
) -> Tensor:
    r"""Draw one token per row from :func:`next_token_probabilities`. ``logits`` ``(B, V)`` -> ids ``(B, 1)``.

    The ids in ``suppress_tokens`` (e.g. ``<pad>`` and ``<mask>``, which are not text) get logit :math:`-\infty`
    first: probability exactly 0, never drawn.
    """
    if suppress_tokens:
        logits = logits.index_fill(-1, torch.tensor(list(suppress_tokens), device=logits.device), float("-inf"))
    probabilities = next_token_probabilities(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probabilities, num_samples=1, generator=generator)  # (B, 1)


class LanguageModel(nn.Module):
    """Base class of :class:`TransformerLM` and :class:`GRULM`: parameter counting and input checks.

    A subclass sets the class attribute ``architecture`` (the name :func:`minipt.models.build_model` knows it by)
    and, in its constructor, ``self.config`` (its constructor arguments, so ``type(model)(**model.config)``
    rebuilds it) and ``self.vocab_size``.
    """

    architecture: str = ""
    config: dict
    vocab_size: int

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalars in the parameters; a tied tensor (embedding = LM head) counts once.

        ``Module.parameters()`` yields each tensor once even when two submodules share it, which is exactly
        the count wanted. ``trainable_only=True`` counts only parameters with ``requires_grad``.
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check_idx(self, idx: Tensor) -> None:
        """``idx`` must be a ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``."""
        name = type(self).__name__
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ModelInputError(
                f"{name}: idx must be a 2-D integer tensor (batch, time), got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        if idx.numel() > 0 and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            bad = int(idx.max()) if int(idx.max()) >= self.vocab_size else int(idx.min())
            raise ModelInputError(f"{name}: token id {bad} is outside the vocabulary [0, {self.vocab_size})")

    def _check_attention_mask(self, attention_mask: Tensor | None, idx: Tensor) -> None:
        """``attention_mask`` (1 = real token, 0 = padding) must have the shape ``(B, T)`` of ``idx``; ``idx``
        may also be hidden states ``(B, T, C)``."""
        if attention_mask is not None and attention_mask.shape != idx.shape[:2]:
            raise ModelInputError(
                f"{type(self).__name__}: attention_mask must have the shape of idx {tuple(idx.shape[:2])}, "
                f"got {tuple(attention_mask.shape)}"
            )


def check_positive(model_name: str, **values: int) -> None:
    """Raise :class:`ModelInputError` naming the first argument that is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ModelInputError(f"{model_name}: {name} must be a positive integer, got {value!r}")


def check_probability(model_name: str, name: str, value: float) -> None:
    """Raise :class:`ModelInputError` unless ``0 <= value <= 1``."""
    if not 0.0 <= value <= 1.0:
        raise ModelInputError(f"{model_name}: {name} must be in [0, 1], got {value}")


def check_pad_id(model_name: str, pad_id: int, vocab_size: int) -> None:
    """The padding id must be a token of the vocabulary."""
    if not 0 <= pad_id < vocab_size:
        raise ModelInputError(f"{model_name}: pad_id must be in [0, vocab_size={vocab_size}), got {pad_id}")
