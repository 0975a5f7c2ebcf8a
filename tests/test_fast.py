"""minipt.fast: every fast path equals the readable formula it speeds up.

For each op (attention with and without masks, causal, dropout; layer norm; GELU in both forms; one GRU layer
over a sequence with and without lengths) and for each layer of minipt.nn built with ``fast=True``: the same
values and the same gradients as the readable path, in float64, to ``SAME`` (absolute and relative 1e-10; the
two differ only by rounding, about 1e-15). Each autograd Function also passes ``torch.autograd.gradcheck``.

The forward passes of the fast layer norm and the exact GELU give the very same bits as the readable formulas
(float32, ``torch.equal``): evaluation with ``fast=True`` computes exactly what the readable path computes.
Whole models are compared in tests/test_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minipt import fast
from minipt import functional as MF
from minipt import nn as mnn

SAME = dict(atol=1e-10, rtol=1e-10)  # fast vs readable in float64
DOUBLE = dict(dtype=torch.float64, requires_grad=True)


def gradients(output, inputs):
    """Gradients of a fixed random projection of ``output`` (a scalar that uses every entry)."""
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=output.dtype)
    return torch.autograd.grad((output * upstream).sum(), inputs)


def assert_same(fast_output, readable_output, inputs):
    """Equal values and equal gradients with respect to every tensor in ``inputs``."""
    assert_close(fast_output, readable_output, **SAME)
    for a, e in zip(gradients(fast_output, inputs), gradients(readable_output, inputs), strict=True):
        assert_close(a, e, **SAME)


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------


def attention_case(mask_kind: str):
    """``(query, key, value, options, leaves)`` for one mask form; ``leaves`` are the tensors to differentiate."""
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 4, 5, **DOUBLE) for _ in range(3))
    options = {}
    if mask_kind in ("causal", "float + causal"):
        options["is_causal"] = True
    if mask_kind == "bool":
        options["attn_mask"] = torch.rand(4, 4) > 0.3  # True = may attend (SDPA's convention)
        options["attn_mask"][:, 0] = True
    if mask_kind in ("float", "float + causal"):
        options["attn_mask"] = torch.randn(2, 1, 4, 4, **DOUBLE)  # a learnable additive bias gets its gradient
    if mask_kind == "dead rows":
        options["attn_mask"] = torch.ones(2, 3, 4, 4, dtype=torch.bool)
        options["attn_mask"][0, 1, 2] = False  # query 2 of batch 0, head 1 may look nowhere -> output 0
    if mask_kind == "broadcast key":
        key = torch.randn(1, 3, 4, 5, **DOUBLE)  # one key set shared by the batch
    if mask_kind == "scale":
        options["scale"] = 0.3
    mask = options.get("attn_mask")
    leaves = [query, key, value] + ([mask] if mask is not None and mask.is_floating_point() else [])
    return query, key, value, options, leaves


MASK_KINDS = ["none", "causal", "bool", "float", "float + causal", "dead rows", "broadcast key", "scale"]


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
def test_attention_equals_the_readable_formula(mask_kind):
    query, key, value, options, leaves = attention_case(mask_kind)
    fast_output = fast.attention(query, key, value, **options)
    readable_output = MF.scaled_dot_product_attention(query, key, value, **options)
    assert_same(fast_output, readable_output, leaves)
    if mask_kind == "dead rows":
        assert torch.equal(fast_output[0, 1, 2], torch.zeros(5, dtype=torch.float64))
    if mask_kind not in ("dead rows", "float + causal"):
        # torch gives nan on dead rows (minipt gives 0 on purpose) and refuses a mask together with is_causal
        assert_close(fast_output, F.scaled_dot_product_attention(query, key, value, **options))


def test_attention_with_dropout_equals_the_readable_formula():
    query, key, value, options, leaves = attention_case("causal")
    # the same generator seed -> the same dropout draws in both paths
    draws = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    fast_output = fast.attention(query, key, value, dropout_p=0.4, generator=draws(), **options)
    readable_output, weights = MF.scaled_dot_product_attention(
        query, key, value, dropout_p=0.4, generator=draws(), return_weights=True, **options
    )
    assert (weights == 0).any() and (weights.tril() == 0).any()  # some allowed weights were dropped
    assert_same(fast_output, readable_output, leaves)
    # the kernel's weights, when asked, are the formula's (after dropout, as applied), for inspection only
    again, fast_weights = fast.attention(query, key, value, dropout_p=0.4, generator=draws(), return_weights=True,
                                         **options)
    assert torch.equal(again, fast_output) and not fast_weights.requires_grad
    assert_close(fast_weights, weights, **SAME)
    # p = 1 drops everything: zeros, as the formula gives (the kernel itself would divide by 1 - p = 0)
    assert torch.equal(fast.attention(query, key, value, dropout_p=1.0), torch.zeros_like(query))


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention_gradcheck(dropout_p):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 4, **DOUBLE) for _ in range(3))
    bias = torch.randn(3, 3, **DOUBLE)
    blocked = torch.tensor([[False, True, True], [False, False, True], [True, True, True]])  # last row dead
    minus_infinity = torch.zeros(3, 3, dtype=torch.float64).masked_fill(blocked, float("-inf"))

    def kernel(q, k, v, m):  # a fresh generator each call: gradcheck needs the same dropout draws every time
        generator = torch.Generator().manual_seed(3)
        return fast.Attention.apply(q * 0.5, k, v, m + minus_infinity, dropout_p, generator, False)

    assert torch.autograd.gradcheck(kernel, (query, key, value, bias))


# ----------------------------------------------------------------------------------------------------------
# Layer norm and GELU
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalized_shape", [(6,), (4, 6)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_equals_the_readable_formula(affine, normalized_shape):
    torch.manual_seed(0)
    x = (torch.randn(3, 4, 6, dtype=torch.float64) * 3 + 1).requires_grad_()
    weight = torch.randn(normalized_shape, **DOUBLE) if affine else None
    bias = torch.randn(normalized_shape, **DOUBLE) if affine else None
    leaves = [x, weight, bias] if affine else [x]
    fast_output = fast.layer_norm(x, normalized_shape, weight, bias, eps=1e-5)
    assert_same(fast_output, MF.layer_norm(x, normalized_shape, weight, bias, eps=1e-5), leaves)

    def kernel(x, *affine_parameters):
        return fast.layer_norm(x, normalized_shape, *affine_parameters)

    assert torch.autograd.gradcheck(kernel, tuple(leaves))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_equals_the_readable_formula(approximate):
    torch.manual_seed(0)
    x = (torch.randn(40, dtype=torch.float64) * 3).requires_grad_()
    assert_same(fast.gelu(x, approximate), MF.gelu(x, approximate), [x])
    assert torch.autograd.gradcheck(lambda x: fast.gelu(x, approximate), (x,))
    # and the derivative at 0 by hand: Phi(0) + 0 * phi(0) = 1/2 (tanh form: (1 + tanh 0) / 2 = 1/2)
    zero = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(fast.gelu(zero, approximate).sum(), zero)
    assert_close(slope, torch.tensor([0.5], dtype=torch.float64), **SAME)
    with pytest.raises(ValueError, match="approximate"):
        fast.gelu(x, "sigmoid")


@pytest.mark.parametrize("shape", [(5, 7), (2, 16, 128), (3, 4, 6)])
def test_layer_norm_and_exact_gelu_forward_give_the_readable_bits(shape):
    # So switching fast on changes no number in evaluation: the forward passes run the same operations in the
    # same order (GELU multiplies by one half elsewhere, which is exact). The tanh form differs by rounding.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 4 + 1  # float32
    weight, bias = torch.randn(shape[-1]), torch.randn(shape[-1])
    for affine in ((weight, bias), (None, None)):
        assert torch.equal(fast.layer_norm(x, shape[-1], *affine), MF.layer_norm(x, shape[-1], *affine))
    assert torch.equal(fast.layer_norm(x, shape[-2:]), MF.layer_norm(x, shape[-2:]))
    assert torch.equal(fast.gelu(x), MF.gelu(x))
    assert_close(fast.gelu(x, "tanh"), MF.gelu(x, "tanh"))


# ----------------------------------------------------------------------------------------------------------
# One GRU layer over a sequence
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_lengths", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gru_sequence_equals_the_readable_loop(with_bias, with_lengths):
    torch.manual_seed(0)
    B, T, H = 3, 4, 2
    input_gates, h0 = torch.randn(B, T, 3 * H, **DOUBLE), torch.randn(B, H, **DOUBLE)
    weight_hh = torch.randn(3 * H, H, **DOUBLE)
    bias_hh = torch.randn(3 * H, **DOUBLE) if with_bias else None
    valid = torch.arange(T) < torch.tensor([[4], [1], [3]]) if with_lengths else None  # (B, T)
    leaves = [input_gates, h0, weight_hh] + ([bias_hh] if with_bias else [])

    fast_output, fast_h_n, fast_reset, fast_update = fast.gru_sequence(input_gates, h0, weight_hh, bias_hh, valid)
    output, h_n, reset, update = mnn.gru_sequence(input_gates, h0, weight_hh, bias_hh, valid)  # the loop
    flat = lambda output, h_n: torch.cat([output.flatten(), h_n.flatten()])  # noqa: E731
    assert_same(flat(fast_output, fast_h_n), flat(output, h_n), leaves)
    assert_close(fast_reset, reset, **SAME)
    assert_close(fast_update, update, **SAME)
    assert fast_output.stride() == output.stride()  # the same memory layout: dropout masks drawn on it match

    def differentiable_outputs(input_gates, h0, weight_hh, *bias):
        return fast.gru_sequence(input_gates, h0, weight_hh, bias[0] if bias else None, valid)[:2]

    assert torch.autograd.gradcheck(differentiable_outputs, tuple(leaves))


# ----------------------------------------------------------------------------------------------------------
# Layers: fast=True against fast=False
# ----------------------------------------------------------------------------------------------------------


def twin_layers(make, seed: int = 0):
    """The same layer twice in float64, readable (``fast=False``) and fast, with the same weights."""
    torch.manual_seed(seed)
    readable = make(False).double()
    fast_layer = make(True).double()
    fast_layer.load_state_dict(readable.state_dict())
    return readable, fast_layer


def compare_layers(readable, fast_layer, inputs, run, seed: int = 3):
    """``run(layer, *inputs)`` on both (the same global seed before each: the same dropout draws), then
    values and gradients for the inputs and every parameter."""
    outputs = []
    for layer in (readable, fast_layer):
        torch.manual_seed(seed)
        outputs.append(run(layer, *inputs))
    readable_output, fast_output = outputs
    assert_close(fast_output, readable_output, **SAME)
    expected = gradients(readable_output, [*inputs, *readable.parameters()])
    actual = gradients(fast_output, [*inputs, *fast_layer.parameters()])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **SAME)


def test_layer_norm_layer_fast_equals_readable():
    readable, fast_layer = twin_layers(lambda fast: mnn.LayerNorm((2, 6), fast=fast))
    with torch.no_grad():
        readable.weight.normal_()
        fast_layer.weight.copy_(readable.weight)
    x = torch.randn(3, 2, 6, **DOUBLE)
    compare_layers(readable, fast_layer, [x], lambda layer, x: layer(x))


@pytest.mark.parametrize("masks", ["none", "key padding + causal"])
def test_multihead_attention_fast_equals_readable(masks):
    readable, fast_layer = twin_layers(lambda fast: mnn.MultiheadAttention(8, 2, dropout=0.2, fast=fast))
    x = torch.randn(3, 5, 8, **DOUBLE)
    kwargs = {}
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1, 3:] = True
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    if masks == "key padding + causal":
        kwargs = {"key_padding_mask": padding, "attn_mask": causal}
    for mode in (readable.train, readable.eval):  # dropout on the attention weights, then off
        mode()
        fast_layer.train(readable.training)
        compare_layers(readable, fast_layer, [x], lambda layer, x: layer(x, x, x, need_weights=False, **kwargs)[0])
    # with torch's default need_weights=True the fast layer still runs the kernel, and its weights are the formula's
    output, weights = fast_layer(x, x, x, **kwargs)
    expected_output, expected_weights = readable(x, x, x, **kwargs)
    assert_close(output, expected_output, **SAME)
    assert_close(weights, expected_weights, **SAME)


def test_multihead_attention_fast_runs_the_kernel_when_weights_are_asked(monkeypatch):
    """``fast and not need_weights`` was a pitfall: torch's default need_weights=True ran the formula."""
    calls = []
    kernel = fast.attention

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(fast, "attention", recorded)
    layer = mnn.MultiheadAttention(8, 2, fast=True)
    x = torch.randn(3, 5, 8)
    _, weights = layer(x, x, x)  # need_weights=True by default, as in torch
    assert len(calls) == 1 and calls[0]["return_weights"] and weights.shape == (3, 5, 5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_models_self_attention_fast_equals_readable(need_weights):
    """The models' attention (minipt/models/attention.py) with their one additive mask, (B, 1, L, S)."""
    from minipt.models.attention import SelfAttention

    readable, fast_layer = twin_layers(lambda fast: SelfAttention(8, 2, dropout=0.2, fast=fast))
    x = torch.randn(3, 5, 8, **DOUBLE)
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1, 3:] = True
    blocked = torch.ones(5, 5, dtype=torch.bool).triu(1) | padding[:, None, None, :]
    mask = torch.zeros(blocked.shape, dtype=torch.float64).masked_fill(blocked, -torch.inf)
    for mode in (readable.train, readable.eval):  # dropout on the attention weights, then off
        mode()
        fast_layer.train(readable.training)
        compare_layers(readable, fast_layer, [x], lambda layer, x: layer(x, mask, need_weights)[0])
    (_, readable_weights), (_, fast_weights) = readable(x, mask, need_weights), fast_layer(x, mask, need_weights)
    if need_weights:
        assert readable_weights.shape == (3, 2, 5, 5)
        assert_close(fast_weights, readable_weights, **SAME)
    else:
        assert readable_weights is None and fast_weights is None


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_encoder_layer_fast_equals_readable(norm_first, activation):
    readable, fast_layer = twin_layers(
        lambda fast: mnn.TransformerEncoderLayer(8, 2, 16, activation=activation, norm_first=norm_first, fast=fast)
    )
    assert fast_layer.self_attn.fast and fast_layer.norm1.fast and fast_layer.norm2.fast  # passed down
    x = torch.randn(3, 5, 8, **DOUBLE)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for mode in (readable.train, readable.eval):  # dropout 0.1 everywhere, then off
        mode()
        fast_layer.train(readable.training)
        compare_layers(readable, fast_layer, [x], lambda layer, x: layer(x, src_mask=causal, is_causal=True))


@pytest.mark.parametrize("with_lengths", [True, False])
def test_gru_layer_fast_equals_readable(with_lengths):
    readable, fast_layer = twin_layers(lambda fast: mnn.GRU(3, 4, num_layers=2, dropout=0.3, fast=fast))
    x, h0 = torch.randn(3, 5, 3, **DOUBLE), torch.randn(2, 3, 4, **DOUBLE)
    lengths = torch.tensor([5, 2, 4]) if with_lengths else None

    def run(layer, x, h0):
        output, h_n, gates = layer(x, h0, lengths=lengths, return_gates=True)
        return torch.cat([output.flatten(), h_n.flatten(), *(g.flatten() for g in gates.update)])

    for mode in (readable.train, readable.eval):  # dropout between the layers, then off
        mode()
        fast_layer.train(readable.training)
        compare_layers(readable, fast_layer, [x, h0], run)


def test_layers_are_readable_by_default_and_set_fast_switches_every_one():
    stack = torch.nn.Sequential(
        mnn.TransformerEncoderLayer(8, 2, 16), mnn.GRU(8, 4), mnn.LayerNorm(4), mnn.MultiheadAttention(4, 2)
    )
    switchable = [m for m in stack.modules() if hasattr(m, "fast")]
    assert len(switchable) == 7  # encoder layer, its attention and two norms; GRU; norm; attention
    encoder = stack[0]
    assert encoder.self_attn.fast is encoder.fast and encoder.norm1.fast is encoder.fast  # one switch per layer
    assert not any(m.fast for m in switchable)
    assert mnn.set_fast(stack, True) is stack
    assert all(m.fast for m in switchable)
    mnn.set_fast(stack, False)
    assert not any(m.fast for m in switchable)
    assert "fast" not in "".join(stack.state_dict())  # a switch, not a parameter: state_dict keys unchanged


# ----------------------------------------------------------------------------------------------------------
# Cross-entropy
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_equals_the_readable_formula(reduction, label_smoothing):
    torch.manual_seed(0)
    logits = (torch.randn(6, 5, dtype=torch.float64) * 3).requires_grad_()
    target = torch.tensor([0, 4, -100, 2, 2, 1])  # one ignored row
    arguments = dict(ignore_index=-100, reduction=reduction, label_smoothing=label_smoothing)
    fast_loss = fast.cross_entropy(logits, target, **arguments)
    assert_same(fast_loss, MF.cross_entropy(logits, target, **arguments), [logits])
    assert torch.autograd.gradcheck(lambda z: fast.cross_entropy(z, target, **arguments), (logits,))


def test_cross_entropy_gradient_is_softmax_minus_one_hot_over_the_count():
    # two rows kept out of three, mean: d loss / d z = (softmax(z) - onehot(y)) / 2 on kept rows, 0 on the other
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]], requires_grad=True)
    fast.cross_entropy(logits, torch.tensor([0, 1, -100])).backward()
    # row 0: p = (1/2, 1/2), y = 0 -> (-1/2, 1/2) / 2;  row 1: p = (3/4, 1/4), y = 1 -> (3/4, -3/4) / 2
    expected = torch.tensor([[-0.25, 0.25], [0.375, -0.375], [0.0, 0.0]])
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape", [(64, 2000), (7, 3)])
def test_cross_entropy_forward_gives_the_readable_bits(shape):
    torch.manual_seed(1)
    logits = torch.randn(shape) * 4
    target = torch.randint(0, shape[1], (shape[0],))
    target[0] = -100
    assert torch.equal(fast.cross_entropy(logits, target), MF.cross_entropy(logits, target))
    assert torch.equal(fast.cross_entropy(logits, target, reduction="none", label_smoothing=0.1),
                       MF.cross_entropy(logits, target, reduction="none", label_smoothing=0.1))


def test_cross_entropy_every_row_ignored_gives_zero_and_no_gradient():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = fast.cross_entropy(logits, torch.full((3,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 4))


def test_cross_entropy_bad_arguments_get_the_readable_messages():
    with pytest.raises(ValueError, match="reduction must be"):
        fast.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"expects input \(N, C\)"):
        fast.cross_entropy(torch.randn(2, 3, 4), torch.tensor([0, 1]))
