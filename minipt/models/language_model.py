r"""What the two language models share: the loss, sampling the next token, the split, and generating.

:class:`~minipt.models.transformer.TransformerLM` and :class:`~minipt.models.gru.GRULM` differ only in how
they turn token ids into hidden states. Everything around that lives here, written once:

* :func:`cross_entropy` and :func:`language_model_loss` — the mean cross-entropy on the path a model's fast
  switch picks, and the next-token (or masked-token) loss;
* :func:`next_token_probabilities` and :func:`sample_next_token` — temperature, top-k and top-p sampling;
* :class:`LanguageModel` — the base class: ``features``, the lower/upper split at layer ``k`` (for the frozen
  cache), ``generate``, ``num_parameters`` and the shared argument checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from minipt import fast as fast_paths
from minipt import functional as MF
from minipt.errors import MiniptError
from minipt.models.modes import evaluation_mode

__all__ = [
    "ModelInputError",
    "LanguageModel",
    "cross_entropy",
    "language_model_loss",
    "check_sampling_arguments",
    "next_token_probabilities",
    "sample_next_token",
]


ModelInputError = MiniptError  # an argument or a tensor a model cannot use: minipt's one error class


def cross_entropy(logits: Tensor, targets: Tensor, fast: bool = False, ignore_index: int = -100) -> Tensor:
    """The mean cross-entropy of ``logits`` ``(N, C)`` against ``targets`` ``(N,)``, on the path ``fast`` picks
    (a model passes its :class:`~minipt.fast.FastSwitch`): :func:`minipt.fast.cross_entropy` when on (the same
    bits forward; its backward pass is softmax minus one-hot in one go), the formula of
    :func:`minipt.functional.cross_entropy` otherwise. Every loss of the models and jobs goes through here."""
    if fast:  # the gradient written out (minipt/fast.py)
        return fast_paths.cross_entropy(logits, targets, ignore_index=ignore_index)
    return MF.cross_entropy(logits, targets, ignore_index=ignore_index)  # the formula


def language_model_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100, fast: bool = False) -> Tensor:
    r"""Mean cross-entropy of every position's prediction against its target token.

    .. math::
        \mathcal{L} = \frac{1}{|\mathcal{P}|} \sum_{(b, t) \in \mathcal{P}} -\log
            \operatorname{softmax}(z_{b,t})_{y_{b,t}}, \qquad
        \mathcal{P} = \{(b, t) : y_{b,t} \neq -100\}

    For next-token pretraining :math:`y_{b,t} = x_{b,t+1}`; for masked-LM pretraining only the masked positions
    carry a target and the others are ``-100``, as is padding. A model that predicts the uniform distribution
    scores :math:`\ln V` (``V`` the vocabulary size), the loss of a fresh model.

    ``fast`` picks the path of :func:`cross_entropy`. Shapes: ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)``;
    output a scalar.
    """
    B, T, V = logits.shape
    if targets.shape != (B, T):
        raise ModelInputError(f"targets must have the shape of idx ({B}, {T}), got {tuple(targets.shape)}")
    return cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), fast, ignore_index)


SAMPLING_ARGUMENTS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "greedy": "top_k=1"}


def check_sampling_arguments(
    temperature: float, top_k: int | None, vocab_size: int, top_p: float | None = None,
    names: dict[str, str] = SAMPLING_ARGUMENTS,
) -> None:
    """``temperature`` must be a finite number > 0, ``top_k`` (when given) between 1 and ``vocab_size``, ``top_p``
    (when given) in ``(0, 1]``. ``names``: what the messages call each argument (``minipt generate``: its flags)."""
    if not (math.isfinite(temperature) and temperature > 0):  # NaN too
        raise ModelInputError(f"{names['temperature']} must be a number > 0, got {temperature} (for the most likely "
                              f"token every time, use {names['greedy']})")
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ModelInputError(f"{names['top_k']} must be between 1 and the vocabulary size {vocab_size}, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:  # NaN too
        raise ModelInputError(f"{names['top_p']} must be a number in (0, 1] (1 keeps every token), got {top_p}")


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
    r"""Base class of :class:`TransformerLM` and :class:`GRULM`: what both do the same way.

    A subclass sets the class attribute ``architecture`` (the name :func:`minipt.models.build_model` knows it by)
    and, in its constructor, ``self.config`` (its constructor arguments, so ``type(model)(**model.config)``
    rebuilds it), ``self.vocab_size``, ``self.fast`` (the model's one :class:`~minipt.fast.FastSwitch`, shared
    by its layers and its loss) and the parts ``embedding``, ``layers`` (lowest first), ``norm`` (the final
    norm, or ``nn.Identity``) and ``lm_head``. It writes three methods:

    * ``embed(idx, attention_mask, ...)``: the checked input through ``embedding``, ``(B, T, C)``;
    * ``_run_layers(x, attention_mask, first, last, keep=False)``: ``layers[first:last]`` on ``x``, returning
      the last output and, with ``keep``, a dict of what each layer produced (lists, one entry per layer);
    * ``_next_token_logits(idx, new_tokens, state)``: the next token's logits ``(B, V)`` and the state to carry
      (for :meth:`generate`).

    The split at layer ``k`` for the frozen cache (:mod:`minipt.training.frozen_cache`):

    .. math:: \operatorname{features}(x) = \operatorname{upper}_k\bigl(\operatorname{lower}_k(x)\bigr), \qquad
              \operatorname{lower}_k = \text{layers}_{<k} \circ \text{embed}, \quad
              \operatorname{upper}_k = \text{norm} \circ \text{layers}_{\ge k}

    bit for bit, for every ``k`` in ``[0, n_layers]``.
    """

    architecture: str = ""
    causal: bool = True  # False: a bidirectional encoder, which cannot generate
    config: dict
    vocab_size: int
    fast: fast_paths.FastSwitch

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalars in the parameters; a tied tensor (embedding = LM head) counts once.

        ``Module.parameters()`` yields each tensor once even when two submodules share it, which is exactly
        the count wanted. ``trainable_only=True`` counts only parameters with ``requires_grad``.
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def features(self, idx: Tensor, attention_mask: Tensor | None = None, **embedding_inputs: Tensor) -> Tensor:
        """The final hidden states ``(B, T, hidden_size)``, after the final norm if any: what a task head reads.
        ``idx`` and ``attention_mask`` (1 = real token, 0 = padding) ``(B, T)``."""
        x = self.embed(idx, attention_mask, **embedding_inputs)  # (B, T, C)
        x, _ = self._run_layers(x, attention_mask, 0, len(self.layers))  # (B, T, H)
        return self.norm(x)

    # ------------------------------------------------------------------------------------------------
    # The split at layer k (the frozen cache's)
    # ------------------------------------------------------------------------------------------------

    def lower_layers(self, idx: Tensor, attention_mask: Tensor | None, k: int, **embedding_inputs: Tensor) -> Tensor:
        """The embedding and ``layers[:k]``: the hidden states after layer ``k - 1`` (after the embedding when
        ``k == 0``), ``(B, T, C)``. ``embedding_inputs``: what ``embed`` also takes (the Transformer's
        ``token_type_ids``)."""
        self._check_split(k)
        x = self.embed(idx, attention_mask, **embedding_inputs)  # (B, T, C)
        x, _ = self._run_layers(x, attention_mask, 0, k)
        return x

    def upper_layers(self, hidden: Tensor, attention_mask: Tensor | None, k: int) -> Tensor:
        """``layers[k:]`` and the final norm on the output of :meth:`lower_layers`: what :meth:`features`
        returns. Shapes: ``hidden`` ``(B, T, C)``, ``attention_mask`` ``(B, T)`` or None; output ``(B, T, H)``."""
        self._check_split(k)
        self._check_attention_mask(attention_mask, hidden)
        x, _ = self._run_layers(hidden, attention_mask, k, len(self.layers))
        return self.norm(x)

    def _check_split(self, k: int) -> None:
        if not isinstance(k, int) or not 0 <= k <= len(self.layers):
            raise ModelInputError(f"{type(self).__name__}: k must be an integer in [0, {len(self.layers)}], got {k!r}")

    # ------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        suppress_tokens: Sequence[int] = (),
        on_token: Callable[[Tensor], None] | None = None,
        top_p: float | None = None,
    ) -> Tensor:
        """Extend ``idx`` ``(B, T)`` by ``max_new_tokens`` sampled tokens -> ``(B, T + max_new_tokens)``; the ids in
        ``suppress_tokens`` are never sampled. ``on_token(ids)`` is called with each step's draw ``(B, 1)`` as it
        comes (``minipt generate`` prints the text as it is produced).

        Each step takes the next token's logits from the model (``_next_token_logits``: the Transformer re-reads
        its last ``max_len`` tokens, the GRU carries its states), samples from
        :func:`next_token_probabilities` and appends the draw. Dropout is off while generating; each module's
        train/eval mode is restored after.
        """
        if not self.causal:
            raise ModelInputError(
                f"{type(self).__name__}: generate needs a causal model (causal=True); a bidirectional encoder is "
                "trained to fill in masked tokens, not to continue text"
            )
        self._check_idx(idx)
        check_sampling_arguments(temperature, top_k, self.vocab_size, top_p)
        with evaluation_mode(self):
            state, new_tokens = None, idx  # the whole prompt first, then one token per step
            for _ in range(max_new_tokens):
                logits, state = self._next_token_logits(idx, new_tokens, state)  # (B, V)
                new_tokens = sample_next_token(
                    logits, temperature, top_k, generator, suppress_tokens, top_p
                )  # (B, 1)
                idx = torch.cat([idx, new_tokens], dim=1)
                if on_token is not None:
                    on_token(new_tokens)
        return idx

    # ------------------------------------------------------------------------------------------------
    # Input checks
    # ------------------------------------------------------------------------------------------------

    def _check_idx(self, idx: Tensor) -> None:
        """``idx`` must be a ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``. The value check reads the
        tensor, so it is skipped inside ``torch.compile`` (it would break the graph)."""
        name = type(self).__name__
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ModelInputError(
                f"{name}: idx must be a 2-D integer tensor (batch, time), got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        if torch.compiler.is_compiling() or idx.numel() == 0:
            return
        if int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size:
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
