r"""Heads on a language model: a classification head for finetuning, and BERT's next-sentence head.

:class:`SequenceClassifier` pools the hidden states, then applies one linear layer.

A backbone (:class:`~minipt.models.transformer.TransformerLM` or :class:`~minipt.models.gru.GRULM`) gives one
vector per position, ``features`` ``(B, T, H)``; a sentence label needs one vector per sequence. Pooling picks
or averages, then

.. math:: z = W\,\operatorname{dropout}(\operatorname{pool}(h)) + b, \qquad
          \mathcal{L} = \frac{1}{B} \sum_b -\log \operatorname{softmax}(z_b)_{y_b}

The three poolings, with :math:`m_{b,t} \in \{0, 1\}` the attention mask (1 = real token) and
:math:`\ell_b = \max\{t : m_{b,t} = 1\}` the position of the last real token:

.. math::
    \operatorname{mean}:\ \frac{\sum_t m_{b,t}\, h_{b,t}}{\sum_t m_{b,t}} \qquad
    \operatorname{first}:\ h_{b,0} \qquad
    \operatorname{last}:\ h_{b,\ell_b}

``first`` suits a bidirectional encoder trained with a ``<cls>`` token at position 0 (BERT); ``last`` suits a
causal model or a GRU, whose last real state has read the whole sequence; ``mean`` works for either. ``pooler`` is
BERT's own, :math:`\tanh(W h_{b,0} + c)`: the backbone's ``pooler`` module (a BERT folder's, see
:class:`minipt.interop.bert.BertEncoder`).

:class:`MaskedLMWithNextSentenceHead` adds a two-way head on the ``<cls>`` position to a bidirectional model,
for the ``mlm+nsp`` pretraining objective (:mod:`minipt.jobs.pretrain`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from minipt.fast import FastSwitch
from minipt.models.init import normal_init_
from minipt.models.language_model import (
    LanguageModel,
    ModelInputError,
    check_positive,
    check_probability,
    cross_entropy,
)

__all__ = ["POOLINGS", "mean_pool", "first_token_pool", "last_token_pool", "pool", "SequenceClassifier",
           "MaskedLMWithNextSentenceHead"]

POOLINGS = ("mean", "first", "last", "pooler")


def _real_token_mask(features: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``attention_mask`` as floats ``(B, T)``, or all ones when there is no padding."""
    B, T, _ = features.shape
    if attention_mask is None:
        return features.new_ones(B, T)
    return attention_mask.to(features.dtype)


def mean_pool(features: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    r"""Average of the real tokens' vectors, :math:`\sum_t m_{b,t} h_{b,t} / \sum_t m_{b,t}`.
    ``(B, T, H)`` -> ``(B, H)``; padded positions get weight 0."""
    mask = _real_token_mask(features, attention_mask)  # (B, T)
    summed = (features * mask.unsqueeze(-1)).sum(dim=1)  # (B, H)
    counts = mask.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1); an all-padding row gives 0, not nan
    return summed / counts


def first_token_pool(features: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """The vector at position 0 (a ``<cls>`` token). ``(B, T, H)`` -> ``(B, H)``; the mask is not needed."""
    return features[:, 0, :]


def last_token_pool(features: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    r"""The vector at each sequence's last real token :math:`\ell_b = \max\{t : m_{b,t} = 1\}`.
    ``(B, T, H)`` -> ``(B, H)``; without a mask, position ``T - 1``."""
    B, T, _ = features.shape
    is_real = _real_token_mask(features, attention_mask) > 0  # (B, T)
    positions = torch.arange(T, device=features.device)  # (T,)
    last_real = (positions * is_real).amax(dim=1)  # (B,)  the largest t with m = 1
    return features[torch.arange(B, device=features.device), last_real]  # (B, H)


_POOL_FUNCTIONS = {"mean": mean_pool, "first": first_token_pool, "last": last_token_pool}


def pool(features: Tensor, attention_mask: Tensor | None, pooling: str) -> Tensor:
    """Apply the pooling named ``"mean"``, ``"first"`` or ``"last"``: ``(B, T, H)`` -> ``(B, H)``."""
    if pooling not in _POOL_FUNCTIONS:
        raise ModelInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return _POOL_FUNCTIONS[pooling](features, attention_mask)


class SequenceClassifier(nn.Module):
    r"""Pretrained backbone -> pooling -> dropout -> ``head`` (``nn.Linear(hidden, num_classes)``).

    The formulas are in this module's docstring. ``backbone`` is any minipt language model (it must provide
    ``features``, ``hidden_size``, ``embedding``, ``layers``); its LM head is simply not used. The properties
    ``embedding`` and ``layers`` are the backbone's, so :mod:`minipt.jobs.finetune` freezes a classifier exactly as
    it would the bare LM; ``head`` (and the backbone's final norm) form the top that always trains.

    ``config`` holds ``num_classes``, ``pooling`` and ``dropout``; ``backbone_architecture`` and
    ``backbone_config`` are enough to rebuild the backbone with :func:`minipt.models.build_model`.
    The head is initialised like the rest of minipt: weights N(0, 0.02²), bias 0. ``fast`` is the backbone's
    switch (:class:`~minipt.fast.FastSwitch`), for the loss too.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        check_positive("SequenceClassifier", num_classes=num_classes)
        if pooling not in POOLINGS:
            raise ModelInputError(f"SequenceClassifier: pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and not hasattr(backbone, "pooler"):
            raise ModelInputError("SequenceClassifier: pooling 'pooler' needs a backbone with BERT's pooler "
                                  "(--from hf-bert:FOLDER)")
        check_probability("SequenceClassifier", "dropout", dropout)
        self.config = {"num_classes": num_classes, "pooling": pooling, "dropout": dropout}
        self.backbone_architecture = backbone.architecture
        self.backbone_config = dict(backbone.config)
        self.num_classes = num_classes
        self.pooling = pooling
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.hidden_size, num_classes)
        normal_init_(self.head)

    @property
    def embedding(self) -> nn.Module:
        """The backbone's embedding (the lowest part, frozen first)."""
        return self.backbone.embedding

    @property
    def layers(self) -> nn.ModuleList:
        """The backbone's layers, lowest first."""
        return self.backbone.layers

    @property
    def fast(self) -> FastSwitch:
        """The backbone's fast switch, which the loss follows too."""
        return self.backbone.fast

    def init_layer(self, layer: nn.Module, generator: torch.Generator | None = None) -> None:
        """Re-initialise one of the backbone's layers with the backbone's own scheme."""
        self.backbone.init_layer(layer, generator=generator)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Scalars in the backbone (tied tensors once) and the head; ``trainable_only`` counts ``requires_grad``."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        from_layer: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Class logits ``(B, num_classes)`` and the mean cross-entropy against ``labels`` ``(B,)`` (None
        without labels). ``input_ids`` and ``attention_mask`` are ``(B, T)`` (1 = real token, 0 = padding).

        ``from_layer=k``: ``input_ids`` are instead the hidden states ``(B, T, C)`` after the embedding and the
        lowest ``k`` layers (:mod:`minipt.training.frozen_cache` computes them once), which enter the backbone
        at layer ``k`` (:meth:`~minipt.models.language_model.LanguageModel.upper_layers`).
        """
        if from_layer is None:
            features = self.backbone.features(input_ids, attention_mask)  # (B, T, H)
        else:
            features = self.backbone.upper_layers(input_ids, attention_mask, from_layer)  # (B, T, H)
        if self.pooling == "pooler":  # BERT's: dense + tanh on the first ([CLS]) position
            pooled = self.backbone.pooler(features)  # (B, H)
        else:
            pooled = pool(features, attention_mask, self.pooling)  # (B, H)
        logits = self.head(self.dropout(pooled))  # (B, num_classes)
        if labels is None:
            return logits, None
        if labels.shape != (features.shape[0],):
            raise ModelInputError(
                f"SequenceClassifier: labels must be one class per sequence ({features.shape[0]},), "
                f"got {tuple(labels.shape)}"
            )
        return logits, cross_entropy(logits, labels, fast=self.fast)


class MaskedLMWithNextSentenceHead(nn.Module):
    r"""A bidirectional language model plus BERT's next-sentence head on the ``<cls>`` position (position 0):

    .. math:: z^{\text{NSP}}_b = W\, h_{b,0} + c \in \mathbb{R}^2 \quad (\text{class 1: B follows A})

    ``lm`` is the :class:`~minipt.models.TransformerLM` (``causal=False``); ``nsp_head`` is
    ``nn.Linear(d_model, 2)``. minipt's Transformer has no segment embeddings: the ``<sep>`` token alone marks
    where B starts (RoBERTa-style inputs).
    """

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.lm = lm
        self.nsp_head = nn.Linear(lm.hidden_size, 2)

    @property
    def fast(self) -> FastSwitch:
        """The language model's fast switch, which the MLM and NSP losses follow too."""
        return self.lm.fast

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token logits ``(B, T, V)`` and next-sentence logits ``(B, 2)``, from one pass over ``idx`` ``(B, T)``."""
        features = self.lm.features(idx, attention_mask)  # (B, T, C)
        return self.lm.lm_head(features), self.nsp_head(features[:, 0, :])  # (B, T, V), (B, 2)
