"""The frozen-layer cache is exact: cached and uncached finetuning give the same logits, loss and gradients."""

from __future__ import annotations

import pytest
import torch

from minipt.data.datasets import collate_classification
from minipt.models import GRULM, SequenceClassifier, TransformerLM
from minipt.models.modes import evaluation_mode, train_mode
from minipt.training.frozen_cache import cache_lower_layers, collate_hidden
from minipt.training.strategies import freeze

TOLERANCE = 1e-6  # float32; only the rounding of differently shaped matrix products may differ


def make_classifier(kind: str, fast: bool = False) -> SequenceClassifier:
    torch.manual_seed(0)
    if kind == "gru":
        backbone = GRULM(vocab_size=30, d_embed=16, hidden_size=24, n_layers=3, dropout=0.2, fast=fast)
    else:
        backbone = TransformerLM(vocab_size=30, d_model=16, n_layers=3, n_heads=2, d_ff=32, max_len=20,
                                 dropout=0.2, causal=kind == "causal", fast=fast)
    return SequenceClassifier(backbone, num_classes=3, pooling="mean", dropout=0.2)


def examples(n: int = 12, seed: int = 1) -> list[tuple[list[int], int]]:
    """Token ids of varied lengths (so batches are padded) and labels."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        length = int(torch.randint(3, 20, (1,), generator=generator))
        items.append((torch.randint(1, 30, (length,), generator=generator).tolist(), i % 3))
    return items


def trainable_gradients(model: SequenceClassifier) -> dict[str, torch.Tensor]:
    """The gradients of the trainable parameters the classifier uses (a GRU's unused LM-head projection has none)."""
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("kind", ["causal", "bidirectional", "gru"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_cached_equals_uncached(kind: str, k: int) -> None:
    model = make_classifier(kind)
    freeze(model, k)
    train_mode(model)  # as the training loop: frozen modules in eval (no dropout), the rest training
    items = examples()
    cache = cache_lower_layers(model, items, k, pad_id=0, batch_size=5)  # other batches than the step's
    chosen = [7, 2, 9, 4, 0]

    torch.manual_seed(3)  # the same dropout draws in the layers above
    logits, loss = model(**collate_classification([items[i] for i in chosen], pad_id=0))
    loss.backward()
    uncached_gradients = trainable_gradients(model)
    model.zero_grad(set_to_none=True)

    torch.manual_seed(3)
    cached = collate_hidden([cache[i] for i in chosen])
    cached_logits, loss_cached = model(cached["hidden"], cached["attention_mask"], cached["labels"], from_layer=k)
    loss_cached.backward()
    cached_gradients = trainable_gradients(model)

    torch.testing.assert_close(cached_logits, logits, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(loss_cached, loss, atol=TOLERANCE, rtol=0)
    assert cached_gradients.keys() == uncached_gradients.keys() and cached_gradients
    for name in cached_gradients:
        torch.testing.assert_close(cached_gradients[name], uncached_gradients[name], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["causal", "gru"])
def test_cache_rows_are_the_lower_layers_of_each_example_alone(kind: str) -> None:
    model = make_classifier(kind, fast=True)
    freeze(model, 2)
    items = examples()
    cache = cache_lower_layers(model, items, 2, pad_id=0, batch_size=4)
    for (ids, label), (hidden, cached_label) in zip(items, cache, strict=True):
        with torch.no_grad(), evaluation_mode(model):
            alone = model.backbone.lower_layers(torch.tensor([ids]), None, 2)[0]  # (T_i, C)
        assert cached_label == label and hidden.shape == alone.shape
        torch.testing.assert_close(hidden, alone, atol=TOLERANCE, rtol=0)


def test_frozen_tensors_are_unchanged_and_training_matches() -> None:
    """Three AdamW steps on cached batches: the frozen tensors stay bit-identical, and the trainable ones end
    where three uncached steps take them (within the tolerance)."""
    from minipt.optim import AdamW

    items = examples(16)
    batches = [[0, 3, 5, 7], [1, 2, 8, 15], [4, 6, 9, 10]]
    final = {}
    for path in ("uncached", "cached"):
        model = make_classifier("causal")
        freeze(model, 2)
        frozen_before = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
        cache = cache_lower_layers(model, items, 2, pad_id=0) if path == "cached" else None
        optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        train_mode(model)
        torch.manual_seed(5)
        for chosen in batches:
            if path == "cached":
                cached = collate_hidden([cache[i] for i in chosen])
                _, loss = model(cached["hidden"], cached["attention_mask"], cached["labels"], from_layer=2)
            else:
                _, loss = model(**collate_classification([items[i] for i in chosen], pad_id=0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            if not p.requires_grad:
                assert torch.equal(p, frozen_before[name]), name
        final[path] = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, value in final["cached"].items():
        torch.testing.assert_close(value, final["uncached"][name], atol=1e-5, rtol=0)
