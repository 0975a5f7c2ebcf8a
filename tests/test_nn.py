"""minipt.nn against torch.nn, and worked by hand.

Equivalence: each layer loads its torch twin's state_dict and must give the same outputs (float32, 1e-5) and
the same gradients for the input and every parameter (float64, 1e-9). The layers run their readable path here
(``fast=False``, the default); tests/test_fast.py checks that ``fast=True`` gives the same values and gradients.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minipt import nn as mnn

FLOAT32 = dict(atol=1e-5, rtol=1e-5)
FLOAT64 = dict(atol=1e-9, rtol=1e-9)


def twins(torch_module: torch.nn.Module, minipt_module: torch.nn.Module, dtype=torch.float32):
    """Both modules in eval mode and ``dtype``, minipt's loaded from torch's state_dict (keys must match)."""
    minipt_module.load_state_dict(torch_module.state_dict())  # strict: every key matches
    return torch_module.to(dtype).eval(), minipt_module.to(dtype).eval()


def gradients(output, inputs_and_parameters):
    """Gradients of a fixed random projection of ``output`` (a scalar loss that uses every entry)."""
    generator = torch.Generator().manual_seed(1)
    upstream = torch.randn(output.shape, generator=generator, dtype=output.dtype)
    return torch.autograd.grad((output * upstream).sum(), inputs_and_parameters)


def causal_float_mask(T: int) -> torch.Tensor:
    return torch.nn.Transformer.generate_square_subsequent_mask(T)  # 0 on/below the diagonal, -inf above


# ----------------------------------------------------------------------------------------------------------
# Initialisation and state_dict keys
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_torch, make_minipt",
    [
        (lambda: torch.nn.LayerNorm(6), lambda: mnn.LayerNorm(6)),
        (lambda: torch.nn.MultiheadAttention(8, 2, batch_first=True), lambda: mnn.MultiheadAttention(8, 2)),
        (
            lambda: torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
            lambda: mnn.TransformerEncoderLayer(8, 2, 16),
        ),
        (lambda: torch.nn.GRUCell(3, 5), lambda: mnn.GRUCell(3, 5)),
        (lambda: torch.nn.GRU(3, 5, num_layers=2), lambda: mnn.GRU(3, 5, num_layers=2)),
    ],
)
def test_fresh_layers_equal_torch_given_the_same_seed(make_torch, make_minipt):
    # Same parameter names, shapes, creation order and init rules -> the same random numbers land in the
    # same places, so the state_dicts are bit-identical.
    torch.manual_seed(0)
    theirs = make_torch().state_dict()
    torch.manual_seed(0)
    mine = make_minipt().state_dict()
    assert list(mine) == list(theirs)
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name


# ----------------------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalized_shape", [6, (4, 6)])
def test_layer_norm_matches_torch(normalized_shape):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.LayerNorm(normalized_shape, eps=1e-3), mnn.LayerNorm(normalized_shape, 1e-3)
    )
    with torch.no_grad():  # non-trivial scale and shift
        theirs.weight.normal_()
        theirs.bias.normal_()
    mine.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 4, 6) * 5 + 2
    assert_close(mine(x), theirs(x), **FLOAT32)

    theirs, mine = theirs.double(), mine.double()
    x = x.double().requires_grad_()
    expected = gradients(theirs(x), [x, theirs.weight, theirs.bias])
    actual = gradients(mine(x), [x, mine.weight, mine.bias])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **FLOAT64)


# ----------------------------------------------------------------------------------------------------------
# MultiheadAttention
# ----------------------------------------------------------------------------------------------------------

B, L, S, E, HEADS = 3, 5, 4, 8, 2


def padding_mask(dtype=torch.bool) -> torch.Tensor:
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[0, 3:] = True  # sequence 0 has 3 real keys, sequence 2 has 2
    mask[2, 2:] = True
    return mask if dtype == torch.bool else torch.zeros(B, S).masked_fill(mask, float("-inf"))


def attention_cases():
    """(name, kwargs builder, self-attention?) covering every mask form torch's module accepts."""
    bool_attn = torch.zeros(L, L, dtype=torch.bool)
    bool_attn[:, 0] = True  # True = NOT allowed (torch's module convention): nobody may look at key 0
    per_head = torch.randn(B * HEADS, L, L)
    return [
        ("no mask", lambda: {}, False),
        ("key padding (bool)", lambda: {"key_padding_mask": padding_mask()}, False),
        ("key padding (float)", lambda: {"key_padding_mask": padding_mask(torch.float32)}, False),
        ("causal float + is_causal", lambda: {"attn_mask": causal_float_mask(L), "is_causal": True}, True),
        (
            "causal bool + padding",
            lambda: {"attn_mask": causal_float_mask(L).isinf(), "key_padding_mask": torch.arange(L) >= 4},
            True,
        ),
        ("bool attn_mask", lambda: {"attn_mask": bool_attn}, True),
        ("per-head float attn_mask", lambda: {"attn_mask": per_head}, True),
    ]


@pytest.mark.parametrize("name, make_kwargs, self_attention", attention_cases())
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_torch(name, make_kwargs, self_attention, batch_first):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.MultiheadAttention(E, HEADS, batch_first=batch_first),
        mnn.MultiheadAttention(E, HEADS, batch_first=batch_first),
    )
    kwargs = make_kwargs()
    if "key_padding_mask" in kwargs and kwargs["key_padding_mask"].dim() == 1:
        kwargs["key_padding_mask"] = kwargs["key_padding_mask"].expand(B, L)  # last query position is padding
    if self_attention:
        query = key = value = torch.randn(B, L, E)
    else:
        query, key, value = torch.randn(B, L, E), torch.randn(B, S, E), torch.randn(B, S, E)
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if self_attention:
            key = value = query
    for average in (True, False):
        expected, expected_weights = theirs(query, key, value, average_attn_weights=average, **kwargs)
        actual, actual_weights = mine(query, key, value, average_attn_weights=average, **kwargs)
        assert_close(actual, expected, **FLOAT32)
        assert_close(actual_weights, expected_weights, **FLOAT32)
    # need_weights=False: the same output, no weights
    actual, no_weights = mine(query, key, value, need_weights=False, **kwargs)
    assert no_weights is None
    assert_close(actual, expected, **FLOAT32)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_gradients_match_torch(need_weights):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.MultiheadAttention(E, HEADS, batch_first=True),
        mnn.MultiheadAttention(E, HEADS),
        torch.float64,
    )
    x = torch.randn(B, L, E, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(B, S, E, dtype=torch.float64, requires_grad=True)
    kwargs = {"key_padding_mask": padding_mask(), "need_weights": need_weights}
    expected = gradients(theirs(x, memory, memory, **kwargs)[0], [x, memory, *theirs.parameters()])
    actual = gradients(mine(x, memory, memory, **kwargs)[0], [x, memory, *mine.parameters()])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **FLOAT64)


def test_one_head_attention_with_identity_projections_by_hand():
    # E = 2, one head, all projections the identity and all biases zero, so Q = K = V = x.
    attention = mnn.MultiheadAttention(2, 1)
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat([torch.eye(2)] * 3))  # W_Q = W_K = W_V = I
        attention.out_proj.weight.copy_(torch.eye(2))
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, T=2, E=2): two orthogonal unit tokens
    output, weights = attention(x, x, x)
    # scores = x x^T / sqrt(2) = [[1/sqrt2, 0], [0, 1/sqrt2]] = [[0.70711, 0], [0, 0.70711]]
    # row 0: softmax([0.70711, 0]) = [e^0.70711, 1] / (e^0.70711 + 1) = [2.02811, 1] / 3.02811
    #      = [0.66976, 0.33024]; output row 0 = 0.66976 * [1, 0] + 0.33024 * [0, 1]. Row 1 is the mirror.
    big, small = 2.0281150 / 3.0281150, 1.0 / 3.0281150
    assert_close(weights, torch.tensor([[[big, small], [small, big]]]), atol=1e-6, rtol=0)
    assert_close(output, torch.tensor([[[big, small], [small, big]]]), atol=1e-6, rtol=0)
    # causal (True = NOT allowed above the diagonal): token 0 can only see itself -> output [1, 0]
    blocked = torch.tensor([[False, True], [False, False]])
    output, _ = attention(x, x, x, attn_mask=blocked)
    assert_close(output, torch.tensor([[[1.0, 0.0], [small, big]]]), atol=1e-6, rtol=0)


def test_multihead_attention_dropout_only_in_training():
    torch.manual_seed(0)
    attention = mnn.MultiheadAttention(E, HEADS, dropout=0.5)
    x = torch.randn(B, L, E)
    attention.eval()
    first, _ = attention(x, x, x)
    second, _ = attention(x, x, x)
    assert torch.equal(first, second)  # no randomness in eval mode
    attention.train()
    _, weights = attention(x, x, x, average_attn_weights=False)
    # inverted dropout with p = 0.5: each weight is 0 or doubled, so some rows no longer sum to 1
    assert (weights == 0).any()
    assert not torch.allclose(weights.sum(-1), torch.ones(B, HEADS, L))


def test_multihead_attention_rejects_bad_input():
    attention = mnn.MultiheadAttention(E, HEADS)
    x = torch.randn(B, L, E)
    with pytest.raises(mnn.LayerInputError, match="is_causal"):
        attention(x, x, x, is_causal=True)
    with pytest.raises(mnn.LayerInputError, match="key_padding_mask"):
        attention(x, x, x, key_padding_mask=torch.zeros(B, L + 1, dtype=torch.bool))
    with pytest.raises(mnn.LayerInputError, match="attn_mask"):
        attention(x, x, x, attn_mask=torch.zeros(L, L + 1))
    with pytest.raises(mnn.LayerInputError, match="divisible"):
        mnn.MultiheadAttention(7, 2)


# ----------------------------------------------------------------------------------------------------------
# TransformerEncoderLayer
# ----------------------------------------------------------------------------------------------------------


def encoder_twins(norm_first: bool, activation: str, dtype=torch.float32):
    torch.manual_seed(0)
    return twins(
        torch.nn.TransformerEncoderLayer(
            E, HEADS, 16, batch_first=True, norm_first=norm_first, activation=activation
        ),
        mnn.TransformerEncoderLayer(E, HEADS, 16, norm_first=norm_first, activation=activation),
        dtype,
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    theirs, mine = encoder_twins(norm_first, activation)
    x = torch.randn(B, L, E)
    causal = causal_float_mask(L)
    padding = torch.zeros(B, L)
    padding[1, 4:] = float("-inf")  # float, like the causal mask (torch wants both of one kind)
    for kwargs in ({}, {"src_key_padding_mask": padding}, {"src_mask": causal, "is_causal": True}):
        assert_close(mine(x, **kwargs), theirs(x, **kwargs), **FLOAT32)

    # need_weights=True also returns the per-head weights torch's self_attn computes inside the layer
    output, weights = mine(x, src_mask=causal, is_causal=True, need_weights=True)
    attention_input = theirs.norm1(x) if norm_first else x
    _, expected_weights = theirs.self_attn(
        attention_input, attention_input, attention_input, attn_mask=causal, average_attn_weights=False
    )
    assert weights.shape == (B, HEADS, L, L)
    assert_close(weights, expected_weights, **FLOAT32)
    assert_close(output, theirs(x, src_mask=causal, is_causal=True), **FLOAT32)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_gradients_match_torch(norm_first):
    theirs, mine = encoder_twins(norm_first, "gelu", torch.float64)
    x = torch.randn(B, L, E, dtype=torch.float64, requires_grad=True)
    causal = causal_float_mask(L).double()
    expected = gradients(theirs(x, src_mask=causal, is_causal=True), [x, *theirs.parameters()])
    actual = gradients(mine(x, src_mask=causal, is_causal=True), [x, *mine.parameters()])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **FLOAT64)


def test_encoder_layer_rejects_unknown_activation():
    with pytest.raises(mnn.LayerInputError, match="activation"):
        mnn.TransformerEncoderLayer(E, HEADS, activation="tanh")


# ----------------------------------------------------------------------------------------------------------
# GRUCell and GRU
# ----------------------------------------------------------------------------------------------------------


def test_gru_cell_by_hand():
    # Hidden size 1, input size 1. Weights: W_in = 1, W_hn = 1, everything else 0; biases b_iz = ln 3,
    # b_hn = 1, the rest 0. Input x = 1, state h = 0.5.
    cell = mnn.GRUCell(1, 1)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.0], [0.0], [1.0]]))  # rows r, z, n
        cell.weight_hh.copy_(torch.tensor([[0.0], [0.0], [1.0]]))
        cell.bias_ih.copy_(torch.tensor([0.0, math.log(3.0), 0.0]))
        cell.bias_hh.copy_(torch.tensor([0.0, 0.0, 1.0]))
    h = cell(torch.tensor([[1.0]]), torch.tensor([[0.5]]))
    # r = sigmoid(0) = 0.5;  z = sigmoid(ln 3) = 3 / (3 + 1) = 0.75
    # n = tanh(W_in x + r * (W_hn h + b_hn)) = tanh(1 + 0.5 * (0.5 + 1)) = tanh(1.75)
    #   = (e^3.5 - 1) / (e^3.5 + 1) = 32.115452 / 34.115452 = 0.9413755
    #   (the paper's variant, W_hn (r h) + b_hn, would give tanh(2.25) = 0.978 instead)
    # h' = (1 - z) n + z h = 0.25 * 0.9413755 + 0.75 * 0.5 = 0.2353439 + 0.375 = 0.6103439
    assert_close(h, torch.tensor([[0.6103439]]), atol=1e-6, rtol=0)


def test_gru_cell_matches_torch():
    torch.manual_seed(0)
    theirs, mine = twins(torch.nn.GRUCell(3, 4), mnn.GRUCell(3, 4))
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert_close(mine(x, h), theirs(x, h), **FLOAT32)
    assert_close(mine(x), theirs(x), **FLOAT32)  # hx defaults to zeros

    theirs, mine = theirs.double(), mine.double()
    x = x.double().requires_grad_()
    h = h.double().requires_grad_()
    expected = gradients(theirs(x, h), [x, h, *theirs.parameters()])
    actual = gradients(mine(x, h), [x, h, *mine.parameters()])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **FLOAT64)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
def test_gru_matches_torch(num_layers, batch_first):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.GRU(3, 4, num_layers=num_layers, batch_first=batch_first),
        mnn.GRU(3, 4, num_layers=num_layers, batch_first=batch_first),
    )
    x = torch.randn(2, 5, 3) if batch_first else torch.randn(5, 2, 3)
    h0 = torch.randn(num_layers, 2, 4)
    for hx in (None, h0):
        expected_output, expected_h_n = theirs(x, hx)
        output, h_n = mine(x, hx)
        assert_close(output, expected_output, **FLOAT32)
        assert_close(h_n, expected_h_n, **FLOAT32)


@pytest.mark.parametrize("bias", [True, False])
def test_gru_gradients_match_torch(bias):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.GRU(3, 4, num_layers=2, bias=bias, batch_first=True),
        mnn.GRU(3, 4, num_layers=2, bias=bias),
        torch.float64,
    )
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)

    def loss_terms(module):
        output, h_n = module(x, h0)
        return torch.cat([output.flatten(), h_n.flatten()])

    expected = gradients(loss_terms(theirs), [x, h0, *theirs.parameters()])
    actual = gradients(loss_terms(mine), [x, h0, *mine.parameters()])
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, **FLOAT64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gru_lengths_match_torch_on_each_unpadded_sequence(dtype):
    torch.manual_seed(0)
    theirs, mine = twins(
        torch.nn.GRU(3, 4, num_layers=2, batch_first=True), mnn.GRU(3, 4, num_layers=2), dtype
    )
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=dtype)
    output, h_n = mine(x, h0, lengths=lengths)
    tolerance = FLOAT32 if dtype == torch.float32 else FLOAT64
    for i, length in enumerate(lengths.tolist()):
        alone_output, alone_h_n = theirs(x[i : i + 1, :length], h0[:, i : i + 1])
        assert_close(output[i, :length], alone_output[0], **tolerance)
        assert_close(h_n[:, i], alone_h_n[:, 0], **tolerance)
        assert torch.equal(output[i, length:], torch.zeros_like(output[i, length:]))  # padding -> zeros
    if dtype == torch.float64:
        # gradients equal torch's packed-sequence GRU (padding gets none)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_output, expected_h_n = theirs(packed, h0)
        expected_output, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_output, batch_first=True)
        expected = gradients(torch.cat([expected_output.flatten(), expected_h_n.flatten()]), [x])
        actual = gradients(torch.cat([output.flatten(), h_n.flatten()]), [x])
        assert_close(actual[0], expected[0], **FLOAT64)
        assert torch.equal(actual[0][1, 2:], torch.zeros(3, 3, dtype=dtype))


def test_gru_returns_the_gates_of_every_layer():
    torch.manual_seed(0)
    gru = mnn.GRU(3, 4, num_layers=2).eval()
    x = torch.randn(2, 5, 3)
    _, _, gates = gru(x, return_gates=True)
    assert len(gates.reset) == len(gates.update) == 2
    assert all(g.shape == (2, 5, 4) for g in gates.reset + gates.update)
    assert all(((g > 0) & (g < 1)).all() for g in gates.reset + gates.update)  # sigmoids
    # the first step of layer 0 from h = 0 with the cell's formula, and its update gate at work:
    # h_1 = (1 - z) n + z * 0 = (1 - z) n
    weight_ih, weight_hh, bias_ih, bias_hh = gru.layer_parameters(0)
    h_1, reset, update = mnn.gru_cell_step(F.linear(x[:, 0], weight_ih, bias_ih), torch.zeros(2, 4), weight_hh, bias_hh)
    assert_close(gates.reset[0][:, 0], reset, **FLOAT32)
    assert_close(gates.update[0][:, 0], update, **FLOAT32)
    assert_close(gru(x[:, :1])[1][0], h_1, **FLOAT32)  # h_n of layer 0 after one step


def test_gru_dropout_acts_between_layers_only_in_training():
    torch.manual_seed(0)
    one_layer = mnn.GRU(3, 4, num_layers=1, dropout=0.5)
    x = torch.randn(2, 5, 3)
    # a single layer has no "between": training mode changes nothing
    assert torch.equal(one_layer.train()(x)[0], one_layer.eval()(x)[0])
    two_layers = mnn.GRU(3, 4, num_layers=2, dropout=0.5)
    evaluation, _ = two_layers.eval()(x)
    assert torch.equal(evaluation, two_layers(x)[0])  # eval is deterministic
    training, _ = two_layers.train()(x)
    assert (training - evaluation).abs().max() > 1e-3  # layer 1 saw a dropped-out input


def test_gru_rejects_bad_input():
    gru = mnn.GRU(3, 4, num_layers=2)
    with pytest.raises(mnn.LayerInputError, match="input_size=3"):
        gru(torch.randn(2, 5, 4))
    with pytest.raises(mnn.LayerInputError, match="hx"):
        gru(torch.randn(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(mnn.LayerInputError, match="lengths"):
        gru(torch.randn(2, 5, 3), lengths=torch.tensor([6, 2]))
