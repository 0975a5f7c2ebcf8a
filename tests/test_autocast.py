"""A whole training step under ``torch.autocast("cpu", dtype=torch.bfloat16)``, as a GPU run takes it with
``torch.autocast("cuda", ...)``: both language models, on their readable and fast paths.

bfloat16 keeps 8 bits of mantissa, so one rounding is off by up to 2^-8 = 0.4% of the value. Autocast runs the
matrix products in bf16 (minipt's hand-written softmax, norms and cross-entropy then take the dtype they are given:
the loss of the Transformer comes out in bf16, whose step near 4.6 is 2^-5 = 0.03). The loss stays within 0.05 of
the float32 loss (about 4.6 here) and each parameter's gradient within 2% (relative L2 error) of its float32
gradient: PyTorch's own modules of this size (benchmarks/step_time.py's references) stay within 0.6%, minipt's
readable path within 0.8%. The step runs on the CPU, so these tests need no GPU; tests/test_cuda.py runs the same
models on one.

The Transformer's fast path misses: its attention's gradients are 6% off (layer 0's in_proj_weight), ten times
PyTorch's error, as if the hand-written fast attention (``minipt.fast.attention``) computed its softmax and its
backward in bf16. That case is marked as an expected failure until the fast attention keeps float32 inside.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from minipt.models import GRULM, TransformerLM
from minipt.optim import AdamW, clip_grad_norm_, param_groups

VOCAB, BATCH, BLOCK = 100, 4, 32


def build(architecture: str, fast: bool) -> nn.Module:
    torch.manual_seed(0)
    if architecture == "transformer":
        return TransformerLM(VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_len=BLOCK, fast=fast)
    return GRULM(VOCAB, d_embed=64, hidden_size=64, n_layers=2, fast=fast)


def training_step(architecture: str, fast: bool, bf16: bool) -> tuple[Tensor, Tensor, dict[str, Tensor], nn.Module]:
    """Forward (under bf16 autocast or not), backward, clipping and one AdamW step; returns the logits, the loss,
    the gradients (before the step) and the model (after it)."""
    model = build(architecture, fast)
    optimizer = AdamW(param_groups(model, 0.1), lr=1e-3, fast=fast)
    generator = torch.Generator().manual_seed(1)
    idx, targets = (torch.randint(0, VOCAB, (BATCH, BLOCK), generator=generator) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, loss = model(idx, targets)
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters()}
    clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return logits, loss.detach(), gradients, model


FAST_ATTENTION_IN_BF16 = pytest.mark.xfail(strict=True, reason="minipt.fast.attention loses precision under bf16 "
                                           "autocast: 6% gradient error against PyTorch's 0.6%")


@pytest.mark.parametrize("architecture,fast", [("transformer", False), pytest.param("transformer", True,
                         marks=FAST_ATTENTION_IN_BF16), ("gru", False), ("gru", True)])
def test_a_bf16_autocast_training_step_is_close_to_float32(architecture, fast):
    logits32, loss32, gradients32, _ = training_step(architecture, fast, bf16=False)
    logits16, loss16, gradients16, model = training_step(architecture, fast, bf16=True)
    assert logits32.dtype == torch.float32
    if architecture == "transformer":
        assert logits16.dtype == torch.bfloat16  # the head's matrix product ran in bf16: autocast is on
    assert torch.isfinite(loss16)
    assert loss16.float() != loss32  # rounded differently ...
    assert abs(loss16.float() - loss32) < 0.05  # ... but within bf16's precision
    for name, gradient32 in gradients32.items():
        gradient16 = gradients16[name]
        assert gradient16.dtype == torch.float32  # the parameters and their gradients stay float32
        relative_error = (gradient16 - gradient32).norm() / gradient32.norm().clamp_min(1e-12)
        assert relative_error < 0.02, (name, relative_error.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
