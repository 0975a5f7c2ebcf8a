"""Worked examples, small enough to check with a pocket calculator.

Each test states its inputs, works every intermediate value out in the comments (scores, exponentials,
normalisers, moments, bias corrections) and asserts the final numbers. The expected values come from that
hand derivation (rounded to the digits written), never from running minipt, so a test fails if the code and
the formula disagree. Tolerances match the digits written (6 decimals: 1e-6).

The last four tests correct mistakes of a widely copied tutorial on pretraining and finetuning.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from minipt import fast
from minipt import functional as MF
from minipt.optim import SGD, AdamW, slanted_triangular, warmup_cosine

SIX_DECIMALS = dict(atol=1e-6, rtol=0)


def tensor(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_softmax_of_a_three_vector():
    # x = [1, 2, 3]; shift by the max 3: [-2, -1, 0]
    # exponentials: e^-2 = 0.135335, e^-1 = 0.367879, e^0 = 1;  sum = 1.503215
    # probabilities: 0.135335 / 1.503215 = 0.090031, 0.367879 / 1.503215 = 0.244728, 1 / 1.503215 = 0.665241
    probabilities = MF.softmax(tensor(1.0, 2.0, 3.0), dim=0)
    assert_close(probabilities, tensor(0.090031, 0.244728, 0.665241), **SIX_DECIMALS)


def test_log_softmax_of_huge_equal_logits_is_minus_log_two():
    # x = [1000, 1000]: e^1000 overflows, so compute LSE(x) = m + log sum e^(x - m) with m = 1000:
    # LSE = 1000 + log(e^0 + e^0) = 1000 + ln 2;  log_softmax = x - LSE = -ln 2 = -0.693147 for both
    log_probabilities = MF.log_softmax(tensor(1000.0, 1000.0), dim=0)
    assert_close(log_probabilities, tensor(-0.693147, -0.693147), **SIX_DECIMALS)
    # and softmax = e^(-ln 2) = 1/2 each, not inf / inf = nan
    assert_close(MF.softmax(tensor(1000.0, 1000.0), dim=0), tensor(0.5, 0.5), **SIX_DECIMALS)


def test_cross_entropy_of_one_example_and_its_gradient():
    # logits z = [2, 1, 0.1], true class 0. Shift by the max 2: [0, -1, -1.9]
    # exponentials: 1, e^-1 = 0.367879, e^-1.9 = 0.149569;  sum = 1.517448
    # p = [1 / 1.517448, 0.367879 / 1.517448, 0.149569 / 1.517448] = [0.659001, 0.242433, 0.098566]
    # loss = -ln p_0 = -ln 0.659001 = 0.417030
    # gradient = p - onehot(0) = [0.659001 - 1, 0.242433, 0.098566] = [-0.340999, 0.242433, 0.098566]
    logits = tensor(2.0, 1.0, 0.1).reshape(1, 3).requires_grad_()
    loss = MF.cross_entropy(logits, torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(0.417030, abs=1e-6)
    assert_close(logits.grad, tensor(-0.340999, 0.242433, 0.098566).reshape(1, 3), **SIX_DECIMALS)


def test_cross_entropy_with_ignore_index_and_label_smoothing():
    # example A: logits [0, 0], target 0:    p = [1/2, 1/2];  -ln p_0 = ln 2 = 0.693147, -ln p_1 = 0.693147
    # example B: logits [ln 3, 0], target 1: p = [3/4, 1/4];  -ln p_0 = ln(4/3) = 0.287682, -ln p_1 = ln 4 = 1.386294
    logits = tensor(0.0, 0.0, math.log(3.0), 0.0).reshape(2, 2)
    target = torch.tensor([0, 1])
    # plain mean: (0.693147 + 1.386294) / 2 = 1.039721
    assert MF.cross_entropy(logits, target).item() == pytest.approx(1.039721, abs=1e-6)
    # B ignored: the mean divides by the 1 example left, not by 2: 0.693147
    ignored_b = torch.tensor([0, -100])
    assert MF.cross_entropy(logits, ignored_b).item() == pytest.approx(0.693147, abs=1e-6)
    # label smoothing 0.2 over C = 2 classes: l = 0.8 (-ln p_y) + (0.2 / 2) (-ln p_0 - ln p_1)
    #   A: 0.8 * 0.693147 + 0.1 * (0.693147 + 0.693147) = 0.554518 + 0.138629 = 0.693147
    #   B: 0.8 * 1.386294 + 0.1 * (0.287682 + 1.386294) = 1.109035 + 0.167398 = 1.276433
    #   mean = (0.693147 + 1.276433) / 2 = 0.984790
    assert MF.cross_entropy(logits, target, label_smoothing=0.2).item() == pytest.approx(0.984790, abs=1e-6)
    # both: A ignored, B smoothed: 1.276433 / 1
    ignored_a = torch.tensor([-100, 1])
    assert MF.cross_entropy(logits, ignored_a, label_smoothing=0.2).item() == pytest.approx(1.276433, abs=1e-6)


def test_two_query_two_key_attention():
    # Q = [[1, 0], [0, 1]], K = [[1, 0], [1, 1]], V = [[1, 2], [3, 4]], E = 2 so scale = 1/sqrt(2) = 0.707107
    # Q K^T = [[1*1 + 0*0, 1*1 + 0*1], [0*1 + 1*0, 0*1 + 1*1]] = [[1, 1], [0, 1]]
    # scores = [[0.707107, 0.707107], [0, 0.707107]]
    # row 1: equal scores -> weights [0.5, 0.5]; output 0.5 [1, 2] + 0.5 [3, 4] = [2, 3]
    # row 2: shift by 0.707107: [-0.707107, 0]; e^-0.707107 = 0.493069, e^0 = 1; sum = 1.493069
    #        weights [0.493069 / 1.493069, 1 / 1.493069] = [0.330238, 0.669762]
    #        output 0.330238 [1, 2] + 0.669762 [3, 4] = [1 + 2 * 0.669762, 2 + 2 * 0.669762] = [2.339524, 3.339524]
    query = tensor(1.0, 0.0, 0.0, 1.0).reshape(2, 2)
    key = tensor(1.0, 0.0, 1.0, 1.0).reshape(2, 2)
    value = tensor(1.0, 2.0, 3.0, 4.0).reshape(2, 2)
    output, weights = MF.scaled_dot_product_attention(query, key, value, return_weights=True)
    assert_close(weights, tensor(0.5, 0.5, 0.330238, 0.669762).reshape(2, 2), **SIX_DECIMALS)
    assert_close(output, tensor(2.0, 3.0, 2.339524, 3.339524).reshape(2, 2), **SIX_DECIMALS)


def test_causal_attention_averages_the_past():
    # Q = 0, so every score is 0 and each query spreads its weight evenly over the keys it may see.
    # causal: query i sees keys 0..i -> weights [1, 0, 0], [1/2, 1/2, 0], [1/3, 1/3, 1/3]
    # V = [[3], [6], [9]] -> outputs 3, (3 + 6) / 2 = 4.5, (3 + 6 + 9) / 3 = 6
    query = torch.zeros(3, 2, dtype=torch.float64)
    key = tensor(1.0, 2.0, 3.0, 4.0, 5.0, 6.0).reshape(3, 2)
    value = tensor(3.0, 6.0, 9.0).reshape(3, 1)
    output, weights = MF.scaled_dot_product_attention(query, key, value, is_causal=True, return_weights=True)
    third = 1 / 3
    assert_close(weights, tensor(1, 0, 0, 0.5, 0.5, 0, third, third, third).reshape(3, 3), **SIX_DECIMALS)
    assert_close(output, tensor(3.0, 4.5, 6.0).reshape(3, 1), **SIX_DECIMALS)
    assert_close(MF.scaled_dot_product_attention(query, key, value, is_causal=True), output, **SIX_DECIMALS)


def test_layer_norm_of_one_two_three_four():
    # x = [1, 2, 3, 4]: mean 2.5; x - mean = [-1.5, -0.5, 0.5, 1.5]
    # biased variance = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; sqrt(1.25 + 1e-5) = 1.118038
    # y = [-1.5, -0.5, 0.5, 1.5] / 1.118038 = [-1.341635, -0.447212, 0.447212, 1.341635]
    x = tensor(1.0, 2.0, 3.0, 4.0)
    assert_close(MF.layer_norm(x, 4), tensor(-1.341635, -0.447212, 0.447212, 1.341635), **SIX_DECIMALS)
    # with gamma = [1, -1, 2, 0.5], beta = [0, 1, 0, -1]:
    # [-1.341635, 0.447212 + 1, 0.894424, 0.670818 - 1] = [-1.341635, 1.447212, 0.894424, -0.329182]
    weight, bias = tensor(1.0, -1.0, 2.0, 0.5), tensor(0.0, 1.0, 0.0, -1.0)
    assert_close(
        MF.layer_norm(x, 4, weight, bias), tensor(-1.341635, 1.447212, 0.894424, -0.329182), **SIX_DECIMALS
    )


def test_two_adamw_steps_on_one_parameter():
    # theta = 1, lr = 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.1. Gradients given: g1 = 2, g2 = -1.
    theta = torch.nn.Parameter(tensor(1.0))
    optimizer = AdamW([theta], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    # step 1:
    #   decay:  theta = 1 * (1 - 0.1 * 0.1) = 0.99
    #   m = 0.9 * 0 + 0.1 * 2 = 0.2;  v = 0.999 * 0 + 0.001 * 4 = 0.004
    #   m_hat = 0.2 / (1 - 0.9) = 2;  v_hat = 0.004 / (1 - 0.999) = 4;  sqrt(v_hat) = 2
    #   update = 0.1 * 2 / (2 + 1e-8) = 0.0999999995 (the eps shows only in the 10th decimal)
    #   theta = 0.99 - 0.0999999995 = 0.8900000005
    theta.grad = tensor(2.0)
    optimizer.step()
    state = optimizer.state[theta]
    assert state["exp_avg"].item() == pytest.approx(0.2, abs=1e-12)
    assert state["exp_avg_sq"].item() == pytest.approx(0.004, abs=1e-12)
    assert theta.item() == pytest.approx(0.8900000005, abs=1e-10)
    # step 2:
    #   decay:  theta = 0.8900000005 * 0.99 = 0.881100
    #   m = 0.9 * 0.2 + 0.1 * (-1) = 0.08;  v = 0.999 * 0.004 + 0.001 * 1 = 0.004996
    #   bias corrections: 1 - 0.9^2 = 0.19;  1 - 0.999^2 = 0.001999
    #   m_hat = 0.08 / 0.19 = 0.421053;  v_hat = 0.004996 / 0.001999 = 2.499250;  sqrt(v_hat) = 1.580902
    #   update = 0.1 * 0.421053 / 1.580902 = 0.026634
    #   theta = 0.881100 - 0.026634 = 0.854466  (still decreasing although g2 < 0: m remembers g1 = 2)
    theta.grad = tensor(-1.0)
    optimizer.step()
    assert state["step"].item() == 2.0
    assert state["exp_avg"].item() == pytest.approx(0.08, abs=1e-12)
    assert state["exp_avg_sq"].item() == pytest.approx(0.004996, abs=1e-12)
    assert theta.item() == pytest.approx(0.854466, abs=1e-6)


def test_two_sgd_momentum_steps():
    # theta = 1, lr = 0.1, momentum 0.9, gradient 1 at both steps
    # step 1: b = g = 1;              theta = 1 - 0.1 * 1 = 0.9
    # step 2: b = 0.9 * 1 + 1 = 1.9;  theta = 0.9 - 0.1 * 1.9 = 0.71
    theta = torch.nn.Parameter(tensor(1.0))
    optimizer = SGD([theta], lr=0.1, momentum=0.9)
    theta.grad = tensor(1.0)
    optimizer.step()
    assert theta.item() == pytest.approx(0.9, abs=1e-12)
    optimizer.step()
    assert theta.item() == pytest.approx(0.71, abs=1e-12)


def test_warmup_cosine_at_chosen_steps():
    # warmup_steps W = 2, total_steps T = 6, min_ratio 0:
    # step 0: (0 + 1) / 2 = 0.5;  step 1: 2 / 2 = 1
    # step s >= 2: p = (s - 2) / 4, f = (1 + cos(pi p)) / 2
    #   s = 2: p = 0, f = 1;  s = 3: p = 0.25, f = (1 + 0.707107) / 2 = 0.853553
    #   s = 4: p = 0.5, f = 0.5;  s = 6: p = 1, f = 0;  s = 9: held at 0
    values = [warmup_cosine(s, warmup_steps=2, total_steps=6, min_ratio=0.0) for s in (0, 1, 2, 3, 4, 6, 9)]
    assert values == pytest.approx([0.5, 1.0, 1.0, 0.853553, 0.5, 0.0, 0.0], abs=1e-6)


def test_slanted_triangular_at_chosen_steps():
    # T = 20, cut_frac 0.25, ratio 4: cut = floor(20 * 0.25) = 5; f = (1 + 3p) / 4
    # s = 0: p = 0, f = 0.25;  s = 2: p = 2/5 = 0.4, f = 2.2 / 4 = 0.55;  s = 5: p = 1, f = 1
    # s = 10: p = 1 - (10 - 5) / (5 * (1/0.25 - 1)) = 1 - 5/15 = 2/3, f = 3 / 4 = 0.75
    # s = 20: p = 1 - 15/15 = 0, f = 0.25
    values = [slanted_triangular(s, total_steps=20, cut_frac=0.25, ratio=4) for s in (0, 2, 5, 10, 20)]
    assert values == pytest.approx([0.25, 0.55, 1.0, 0.75, 0.25], abs=1e-12)


@pytest.mark.parametrize("gelu", [MF.gelu, fast.gelu], ids=["readable", "fast"])
def test_gelu_at_a_few_points(gelu):
    # exact: GELU(x) = x (1 + erf(x / sqrt 2)) / 2;  erf(1 / sqrt 2) = erf(0.707107) = 0.682689
    #   GELU(0) = 0;  GELU(1) = (1 + 0.682689) / 2 = 0.841345;  GELU(-1) = -(1 - 0.682689) / 2 = -0.158655
    # tanh form at 1: sqrt(2/pi) (1 + 0.044715) = 0.797885 * 1.044715 = 0.833562; tanh = 0.682384
    #   GELU(1) ~ (1 + 0.682384) / 2 = 0.841192
    x = tensor(0.0, 1.0, -1.0).requires_grad_()
    assert_close(gelu(x), tensor(0.0, 0.841345, -0.158655), **SIX_DECIMALS)
    assert gelu(x, approximate="tanh")[1].item() == pytest.approx(0.841192, abs=1e-6)
    # the slope at 1: Phi(1) + 1 * phi(1) = 0.841345 + e^(-1/2) / sqrt(2 pi) = 0.841345 + 0.241971 = 1.083315
    (slope,) = torch.autograd.grad(gelu(x)[1], x)
    assert_close(slope, tensor(0.0, 1.083315, 0.0), **SIX_DECIMALS)


def test_dropout_scales_the_survivors():
    # p = 0.25: each entry is zeroed or multiplied by 1 / (1 - 0.25) = 4/3, so the expectation stays x:
    # E[y] = 0.75 * (4/3) x + 0.25 * 0 = x
    x = torch.full((200,), 3.0, dtype=torch.float64)
    y = MF.dropout(x, p=0.25, generator=torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) == {0.0, 4.0}  # 3 * 4/3 = 4
    # evaluation: identity
    assert torch.equal(MF.dropout(x, p=0.25, training=False), x)


# ----------------------------------------------------------------------------------------------------------
# Corrections of a widely copied tutorial
# ----------------------------------------------------------------------------------------------------------


def test_cross_entropy_is_never_negative():
    # Tutorial mistake: it printed -0.3285 for this cross-entropy; a sum of -log p with p <= 1 is >= 0.
    # labels y = [1, 0, 1], predicted P(y = 1) = [0.8, 0.2, 0.9]
    # -sum y log p = -ln 0.8 - ln 0.9 = 0.223144 + 0.105361 = 0.328504 (only the examples with y = 1 count)
    # full binary cross-entropy adds -(1 - y) log(1 - p) for y = 0: -ln(1 - 0.2) = 0.223144 -> 0.551648
    # With minipt: two-class logits [log(1 - p), log p] per example (their softmax is [1 - p, p] back).
    p = tensor(0.8, 0.2, 0.9)
    logits = torch.stack([torch.log(1 - p), torch.log(p)], dim=1)  # (3, 2)
    labels = torch.tensor([1, 0, 1])
    full = MF.cross_entropy(logits, labels, reduction="sum")
    assert full.item() == pytest.approx(0.551648, abs=1e-6)
    positives_only = MF.cross_entropy(logits, torch.tensor([1, -100, 1]), reduction="sum")  # y = 0 term dropped
    assert positives_only.item() == pytest.approx(0.328504, abs=1e-6)
    assert full.item() > 0 and positives_only.item() > 0


def test_gradient_descent_moves_against_the_gradient():
    # Tutorial mistake: it printed [0.9, 1.8, 2.7]; with a negative gradient the weights must increase.
    # theta - alpha * grad = [1, 2, 3] - 0.1 * [-0.1, -0.2, -0.3] = [1 + 0.01, 2 + 0.02, 3 + 0.03]
    theta = torch.nn.Parameter(tensor(1.0, 2.0, 3.0))
    theta.grad = tensor(-0.1, -0.2, -0.3)
    SGD([theta], lr=0.1).step()
    assert_close(theta.detach(), tensor(1.01, 2.02, 3.03), atol=1e-12, rtol=0)


def test_attention_over_a_single_key_returns_its_value():
    # Tutorial mistake: it wrote q.k = 0.34 and printed [0.28, 0.24, 0.27]; the output must be the value itself.
    # q.k = 0.1 * 0.4 + 0.2 * 0.5 + 0.3 * 0.6 = 0.04 + 0.10 + 0.18 = 0.32
    # softmax over one score: e^s / e^s = 1 exactly, so output = 1 * v = [0.7, 0.8, 0.9]
    query, key, value = tensor(0.1, 0.2, 0.3), tensor(0.4, 0.5, 0.6), tensor(0.7, 0.8, 0.9)
    assert (query @ key).item() == pytest.approx(0.32, abs=1e-12)
    output, weights = MF.scaled_dot_product_attention(
        query.reshape(1, 3), key.reshape(1, 3), value.reshape(1, 3), scale=1.0, return_weights=True
    )
    assert weights.item() == 1.0
    assert_close(output, value.reshape(1, 3), atol=1e-12, rtol=0)


@pytest.mark.parametrize("gradient, expected_step", [(1e-3, 0.099999), (1e3, 0.1)])
def test_adam_first_step_has_the_size_of_the_learning_rate(gradient, expected_step):
    # Tutorial mistake: its update omitted the division by sqrt(v_hat), so the step scaled with the gradient.
    # step 1, no weight decay: m = 0.1 g, v = 0.001 g^2 -> m_hat = g, v_hat = g^2, sqrt(v_hat) = |g|
    # update = lr * g / (|g| + eps), lr = 0.1:
    #   g = 1e-3: 0.1 * 1e-3 / (1e-3 + 1e-8) = 0.1 / 1.00001 = 0.099999
    #   g = 1e3:  0.1 * 1e3 / (1e3 + 1e-8)   = 0.1 (to 12 decimals)
    # (without the sqrt(v_hat) the steps would be 0.1 * 1e-3 = 1e-4 and 0.1 * 1e3 = 100)
    theta = torch.nn.Parameter(tensor(0.0))
    theta.grad = tensor(gradient)
    AdamW([theta], lr=0.1, weight_decay=0.0).step()
    assert -theta.item() == pytest.approx(expected_step, abs=1e-6)
