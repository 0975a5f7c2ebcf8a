r"""Frozen layers computed once: finetune with the lower layers frozen without running them every epoch.

When the embedding and the lowest ``k`` layers are frozen *and kept in evaluation mode* (no dropout), what they
output for an example never changes while finetuning:

.. math::
    h_i = \operatorname{Lower}_k(x_i) \quad \text{is the same number at every step,}

so it can be computed once per example, before the first epoch, and each training step then runs only what lies
above it:

.. math::
    z_i = W\,\operatorname{dropout}\bigl(\operatorname{pool}(\operatorname{Upper}_k(h_i))\bigr) + b .

This is exact, not an approximation. A padded position is never attended to (nor read by the GRU before a real
step), so an example's hidden states at its real positions do not depend on what else was in its batch; the
cached batch pads them with zeros and the same attention mask. Only the float rounding of differently shaped
matrix products can differ (``tests/test_frozen_cache.py`` checks logits, loss and gradients within 1e-6).

What it saves: every epoch, the lower layers' forward pass over every training and validation example. The
backward pass never went below the lowest trainable layer anyway (nothing there needs a gradient).

Uses the models' split at layer ``k`` (``features(x) = upper_layers(lower_layers(x, k), k)``, bit for bit):
:meth:`~minipt.models.language_model.LanguageModel.lower_layers` here, once; the classifier's
``forward(hidden, mask, labels, from_layer=k)`` runs the rest (the upper layers and the head) at every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from minipt.data.datasets import collate_classification
from minipt.errors import MiniptError
from minipt.models import SequenceClassifier
from minipt.models.modes import evaluation_mode

__all__ = ["CachedExample", "cache_lower_layers", "cache_batches", "collate_hidden"]

CachedExample = tuple[Tensor, int]  # (hidden states (T_i, C) after the frozen layers, label id)


@torch.no_grad()
def cache_lower_layers(
    model: SequenceClassifier, items: Sequence[tuple[list[int], int]], k: int, pad_id: int, batch_size: int = 64
) -> list[CachedExample]:
    """``Lower_k`` of every example, once: ``[(hidden (T_i, C), label), ...]`` in the order of ``items``.

    ``items`` are ``(token ids, label id)`` pairs (a :class:`~minipt.data.datasets.ClassificationDataset`). The
    lower ``k`` layers and the embedding must be frozen (:func:`minipt.training.strategies.freeze`); they run here in
    evaluation mode, as the training loop keeps frozen modules (:func:`minipt.models.modes.train_mode`), and every
    module's mode is restored after. Examples are run in batches of similar length (less padding); each row is
    cut back to its own length.
    """
    frozen = [model.embedding, *model.layers[:k]]
    if any(p.requires_grad for module in frozen for p in module.parameters()):
        raise MiniptError(f"cache_lower_layers: the embedding and the lower {k} layers must be frozen first")
    backbone = model.backbone
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda index: len(items[index][0]))
    cached: list[CachedExample | None] = [None] * len(items)
    with evaluation_mode(model):
        for start in range(0, len(order), batch_size):
            _cache_batch(backbone, items, order[start : start + batch_size], k, pad_id, device, cached)
    return cached


def _cache_batch(backbone, items, chosen: list[int], k: int, pad_id: int, device: torch.device, cached: list) -> None:
    """Run one batch of examples through ``Lower_k`` and store each row, cut to its length, in ``cached``."""
    batch = collate_classification([items[index] for index in chosen], pad_id)
    mask = batch["attention_mask"].to(device)  # (B, T)
    hidden = backbone.lower_layers(batch["input_ids"].to(device), mask, k)  # (B, T, C)
    for row, index in enumerate(chosen):
        length = len(items[index][0])
        cached[index] = (hidden[row, :length].clone(), items[index][1])  # (T_i, C)


def collate_hidden(batch: Sequence[CachedExample]) -> dict[str, Tensor]:
    """Pad cached hidden states on the right with zeros: ``hidden`` ``(B, T, C)``, ``attention_mask`` ``(B, T)``
    (1 = real position), ``labels`` ``(B,)`` — the same mask as the token batch they came from. The classifier
    takes it as ``model(batch["hidden"], batch["attention_mask"], batch["labels"], from_layer=k)``."""
    longest = max(hidden.shape[0] for hidden, _ in batch)
    width = batch[0][0].shape[1]
    hidden = batch[0][0].new_zeros(len(batch), longest, width)  # (B, T, C)
    attention_mask = torch.zeros(len(batch), longest, dtype=torch.long)  # (B, T)
    for row, (states, _) in enumerate(batch):
        hidden[row, : states.shape[0]] = states
        attention_mask[row, : states.shape[0]] = 1
    labels = torch.tensor([label for _, label in batch])  # (B,)
    return {"hidden": hidden, "attention_mask": attention_mask, "labels": labels}


@torch.no_grad()
def cache_batches(model: SequenceClassifier, batches: list[dict[str, Tensor]], k: int) -> list[dict[str, Tensor]]:
    """Fixed batches of token ids (the validation split's) with ``input_ids`` replaced by their ``Lower_k``
    ``hidden`` states ``(B, T, C)``: the same batches, so their predictions are bit for bit the uncached ones."""
    device = next(model.parameters()).device
    cached = []
    with evaluation_mode(model):
        for batch in batches:
            mask = batch["attention_mask"].to(device)  # (B, T)
            hidden = model.backbone.lower_layers(batch["input_ids"].to(device), mask, k)  # (B, T, C)
            cached.append({"hidden": hidden, "attention_mask": mask, "labels": batch["labels"]})
    return cached
