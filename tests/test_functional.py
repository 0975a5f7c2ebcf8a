"""minipt.functional against torch's built-ins, with gradcheck, and its documented edge cases.

Every function must equal its ``torch.nn.functional`` namesake over random inputs of several shapes, every
option, in float64 (1e-9) and float32 (1e-5). minipt.functional is the readable formulas only: the same code
runs with and without autograd recording, and it imports nothing from the rest of minipt (checked below). The
fast paths of minipt/fast.py are tested against these formulas in tests/test_fast.py.

Edge cases with a defined result (documented in minipt/functional.py):

* a fully masked attention row gives zero weights and a zero output (the bare softmax formula and
  ``torch.nn.MultiheadAttention`` give nan; torch 2.13's ``F.scaled_dot_product_attention`` gives zeros too);
* a cross-entropy batch whose targets are all ignored gives a loss of 0.0 and zero gradients (torch: nan for
  ``reduction="mean"``).

Empty tensors (decided here): an empty *batch* (N = 0 examples, zero queries, zero rows) is fine everywhere
and gives an empty result, or 0.0 for a reduced loss (the mean over no examples is 0.0, the same rule as an
all-ignored batch; torch gives nan there). An empty dimension that is *reduced over* (zero classes, zero keys)
is not supported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minipt import functional as MF

TOLERANCE = {torch.float64: dict(atol=1e-9, rtol=1e-9), torch.float32: dict(atol=1e-5, rtol=1e-5)}
DTYPES = [torch.float64, torch.float32]


def random(*shape, dtype=torch.float64, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype) * scale


def gradients(output, inputs):
    """Gradients of a fixed random projection of ``output`` (a scalar that uses every entry)."""
    upstream = random(*output.shape, dtype=output.dtype, seed=99)
    return torch.autograd.grad((output * upstream).sum(), inputs)


# ----------------------------------------------------------------------------------------------------------
# softmax and log_softmax
# ----------------------------------------------------------------------------------------------------------

SHAPES_AND_DIMS = [((5,), 0), ((3, 7), 0), ((3, 7), -1), ((2, 3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", SHAPES_AND_DIMS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_matches_torch(name, shape, dim, dtype):
    x = random(*shape, dtype=dtype, scale=3.0).requires_grad_()
    mine, theirs = getattr(MF, name)(x, dim=dim), getattr(F, name)(x, dim=dim)
    assert_close(mine, theirs, **TOLERANCE[dtype])
    assert_close(gradients(mine, x), gradients(theirs, x), **TOLERANCE[dtype])


def test_softmax_rows_sum_to_one():
    probabilities = MF.softmax(random(4, 6, scale=5.0), dim=-1)
    assert_close(probabilities.sum(dim=-1), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (probabilities >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family_is_finite_for_huge_logits(dtype):
    # exp(1e4) overflows in any float format; the max-shift keeps every exponent <= 0
    logits = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4 - 1.0, 5e3]], dtype=dtype)
    for name in ("softmax", "log_softmax"):
        mine = getattr(MF, name)(logits, dim=-1)
        assert torch.isfinite(mine).all(), name
        assert_close(mine, getattr(F, name)(logits, dim=-1), **TOLERANCE[dtype])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_gradcheck(name):
    x = random(3, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: getattr(MF, name)(t, dim=-1), (x,))
    assert torch.autograd.gradcheck(lambda t: getattr(MF, name)(t, dim=0), (x,))


# ----------------------------------------------------------------------------------------------------------
# cross_entropy
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_cross_entropy_matches_torch(reduction, ignore_index, label_smoothing, dtype):
    logits = random(6, 4, dtype=dtype, scale=2.0).requires_grad_()
    target = torch.tensor([0, 3, 1, 2, 2, 1])
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    if ignore_index is not None:
        options["ignore_index"] = ignore_index
        target[[1, 4]] = ignore_index  # two ignored examples (with ignore_index=2, example 3 is ignored too)
    mine = MF.cross_entropy(logits, target, **options)
    theirs = F.cross_entropy(logits, target, **options)
    assert_close(mine, theirs, **TOLERANCE[dtype])
    assert_close(gradients(mine, logits), gradients(theirs, logits), **TOLERANCE[dtype])


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_count():
    logits = random(3, 4).requires_grad_()
    target = torch.tensor([2, 0, 3])
    MF.cross_entropy(logits, target).backward()
    expected = (torch.softmax(logits.detach(), dim=-1) - F.one_hot(target, 4)) / 3  # mean over N = 3
    assert_close(logits.grad, expected, atol=1e-12, rtol=0)


def test_cross_entropy_gradcheck_with_label_smoothing_and_an_ignored_target():
    logits = random(4, 3).requires_grad_()
    target = torch.tensor([0, -100, 2, 1])
    for reduction in ("mean", "sum", "none"):
        loss = lambda z, r=reduction: MF.cross_entropy(z, target, reduction=r, label_smoothing=0.2)  # noqa: E731
        assert torch.autograd.gradcheck(loss, (logits,))


def test_cross_entropy_of_an_all_ignored_batch_is_zero_with_zero_gradient():
    # torch returns nan for the mean (0 / 0); minipt returns 0.0 on purpose, so one all-padding batch cannot
    # poison training
    logits = random(3, 5).requires_grad_()
    target = torch.full((3,), -100)
    assert torch.isnan(F.cross_entropy(logits, target))
    for reduction in ("mean", "sum"):
        loss = MF.cross_entropy(logits, target, reduction=reduction)
        assert loss.item() == 0.0
        (gradient,) = torch.autograd.grad(loss, logits)
        assert torch.equal(gradient, torch.zeros_like(logits))
    assert torch.equal(MF.cross_entropy(logits, target, reduction="none"), torch.zeros(3, dtype=torch.float64))


def test_cross_entropy_of_an_empty_batch():
    logits = torch.zeros(0, 4, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    assert MF.cross_entropy(logits, target, reduction="sum").item() == 0.0  # torch: 0.0 too
    assert MF.cross_entropy(logits, target, reduction="mean").item() == 0.0  # torch: nan
    assert MF.cross_entropy(logits, target, reduction="none").shape == (0,)
    MF.cross_entropy(logits, target).backward()
    assert logits.grad.shape == (0, 4)


def test_cross_entropy_rejects_bad_arguments():
    logits, target = random(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="reduction"):
        MF.cross_entropy(logits, target, reduction="average")
    with pytest.raises(ValueError, match=r"input \(N, C\) and target \(N,\)"):
        MF.cross_entropy(logits, target[:2])


# ----------------------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ----------------------------------------------------------------------------------------------------------


def attention_inputs(batch_shape, L, S, E, Ev, dtype, seed=0):
    query = random(*batch_shape, L, E, dtype=dtype, seed=seed).requires_grad_()
    key = random(*batch_shape, S, E, dtype=dtype, seed=seed + 1).requires_grad_()
    value = random(*batch_shape, S, Ev, dtype=dtype, seed=seed + 2).requires_grad_()
    return query, key, value


def bool_mask(shape, seed=3):
    """A random True = may-attend mask where every row keeps at least its first key (no fully masked row)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) > 0.4
    mask[..., 0] = True
    return mask


MASK_CASES = {
    "none": lambda L, S, dtype: {},
    "causal": lambda L, S, dtype: {"is_causal": True},
    "bool": lambda L, S, dtype: {"attn_mask": bool_mask((L, S))},
    "bool_per_batch": lambda L, S, dtype: {"attn_mask": bool_mask((2, 1, L, S))},
    "float": lambda L, S, dtype: {"attn_mask": random(L, S, dtype=dtype, seed=4)},
    "scale": lambda L, S, dtype: {"scale": 0.3},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L, S", [(4, 4), (3, 5), (5, 2)])
@pytest.mark.parametrize("case", list(MASK_CASES))
def test_attention_matches_torch(case, L, S, dtype):
    query, key, value = attention_inputs((2, 3), L, S, E=4, Ev=6, dtype=dtype)  # extra batch dims (B, H)
    options = MASK_CASES[case](L, S, dtype)
    ours = MF.scaled_dot_product_attention(query, key, value, **options)
    theirs = F.scaled_dot_product_attention(query, key, value, **options)
    assert ours.shape == (2, 3, L, 6)
    assert_close(ours, theirs, **TOLERANCE[dtype])
    inputs = (query, key, value)
    assert_close(gradients(ours, inputs), gradients(theirs, inputs), **TOLERANCE[dtype])


@pytest.mark.parametrize("case", ["none", "causal", "bool", "float", "scale"])
def test_attention_weights_are_the_softmax_of_scaled_scores_plus_mask(case):
    query, key, value = attention_inputs((2,), 3, 5, E=4, Ev=2, dtype=torch.float64)
    options = MASK_CASES[case](3, 5, torch.float64)
    output, weights = MF.scaled_dot_product_attention(query, key, value, **options, return_weights=True)
    # the weights computed independently: softmax(Q K^T * scale + M), M = 0 / -inf from a boolean mask
    scores = query @ key.transpose(-2, -1) * options.get("scale", 1 / 2)  # E = 4 -> 1/sqrt(E) = 1/2
    if case == "causal":
        scores = scores + torch.zeros(3, 5).masked_fill(torch.ones(3, 5).triu(1).bool(), float("-inf"))
    elif case == "bool":
        scores = scores + torch.zeros(3, 5).masked_fill(~options["attn_mask"], float("-inf"))
    elif case == "float":
        scores = scores + options["attn_mask"]
    expected = torch.softmax(scores, dim=-1)
    assert_close(weights, expected, atol=1e-12, rtol=0)
    assert_close(weights.sum(dim=-1), torch.ones(2, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert_close(output, expected @ value, atol=1e-12, rtol=0)


def test_attention_gradcheck_with_a_causal_mask():
    query, key, value = attention_inputs((2,), 4, 4, E=3, Ev=2, dtype=torch.float64)
    function = lambda q, k, v: MF.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    assert torch.autograd.gradcheck(function, (query, key, value))


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float64])
def test_fully_masked_attention_row_is_zero_with_finite_gradients(mask_dtype):
    # Query 1 may attend to no key. The softmax formula alone gives 0/0 = nan there (so does
    # torch.nn.MultiheadAttention); minipt gives zero weights and a zero output, as torch 2.13's
    # F.scaled_dot_product_attention does.
    query, key, value = attention_inputs((), 3, 4, E=2, Ev=3, dtype=torch.float64)
    allowed = torch.ones(3, 4, dtype=torch.bool)
    allowed[1] = False
    minus_infinity = torch.zeros(3, 4, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    mask = allowed if mask_dtype == torch.bool else minus_infinity
    assert torch.isnan(torch.softmax(query @ key.T + minus_infinity, dim=-1)[1]).all()
    output, weights = MF.scaled_dot_product_attention(query, key, value, attn_mask=mask, return_weights=True)
    assert torch.equal(weights[1], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(output[1], torch.zeros(3, dtype=torch.float64))
    expected_rows = F.scaled_dot_product_attention(query, key, value)[[0, 2]]  # the other rows are unaffected
    assert_close(output[[0, 2]], expected_rows, atol=1e-12, rtol=0)
    assert_close(output, F.scaled_dot_product_attention(query, key, value, attn_mask=mask), atol=1e-12, rtol=0)
    grad_query, grad_key, grad_value = gradients(output, (query, key, value))
    for gradient in (grad_query, grad_key, grad_value):
        assert torch.isfinite(gradient).all()
    assert torch.equal(grad_query[1], torch.zeros(2, dtype=torch.float64))  # the dead query receives nothing


def test_attention_with_an_empty_batch():
    query = torch.zeros(0, 3, 4, requires_grad=True)
    output, weights = MF.scaled_dot_product_attention(query, query, query, return_weights=True)
    assert output.shape == (0, 3, 4) and weights.shape == (0, 3, 3)
    MF.scaled_dot_product_attention(query, query, query).sum().backward()
    assert query.grad.shape == (0, 3, 4)


# ----------------------------------------------------------------------------------------------------------
# layer_norm
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape", [(6,), (3, 6)])
@pytest.mark.parametrize("affine", ["none", "weight", "bias", "both"])
def test_layer_norm_matches_torch(affine, normalized_shape, dtype):
    x = random(2, 4, *normalized_shape, dtype=dtype, scale=3.0).requires_grad_()
    weight = random(*normalized_shape, dtype=dtype, seed=1).requires_grad_() if affine in ("weight", "both") else None
    bias = random(*normalized_shape, dtype=dtype, seed=2).requires_grad_() if affine in ("bias", "both") else None
    mine = MF.layer_norm(x, normalized_shape, weight, bias, eps=1e-4)
    theirs = F.layer_norm(x, normalized_shape, weight, bias, eps=1e-4)
    assert_close(mine, theirs, **TOLERANCE[dtype])
    inputs = [t for t in (x, weight, bias) if t is not None]
    assert_close(gradients(mine, inputs), gradients(theirs, inputs), **TOLERANCE[dtype])
    with torch.no_grad():  # the same code runs without autograd: the same bits
        assert torch.equal(MF.layer_norm(x, normalized_shape, weight, bias, eps=1e-4), mine)


def test_layer_norm_accepts_an_int_normalized_shape_and_rejects_a_mismatch():
    x = random(3, 5)
    assert_close(MF.layer_norm(x, 5), F.layer_norm(x, (5,)), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        MF.layer_norm(x, 4)


def test_layer_norm_gradcheck_with_weight_and_bias():
    x = random(3, 2, 4).requires_grad_()
    weight, bias = random(2, 4, seed=1).requires_grad_(), random(2, 4, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: MF.layer_norm(t[0], (2, 4), t[1], t[2]), (x, weight, bias))


def test_layer_norm_of_an_empty_batch():
    assert MF.layer_norm(torch.zeros(0, 4), 4).shape == (0, 4)


# ----------------------------------------------------------------------------------------------------------
# gelu, relu
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate, dtype):
    x = random(3, 50, dtype=dtype, scale=3.0).requires_grad_()
    mine = MF.gelu(x, approximate=approximate)
    theirs = F.gelu(x, approximate=approximate)
    assert_close(mine, theirs, **TOLERANCE[dtype])
    assert_close(gradients(mine, x), gradients(theirs, x), **TOLERANCE[dtype])
    with torch.no_grad():  # the same code runs without autograd: the same bits
        assert torch.equal(MF.gelu(x, approximate=approximate), mine)


def test_gelu_rejects_an_unknown_form():
    with pytest.raises(ValueError, match="approximate"):
        MF.gelu(torch.zeros(2), approximate="sigmoid")


def test_relu_matches_torch_including_the_gradient_at_zero():
    x = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    output = MF.relu(x)
    assert torch.equal(output, F.relu(x))
    (gradient,) = torch.autograd.grad(output.sum(), x)
    assert torch.equal(gradient, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------
# dropout
# ----------------------------------------------------------------------------------------------------------


def test_dropout_in_evaluation_is_the_identity():
    x = random(4, 5)
    assert torch.equal(MF.dropout(x, p=0.5, training=False), x)


def test_dropout_keeps_the_mean_and_drops_the_stated_fraction():
    p, n = 0.3, 100_000
    x = torch.ones(n, dtype=torch.float64)
    output = MF.dropout(x, p=p, generator=torch.Generator().manual_seed(0))
    dropped = output == 0
    # survivors are scaled by exactly 1 / (1 - p)
    assert torch.equal(output[~dropped], torch.full_like(output[~dropped], 1 / (1 - p)))
    # fraction dropped ~ Binomial(n, p) / n: std sqrt(p (1 - p) / n) = sqrt(0.21 / 1e5) = 0.00145; 5 std = 0.0072
    assert abs(dropped.double().mean().item() - p) < 0.0075
    # each output is 0 or 1/(1-p): mean 1, variance p / (1 - p) = 0.4286, so the mean of n has
    # std sqrt(0.4286 / 1e5) = 0.00207; 5 std = 0.0104
    assert abs(output.mean().item() - 1.0) < 0.0105


def test_dropout_extremes_and_reproducibility():
    x = random(3, 4)
    assert torch.equal(MF.dropout(x, p=0.0), x)
    assert torch.equal(MF.dropout(x, p=1.0), torch.zeros_like(x))
    first = MF.dropout(x, p=0.5, generator=torch.Generator().manual_seed(7))
    second = MF.dropout(x, p=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="dropout probability"):
        MF.dropout(x, p=1.5)


# ----------------------------------------------------------------------------------------------------------
# The lowest layer
# ----------------------------------------------------------------------------------------------------------


def test_functional_imports_nothing_from_minipt():
    # functional.py is the readable formulas and nothing else: the fast paths build on it, never the reverse
    source = Path(MF.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else node.module.split(".")[0])
    assert imported <= {"__future__", "math", "torch"}, imported
