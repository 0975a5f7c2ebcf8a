"""Worked examples, small enough to check with a pocket calculator.

Each test states its inputs, works every intermediate value out in the comments (scores, exponentials,
normalisers, moments, bias corrections) and asserts the final numbers. The expected values come from that
hand derivation (rounded to the digits written), never from running minipt, so a test fails if the code and
the formula disagree. Tolerances match the digits written (6 decimals: 1e-6) unless the comment states another
one: a random quantity (dropout, BERT's masking) gets about five standard deviations, worked out in its comment.

The four tests under "Corrections of a widely copied tutorial" correct mistakes of a tutorial on pretraining and
finetuning. Where a formula has a readable path (``minipt.functional``) and a fast one (``minipt.fast``), the
example runs both.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch.testing import assert_close

from minipt import fast
from minipt import functional as MF
from minipt.data import lm_eval_batches, mask_tokens, next_sentence_pairs
from minipt.data.datasets import IGNORE_INDEX
from minipt.data.tokenizers import CharTokenizer
from minipt.metrics import accuracy, confusion_matrix, macro_f1, perplexity, precision_recall_f1
from minipt.models import MaskedLMWithNextSentenceHead, TransformerLM
from minipt.models.heads import pool
from minipt.models.language_model import language_model_loss, next_token_probabilities
from minipt.nn import GRUCell, LayerNorm, gru_cell_step
from minipt.optim import (
    SGD,
    AdamW,
    clip_grad_norm_,
    constant_with_warmup,
    param_groups,
    slanted_triangular,
    warmup_cosine,
)
from minipt.training.strategies import discriminative_param_groups, gradual_unfreezing_k, l2sp_penalty, snapshot

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
    #        weights [0.493069 / 1.493069, 1 / 1.493069] = [0.3302385, 0.6697615] (to 7 decimals)
    #        output 0.3302385 [1, 2] + 0.6697615 [3, 4] = [1 + 2 * 0.6697615, 2 + 2 * 0.6697615]
    #             = [2.339523, 3.339523]  (2 * 0.6697615 = 1.3395230: the digits written are within about 1e-7
    #             of the exact outputs, well inside the 1e-6 tolerance)
    query = tensor(1.0, 0.0, 0.0, 1.0).reshape(2, 2)
    key = tensor(1.0, 0.0, 1.0, 1.0).reshape(2, 2)
    value = tensor(1.0, 2.0, 3.0, 4.0).reshape(2, 2)
    output, weights = MF.scaled_dot_product_attention(query, key, value, return_weights=True)
    assert_close(weights, tensor(0.5, 0.5, 0.330238, 0.669762).reshape(2, 2), **SIX_DECIMALS)
    assert_close(output, tensor(2.0, 3.0, 2.339523, 3.339523).reshape(2, 2), **SIX_DECIMALS)


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


@pytest.mark.parametrize(
    "gelu, backward_node", [(MF.gelu, "MulBackward0"), (fast.gelu, "GELUBackward")], ids=["readable", "fast"]
)
def test_gelu_at_a_few_points(gelu, backward_node):
    # "readable" is the formula of minipt.functional, differentiated by autograd (its last operation is the
    # product x * Phi(x), node MulBackward0); "fast" is minipt.fast's GELU Function with its hand-written backward.
    # exact: GELU(x) = x (1 + erf(x / sqrt 2)) / 2;  erf(1 / sqrt 2) = erf(0.707107) = 0.682689
    #   GELU(0) = 0;  GELU(1) = (1 + 0.682689) / 2 = 0.841345;  GELU(-1) = -(1 - 0.682689) / 2 = -0.158655
    # tanh form at 1: sqrt(2/pi) (1 + 0.044715) = 0.797885 * 1.044715 = 0.833562; tanh = 0.682384
    #   GELU(1) ~ (1 + 0.682384) / 2 = 0.841192
    x = tensor(0.0, 1.0, -1.0).requires_grad_()
    assert type(gelu(x).grad_fn).__name__ == backward_node  # the path named in the id is the one that runs
    assert_close(gelu(x), tensor(0.0, 0.841345, -0.158655), **SIX_DECIMALS)
    assert gelu(x, approximate="tanh")[1].item() == pytest.approx(0.841192, abs=1e-6)
    # the slope at 1: Phi(1) + 1 * phi(1) = 0.841345 + e^(-1/2) / sqrt(2 pi) = 0.841345 + 0.241971 = 1.083315
    (slope,) = torch.autograd.grad(gelu(x)[1], x)
    assert_close(slope, tensor(0.0, 1.083315, 0.0), **SIX_DECIMALS)


def test_dropout_scales_the_survivors_and_keeps_the_mean():
    # p = 0.25: each entry is zeroed or multiplied by 1 / (1 - 0.25) = 4/3, so the expectation stays x:
    # E[y] = 0.75 * (4/3) x + 0.25 * 0 = x.  With x = 3: survivors are 3 * 4/3 = 4, E[y] = 0.75 * 4 = 3.
    # Spread of the mean of n = 100,000 entries: Var[y] = E[y^2] - 3^2 = 0.75 * 16 - 9 = 3,
    #   std of the mean = sqrt(3 / 100,000) = 0.005477; tolerance 0.03 is about 5.5 standard deviations.
    # The kept fraction is 0.75 with std sqrt(0.75 * 0.25 / 100,000) = 0.001369; tolerance 0.007 (about 5).
    n = 100_000
    x = torch.full((n,), 3.0, dtype=torch.float64)
    y = MF.dropout(x, p=0.25, generator=torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) == {0.0, 4.0}  # 3 * 4/3 = 4
    assert y.mean().item() == pytest.approx(3.0, abs=0.03)
    assert (y != 0).double().mean().item() == pytest.approx(0.75, abs=0.007)
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
    # (Notebook 02 shows the same example: [0.28, 0.24, 0.27] is not even a multiple of v, 0.28 / 0.7 = 0.4 but
    # 0.24 / 0.8 = 0.3, so no weighting of the one value gives it.)
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
    # Tutorial mistake: its update left out the bias correction, dividing the raw moments m / sqrt(v).
    # Step 1, no weight decay, lr = 0.1, betas (0.9, 0.999): m = 0.1 g, v = 0.001 g^2.
    #   uncorrected (the mistake): m / sqrt(v) = 0.1 g / (sqrt(0.001) |g|) = 0.1 / 0.031623 = 3.162278 (sign of g),
    #     so the first step is 0.1 * 3.162278 = 0.316228 = 3.16 x lr, whatever the gradient's size;
    #   corrected: m_hat = m / (1 - 0.9) = g, v_hat = v / (1 - 0.999) = g^2, sqrt(v_hat) = |g|, and
    #     update = lr * g / (|g| + eps):
    #       g = 1e-3: 0.1 * 1e-3 / (1e-3 + 1e-8) = 0.1 / 1.00001 = 0.099999
    #       g = 1e3:  0.1 * 1e3 / (1e3 + 1e-8)   = 0.1 (to 12 decimals)
    # Both gradient sizes give a step of lr: the test catches the missing correction (0.316) and also an update
    # that forgets to divide by sqrt(v_hat) (it would scale with g: 1e-4 and 100).
    theta = torch.nn.Parameter(tensor(0.0))
    theta.grad = tensor(gradient)
    AdamW([theta], lr=0.1, weight_decay=0.0).step()
    assert -theta.item() == pytest.approx(expected_step, abs=1e-6)
    assert abs(-theta.item() - 0.316228) > 0.2  # far from the uncorrected step


# ----------------------------------------------------------------------------------------------------------
# Activations and normalisation, with their gradients
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gelu", [MF.gelu, fast.gelu], ids=["readable", "fast"])
def test_gelu_at_zero_has_slope_one_half(gelu):
    # GELU(x) = x Phi(x): at 0, 0 * Phi(0) = 0 * 0.5 = 0.
    # slope Phi(x) + x phi(x): at 0, Phi(0) + 0 * phi(0) = 0.5 (half the slope of the identity)
    # at -1: Phi(-1) - phi(-1) = 0.158655 - 0.241971 = -0.083316 (GELU still falls there: its minimum lies to the
    # right of -1, at x = -0.752, where the slope Phi(x) + x phi(x) crosses 0)
    x = tensor(0.0, -1.0).requires_grad_()
    y = gelu(x)
    assert y[0].item() == 0.0
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert_close(slope, tensor(0.5, -0.083316), **SIX_DECIMALS)


def test_relu_and_its_gradient_at_zero():
    # relu([-1, 0, 2]) = [max(-1, 0), max(0, 0), max(2, 0)] = [0, 0, 2]
    # gradient: 1 where x > 0, else 0; at exactly 0 the convention is 0 (as torch)
    x = tensor(-1.0, 0.0, 2.0).requires_grad_()
    y = MF.relu(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 0.0, 2.0]
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_softmax_jacobian_of_a_half_quarter_quarter():
    # z = [ln 2, 0, 0]: e^z = [2, 1, 1], sum 4, p = [0.5, 0.25, 0.25]
    # J_ij = d p_i / d z_j = p_i ([i = j] - p_j):
    #   J_00 = 0.5 * 0.5 = 0.25;  J_11 = J_22 = 0.25 * 0.75 = 0.1875
    #   J_01 = J_02 = -0.5 * 0.25 = -0.125;  J_12 = -0.25 * 0.25 = -0.0625 (symmetric)
    # every row sums to 0: adding a constant to all logits changes no probability
    z = tensor(math.log(2.0), 0.0, 0.0)
    jacobian = torch.autograd.functional.jacobian(lambda logits: MF.softmax(logits, dim=0), z)
    expected = tensor(0.25, -0.125, -0.125, -0.125, 0.1875, -0.0625, -0.125, -0.0625, 0.1875).reshape(3, 3)
    assert_close(jacobian, expected, atol=1e-12, rtol=0)


def test_cross_entropy_gradient_is_divided_by_the_batch_size():
    # A: logits [0, 0], target 0: p = [0.5, 0.5]; p - onehot = [-0.5, 0.5]
    # B: logits [ln 3, 0], target 1: p = [0.75, 0.25]; p - onehot = [0.75, -0.75]
    # "mean" over N = 2 divides each row by 2: [[-0.25, 0.25], [0.375, -0.375]]
    logits = tensor(0.0, 0.0, math.log(3.0), 0.0).reshape(2, 2).requires_grad_()
    MF.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert_close(logits.grad, tensor(-0.25, 0.25, 0.375, -0.375).reshape(2, 2), atol=1e-12, rtol=0)


def test_label_smoothing_gradient_is_p_minus_the_smoothed_target():
    # C = 2, eps = 0.2, target 0: q = [1 - 0.2 + 0.2 / 2, 0.2 / 2] = [0.9, 0.1]
    # logits [0, 0]: p = [0.5, 0.5]; gradient p - q = [-0.4, 0.4] (not [-0.5, 0.5] as without smoothing)
    logits = tensor(0.0, 0.0).reshape(1, 2).requires_grad_()
    MF.cross_entropy(logits, torch.tensor([0]), label_smoothing=0.2).backward()
    assert_close(logits.grad, tensor(-0.4, 0.4).reshape(1, 2), atol=1e-12, rtol=0)


@pytest.mark.parametrize("layer_norm", [MF.layer_norm, fast.layer_norm], ids=["readable", "fast"])
def test_layer_norm_gradient_on_one_two_three_four(layer_norm):
    # x = [1, 2, 3, 4], loss = y_0 (upstream gradient g = [1, 0, 0, 0]), no gamma or beta.
    # forward: c = x - 2.5 = [-1.5, -0.5, 0.5, 1.5]; rho = (1.25 + 1e-5)^(-1/2) = 0.894424;
    #   x_hat = rho c = [-1.341635, -0.447212, 0.447212, 1.341635]
    # backward: dx = rho (g - mean(g) - x_hat mean(g * x_hat))
    #   mean(g) = 0.25;  mean(g * x_hat) = x_hat_0 / 4 = -1.5 rho / 4 = -0.375 rho
    #   -x_hat * (-0.375 rho) = 0.375 rho^2 c, rho^2 = 1 / 1.25001 = 0.799994: 0.299998 c
    #     = [-0.449997, -0.149999, 0.149999, 0.449997]
    #   g - 0.25 = [0.75, -0.25, -0.25, -0.25]; sum: [0.300003, -0.399999, -0.100001, 0.199997]
    #   dx = 0.894424 * that = [0.268330, -0.357769, -0.089443, 0.178882]
    # Relation: sum(dx) = 0 (shifting x changes nothing; scaling it changes nothing only up to eps, so dx . x_hat
    # is not exactly 0).
    # Tolerance 2e-6: the six-digit intermediates above carry rounding errors of a few 1e-7.
    x = tensor(1.0, 2.0, 3.0, 4.0).requires_grad_()
    layer_norm(x, 4)[0].backward()
    assert_close(x.grad, tensor(0.268330, -0.357769, -0.089443, 0.178882), atol=2e-6, rtol=0)
    assert abs(x.grad.sum().item()) < 1e-12


def test_layer_norm_of_a_constant_row_is_beta_and_eps_bounds_its_gradient():
    # x = [5, 5, 5, 5]: c = 0, variance 0, rho = (0 + 1e-5)^(-1/2) = 316.227766 (finite thanks to eps)
    # y = 0 * rho * gamma + beta = beta = [1, 2, 3, 4]
    # gradient of y_0 (gamma = 1): rho (g - mean(g) - 0) = 316.227766 [0.75, -0.25, -0.25, -0.25]
    #   = [237.170825, -79.056942, -79.056942, -79.056942]: large, but bounded by eps
    x = tensor(5.0, 5.0, 5.0, 5.0).requires_grad_()
    y = MF.layer_norm(x, 4, torch.ones(4, dtype=torch.float64), tensor(1.0, 2.0, 3.0, 4.0))
    assert_close(y.detach(), tensor(1.0, 2.0, 3.0, 4.0), atol=1e-12, rtol=0)
    y[0].backward()
    assert_close(x.grad, tensor(237.170825, -79.056942, -79.056942, -79.056942), **SIX_DECIMALS)


@pytest.mark.parametrize("attention", [MF.scaled_dot_product_attention, fast.attention], ids=["readable", "fast"])
def test_attention_backward_with_the_row_sum_identity(attention):
    # One query, two keys, scale 1: q = [1, 0], K = [[0, 0], [ln 3, 0]], V = [[0], [4]].
    # scores q K^T = [0, ln 3]; e^s = [1, 3]; A = [0.25, 0.75]; O = 0.25 * 0 + 0.75 * 4 = 3
    # loss = O, so dO = 1.
    #   dA_j = dO . V_j = [0, 4];  D = sum_j dA_j A_j = 0.75 * 4 = 3 = dO . O  (the identity: no (L, S) sum needed)
    #   dS = A * (dA - D) = [0.25 * (0 - 3), 0.75 * (4 - 3)] = [-0.75, 0.75]
    #   dq = dS K = -0.75 [0, 0] + 0.75 [ln 3, 0] = [0.75 * 1.098612, 0] = [0.823959, 0]
    #   dK = dS^T q = [[-0.75, 0], [0.75, 0]];  dV = A^T dO = [[0.25], [0.75]]
    query = tensor(1.0, 0.0).reshape(1, 2).requires_grad_()
    key = tensor(0.0, 0.0, math.log(3.0), 0.0).reshape(2, 2).requires_grad_()
    value = tensor(0.0, 4.0).reshape(2, 1).requires_grad_()
    output = attention(query, key, value, scale=1.0)
    assert output.item() == pytest.approx(3.0, abs=1e-12)
    output.sum().backward()
    assert_close(query.grad, tensor(0.823959, 0.0).reshape(1, 2), **SIX_DECIMALS)
    assert_close(key.grad, tensor(-0.75, 0.0, 0.75, 0.0).reshape(2, 2), atol=1e-12, rtol=0)
    assert_close(value.grad, tensor(0.25, 0.75).reshape(2, 1), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# The GRU cell
# ----------------------------------------------------------------------------------------------------------


def small_gru_cell() -> GRUCell:
    # H = 1, input size 1. weight_ih = [0, 0, 1] (rows r, z, n), bias_ih = [ln 3, -ln 3, 0],
    # weight_hh = [0, 0, 2], bias_hh = 0.
    cell = GRUCell(1, 1).double()
    with torch.no_grad():
        cell.weight_ih.copy_(tensor(0.0, 0.0, 1.0).reshape(3, 1))
        cell.bias_ih.copy_(tensor(math.log(3.0), -math.log(3.0), 0.0))
        cell.weight_hh.copy_(tensor(0.0, 0.0, 2.0).reshape(3, 1))
        cell.bias_hh.zero_()
    return cell


def test_one_gru_step_with_its_gates_by_hand():
    # x = 1, h = 0.5: input gates i = W_ih x + b_ih = [ln 3, -ln 3, 1]; hidden gates g = W_hh h + b_hh = [0, 0, 1]
    # r = sigmoid(ln 3 + 0) = 3 / (3 + 1) = 0.75;  z = sigmoid(-ln 3 + 0) = 1 / (1 + 3) = 0.25
    # n = tanh(i_n + r g_n) = tanh(1 + 0.75 * 1) = tanh(1.75) = (e^3.5 - 1) / (e^3.5 + 1) = 32.115452 / 34.115452
    #   = 0.941376
    # h' = (1 - z) n + z h = 0.75 * 0.941376 + 0.25 * 0.5 = 0.706032 + 0.125 = 0.831032
    # dh'/dh: r and z do not depend on h here (their W_hh rows are 0), so
    #   dh'/dh = z + (1 - z) (1 - n^2) r W_hn = 0.25 + 0.75 * (1 - 0.886188) * 0.75 * 2
    #          = 0.25 + 0.75 * 0.113812 * 1.5 = 0.25 + 0.128039 = 0.378039
    cell = small_gru_cell()
    x = tensor(1.0).reshape(1, 1)
    h = tensor(0.5).reshape(1, 1).requires_grad_()
    input_gates = torch.nn.functional.linear(x, cell.weight_ih, cell.bias_ih)  # (1, 3)
    new_h, reset, update = gru_cell_step(input_gates, h, cell.weight_hh, cell.bias_hh)
    assert reset.item() == pytest.approx(0.75, abs=1e-12)
    assert update.item() == pytest.approx(0.25, abs=1e-12)
    assert new_h.item() == pytest.approx(0.831032, abs=1e-6)
    assert cell(x, h).item() == pytest.approx(0.831032, abs=1e-6)
    (slope,) = torch.autograd.grad(new_h.sum(), h)
    assert slope.item() == pytest.approx(0.378039, abs=1e-6)
    # minipt.fast's GRU with its backward through time derived by hand, on the same one step (T = 1)
    fast_h = h.detach().clone().requires_grad_()
    output, h_n, _, _ = fast.gru_sequence(input_gates.unsqueeze(1), fast_h, cell.weight_hh, cell.bias_hh)
    assert h_n.item() == pytest.approx(0.831032, abs=1e-6)
    (fast_slope,) = torch.autograd.grad(output.sum(), fast_h)
    assert fast_slope.item() == pytest.approx(0.378039, abs=1e-6)


def test_gru_cell_parameter_count():
    # GRUCell(input 2, hidden 3): weight_ih 3H x I = 9 x 2 = 18, weight_hh 3H x H = 9 x 3 = 27,
    # bias_ih 9, bias_hh 9: 18 + 27 + 9 + 9 = 63
    assert sum(p.numel() for p in GRUCell(2, 3).parameters()) == 63


# ----------------------------------------------------------------------------------------------------------
# Optimisation: AdamW, SGD, clipping, schedules
# ----------------------------------------------------------------------------------------------------------


def test_adamw_with_weight_decay_only_shrinks_geometrically():
    # gradient 0, theta = 2, lr = 0.1, weight decay 0.5: each step multiplies by 1 - 0.1 * 0.5 = 0.95
    # and the Adam part is 0 / (sqrt(0) + 1e-8) = 0 (m and v stay 0)
    # step 1: 2 * 0.95 = 1.9;  step 2: 1.9 * 0.95 = 1.805;  step 10: 2 * 0.95^10 = 2 * 0.598737 = 1.197474
    theta = torch.nn.Parameter(tensor(2.0))
    untouched = torch.nn.Parameter(tensor(2.0))  # no gradient at all (grad None): skipped, so not decayed
    optimizer = AdamW([theta, untouched], lr=0.1, weight_decay=0.5)
    theta.grad = tensor(0.0)
    optimizer.step()
    assert theta.item() == pytest.approx(1.9, abs=1e-12)
    optimizer.step()
    assert theta.item() == pytest.approx(1.805, abs=1e-12)
    for _ in range(8):
        optimizer.step()
    assert theta.item() == pytest.approx(1.197474, abs=1e-6)
    assert optimizer.state[theta]["exp_avg"].item() == 0.0
    assert untouched.item() == 2.0


def test_sgd_weight_decay_is_added_to_the_gradient():
    # SGD's L2 decay: g = 0 + 0.5 * theta = 0.5 (theta = 1); theta = 1 - 0.1 * 0.5 = 0.95
    # second step: g = 0.5 * 0.95 = 0.475; theta = 0.95 - 0.0475 = 0.9025
    theta = torch.nn.Parameter(tensor(1.0))
    optimizer = SGD([theta], lr=0.1, weight_decay=0.5)
    theta.grad = tensor(0.0)
    optimizer.step()
    assert theta.item() == pytest.approx(0.95, abs=1e-12)
    optimizer.step()
    assert theta.item() == pytest.approx(0.9025, abs=1e-12)


def test_gradient_clipping_by_global_norm():
    # two parameters with gradients [3, 0] and [4]: global norm sqrt(9 + 0 + 16) = 5
    # max_norm 1: factor 1 / (5 + 1e-6) = 0.19999996; gradients [0.6, 0, 0.8] (to 1e-7), norm 1
    # the direction is kept: 0.6 / 0.8 = 3 / 4 as before
    first, second = torch.nn.Parameter(tensor(0.0, 0.0)), torch.nn.Parameter(tensor(0.0))
    first.grad, second.grad = tensor(3.0, 0.0), tensor(4.0)
    total = clip_grad_norm_([first, second], max_norm=1.0)
    assert total.item() == pytest.approx(5.0, abs=1e-12)
    assert_close(first.grad, tensor(0.6, 0.0), **SIX_DECIMALS)
    assert second.grad.item() == pytest.approx(0.8, abs=1e-6)
    # max_norm 10 > 5: the factor min(1, 10 / 5) = 1 leaves the gradients alone
    first.grad, second.grad = tensor(3.0, 0.0), tensor(4.0)
    clip_grad_norm_([first, second], max_norm=10.0)
    assert first.grad.tolist() == [3.0, 0.0] and second.grad.item() == 4.0


def test_warmup_cosine_edges():
    # W = 4 warmup steps, T = 14, min_ratio r = 0.1 (the default)
    # first step: (0 + 1) / 4 = 0.25 (not 0);  last warmup step 3: 4 / 4 = 1;  step 4 = W: p = 0, f = 1
    # halfway s = (4 + 14) / 2 = 9: p = 0.5, f = 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.1 + 0.45 = 0.55
    # s = T = 14: p = 1, f = 0.1 + 0.9 * 0 = 0.1;  s = 1000: p held at 1, f = 0.1
    schedule = partial(warmup_cosine, warmup_steps=4, total_steps=14)
    values = [schedule(s) for s in (0, 3, 4, 9, 14, 1000)]
    assert values == pytest.approx([0.25, 1.0, 1.0, 0.55, 0.1, 0.1], abs=1e-12)
    # through LambdaLR, the first optimizer step uses base lr * f(0) = 0.4 * 0.25 = 0.1
    optimizer = AdamW([torch.nn.Parameter(tensor(1.0))], lr=0.4)
    torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1, abs=1e-12)


def test_constant_with_warmup_at_chosen_steps():
    # W = 4: f(s) = min(1, (s + 1) / 4): 0.25, 0.5, 0.75, 1, then 1 for ever
    values = [constant_with_warmup(s, warmup_steps=4) for s in (0, 1, 2, 3, 10)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0], abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Language-model losses and metrics
# ----------------------------------------------------------------------------------------------------------


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    # V = 8, all logits 0: p = 1/8 for every token, whatever the target;
    # loss = -ln(1/8) = ln 8 = 2.079442; perplexity = e^(ln 8) = 8
    logits = torch.zeros(2, 5, 8, dtype=torch.float64)
    targets = torch.tensor([[0, 1, 2, 3, 4], [7, 6, 5, 4, 3]])
    loss = language_model_loss(logits, targets)
    assert loss.item() == pytest.approx(2.079442, abs=1e-6)
    assert perplexity(loss) == pytest.approx(8.0, abs=1e-9)


def test_perplexity_is_the_geometric_mean_of_inverse_probabilities():
    # two positions, V = 8. Position 0: logits [ln 7, 0 x 7]: e^z = [7, 1 x 7], sum 14, p(target 0) = 7/14 = 1/2.
    # Position 1: all 0, p = 1/8.  Mean NLL = (ln 2 + ln 8) / 2 = 2 ln 2 = 1.386294; perplexity = e^(2 ln 2) = 4
    # = sqrt(2 * 8), the geometric mean of 1/p, not the arithmetic mean (2 + 8) / 2 = 5.
    logits = torch.zeros(1, 2, 8, dtype=torch.float64)
    logits[0, 0, 0] = math.log(7.0)
    loss = language_model_loss(logits, torch.tensor([[0, 5]]))
    assert loss.item() == pytest.approx(1.386294, abs=1e-6)
    assert perplexity(loss) == pytest.approx(4.0, abs=1e-9)


def test_masked_lm_loss_on_a_five_token_example():
    # 5 positions, V = 4; positions 1 and 3 were chosen (targets 0 and 2), the rest are -100.
    # position 1: logits [ln 3, 0, 0, 0]: e^z = [3, 1, 1, 1], sum 6, p(0) = 3/6 = 1/2, -ln = ln 2 = 0.693147
    # position 3: logits 0: p(2) = 1/4, -ln = ln 4 = 1.386294
    # the unscored positions have logits [10, 0, 0, 0] and would cost ~10 nats each if they counted
    # MLM loss = (0.693147 + 1.386294) / 2 = 1.039721 (divided by the 2 scored positions, not by 5)
    logits = torch.zeros(1, 5, 4, dtype=torch.float64)
    logits[0, [0, 2, 4], 0] = 10.0
    logits[0, 1, 0] = math.log(3.0)
    targets = torch.tensor([[IGNORE_INDEX, 0, IGNORE_INDEX, 2, IGNORE_INDEX]])
    assert language_model_loss(logits, targets).item() == pytest.approx(1.039721, abs=1e-6)


def test_bert_masking_is_80_10_10():
    # mask_prob 1: every ordinary token is chosen. 100,000 tokens, all "a" (id 5) of 10 ordinary characters.
    # <mask>: 0.8, std sqrt(0.8 * 0.2 / 100,000) = 0.001265; tolerance 0.006 (about 5 std)
    # unchanged: 0.1 kept + 0.1 * 1/10 random draws of "a" itself = 0.11, std 0.000989; tolerance 0.005
    # mask_prob 0.15 (BERT): chosen 0.15, std sqrt(0.15 * 0.85 / 100,000) = 0.001129; tolerance 0.006
    tokenizer = CharTokenizer("abcdefghij")
    ids = torch.full((200, 500), tokenizer.encode("a")[0])
    generator = torch.Generator().manual_seed(0)
    inputs, targets = mask_tokens(ids, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, generator, 1.0)
    assert bool((targets == ids).all())  # every position is scored, against its original token
    assert (inputs == tokenizer.mask_id).double().mean().item() == pytest.approx(0.8, abs=0.006)
    assert (inputs == ids).double().mean().item() == pytest.approx(0.11, abs=0.005)
    assert not bool(torch.isin(inputs, torch.tensor([0, 1, 3, 4])).any())  # random tokens are never special
    _, targets = mask_tokens(ids, tokenizer.mask_id, tokenizer.vocab_size, tokenizer.special_ids, generator)
    assert (targets != IGNORE_INDEX).double().mean().item() == pytest.approx(0.15, abs=0.006)


def test_nsp_logits_read_the_cls_position():
    # With the final layer norm's gamma = 0 and beta = b, every position's feature is 0 * x_hat + b = b,
    # whatever the tokens: b = [1, -1, 0.5, 2].
    # NSP head W = [[1, 0, 0, 0], [0, 0, 2, 1]], c = [0.5, -0.5]:
    #   z = W b + c = [1 + 0.5, 2 * 0.5 + 2 - 0.5] = [1.5, 2.5]
    # P(is next) = softmax(z)_1 = 1 / (1 + e^(1.5 - 2.5)) = 1 / (1 + e^-1) = 0.731059
    # NSP loss for label 1 (B follows A): -ln 0.731059 = 0.313262; for label 0: -ln 0.268941 = 1.313262
    torch.manual_seed(0)
    lm = TransformerLM(vocab_size=10, d_model=4, n_layers=1, n_heads=1, d_ff=8, max_len=6, dropout=0.0, causal=False)
    model = MaskedLMWithNextSentenceHead(lm).double()
    with torch.no_grad():
        lm.norm.weight.zero_()
        lm.norm.bias.copy_(tensor(1.0, -1.0, 0.5, 2.0))
        model.nsp_head.weight.copy_(tensor(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0).reshape(2, 4))
        model.nsp_head.bias.copy_(tensor(0.5, -0.5))
    _, nsp_logits = model(torch.tensor([[3, 5, 6, 4, 7, 4], [3, 8, 4, 9, 4, 0]]))  # <cls> A <sep> B <sep>
    assert_close(nsp_logits, tensor(1.5, 2.5, 1.5, 2.5).reshape(2, 2), atol=1e-12, rtol=0)
    assert MF.softmax(nsp_logits, dim=-1)[0, 1].item() == pytest.approx(0.731059, abs=1e-6)
    assert MF.cross_entropy(nsp_logits, torch.tensor([1, 0]), reduction="none").tolist() == pytest.approx(
        [0.313262, 1.313262], abs=1e-6
    )


def test_next_sentence_pairs_layout():
    # texts "ab", "cd" (scene 0) and "ef", "gh" (scene 1): consecutive pairs of one scene are (0, 1) and (2, 3);
    # (1, 2) crosses scenes and is skipped, so 2 pairs. Char ids: specials 0-4, then a=5, b=6, ..., h=12.
    # Pair of text 0: <cls> a b <sep> B <sep> = [3, 5, 6, 4, B0, B1, 4], padded with 0 to max_len 9;
    # segments [0, 0, 0, 0, 1, 1, 1, 0, 0]; attention mask 7 ones then 2 zeros.
    # B is "cd" = [7, 8] when is_next = 1, else a text of scene 1 ("ef" or "gh").
    tokenizer = CharTokenizer("abcdefgh")
    input_ids, segments, attention_mask, is_next = next_sentence_pairs(
        ["ab", "cd", "ef", "gh"], [0, 0, 1, 1], tokenizer, max_len=9, generator=torch.Generator().manual_seed(0)
    )
    assert input_ids.shape == (2, 9)
    assert input_ids[0, :4].tolist() == [3, 5, 6, 4] and input_ids[0, 6:].tolist() == [4, 0, 0]
    assert segments[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert attention_mask.sum(dim=1).tolist() == [7, 7]
    second_segment = input_ids[0, 4:6].tolist()
    if is_next[0] == 1:
        assert second_segment == [7, 8]  # "cd", the text that follows "ab"
    else:
        assert second_segment in ([9, 10], [11, 12])  # "ef" or "gh", from the other scene


def test_macro_f1_of_the_always_majority_classifier():
    # 10 examples: 7 of class 0, 3 of class 1; the classifier always answers 0.
    # confusion (rows true, columns predicted) = [[7, 0], [3, 0]]
    # class 0: TP 7, FP 3, FN 0: F1 = 2 * 7 / (2 * 7 + 3 + 0) = 14 / 17 = 0.823529
    # class 1: TP 0: F1 = 0 / (0 + 0 + 3) = 0
    # macro-F1 = (0.823529 + 0) / 2 = 0.411765, while the accuracy is 7 / 10 = 0.7
    targets = torch.tensor([0] * 7 + [1] * 3)
    predictions = torch.zeros(10, dtype=torch.long)
    confusion = confusion_matrix(predictions, targets, num_classes=2)
    assert confusion.tolist() == [[7, 0], [3, 0]]
    assert macro_f1(confusion) == pytest.approx(0.411765, abs=1e-6)
    assert accuracy(predictions, targets) == pytest.approx(0.7, abs=1e-12)


def test_per_class_precision_recall_and_f1():
    # predictions [0, 1, 1, 2], targets [0, 1, 2, 2]: accuracy 3/4 = 0.75
    # confusion [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    # class 1: TP 1, FP 1 (a true 2 called 1), FN 0: precision 1/2, recall 1, F1 2 / (2 + 1) = 0.666667
    # class 2: TP 1, FP 0, FN 1: precision 1, recall 1/2, F1 2/3;  class 0: F1 1
    # macro-F1 = (1 + 2/3 + 2/3) / 3 = 0.777778
    predictions, targets = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    confusion = confusion_matrix(predictions, targets, num_classes=3)
    scores = precision_recall_f1(confusion)
    assert accuracy(predictions, targets) == 0.75
    assert scores["precision"].tolist() == pytest.approx([1.0, 0.5, 1.0], abs=1e-12)
    assert scores["recall"].tolist() == pytest.approx([1.0, 1.0, 0.5], abs=1e-12)
    assert macro_f1(confusion) == pytest.approx(0.777778, abs=1e-6)


def test_sampling_with_temperature_and_top_k():
    # logits [2 ln 3, 0, -1], temperature 2: z / 2 = [ln 3, 0, -0.5]; e^ = [3, 1, 0.606531], sum 4.606531
    #   p = [3 / 4.606531, 1 / 4.606531, 0.606531 / 4.606531] = [0.651249, 0.217083, 0.131668]
    # top_k 2 keeps [ln 3, 0]: p = [3/4, 1/4, 0]
    logits = tensor(2 * math.log(3.0), 0.0, -1.0).reshape(1, 3)
    assert_close(next_token_probabilities(logits, temperature=2.0), tensor(0.651249, 0.217083, 0.131668).reshape(1, 3),
                 **SIX_DECIMALS)
    assert_close(next_token_probabilities(logits, temperature=2.0, top_k=2), tensor(0.75, 0.25, 0.0).reshape(1, 3),
                 atol=1e-12, rtol=0)


def test_pooling_with_padding():
    # features (1, 3, 2) = [[1, 2], [3, 4], [100, 100]], mask [1, 1, 0] (the last position is padding)
    # mean: ([1, 2] + [3, 4]) / 2 = [2, 3];  first: [1, 2];  last real (t = 1): [3, 4]
    features = tensor(1.0, 2.0, 3.0, 4.0, 100.0, 100.0).reshape(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    assert pool(features, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(features, mask, "first").tolist() == [[1.0, 2.0]]
    assert pool(features, mask, "last").tolist() == [[3.0, 4.0]]


def test_validation_windows_cover_each_token_once():
    # ids 0..9, block 4: (10 - 1) // 4 = 2 windows. Window k: inputs ids[4k : 4k + 4], targets shifted by one:
    #   x = [[0, 1, 2, 3], [4, 5, 6, 7]], y = [[1, 2, 3, 4], [5, 6, 7, 8]]; token 9 (a short tail) is left out
    (x, y), *rest = list(lm_eval_batches(torch.arange(10), batch_size=8, block_size=4))
    assert not rest
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]


# ----------------------------------------------------------------------------------------------------------
# Finetuning strategies
# ----------------------------------------------------------------------------------------------------------


def test_gradual_unfreezing_stages():
    # 3 layers, a stage every 10 steps: k = max(3 - step // 10, 0)
    # step 0, 9: stage 0, k 3;  10: k 2;  25: k 1;  30: k 0;  99: stage 9, k max(-6, 0) = 0
    assert [gradual_unfreezing_k(s, every=10, n_layers=3) for s in (0, 9, 10, 25, 30, 99)] == [3, 3, 2, 1, 0, 0]


def test_discriminative_learning_rates():
    # 2 layers: levels embedding 0, layers.0 1, layers.1 2, top T = 3; lr_l = lr * decay^(T - l), lr 1, decay 0.5:
    # embedding 0.5^3 = 0.125, layers.0 0.5^2 = 0.25, layers.1 0.5, top 1
    torch.manual_seed(0)
    model = TransformerLM(vocab_size=10, d_model=4, n_layers=2, n_heads=1, d_ff=8, max_len=4)
    groups = discriminative_param_groups(model, lr=1.0, decay=0.5)
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates == pytest.approx({"embedding": 0.125, "layers.0": 0.25, "layers.1": 0.5, "top": 1.0}, abs=1e-12)


def test_l2sp_penalty_and_its_gradient():
    # Linear(2, 1): w = [1, 2], w0 = [0, 0]; b = b0 = 0.5. strength 0.1:
    # penalty = 0.1 * ((1 - 0)^2 + (2 - 0)^2 + 0^2) = 0.1 * 5 = 0.5; gradient 2 * 0.1 * (w - w0) = [0.2, 0.4]
    layer = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(0.5)
    reference = snapshot(layer)
    with torch.no_grad():
        layer.weight.copy_(tensor(1.0, 2.0).reshape(1, 2))
    penalty = l2sp_penalty(layer, reference, strength=0.1)
    penalty.backward()
    assert penalty.item() == pytest.approx(0.5, abs=1e-12)
    assert_close(layer.weight.grad, tensor(0.2, 0.4).reshape(1, 2), atol=1e-12, rtol=0)
    assert layer.bias.grad.item() == 0.0


def test_decay_groups_count_by_hand():
    # Linear(3, 2) then LayerNorm(2): weight 2 x 3 = 6 scalars decay; linear bias 2, norm gain 2, norm bias 2:
    # 6 scalars without decay
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), LayerNorm(2))
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert sum(p.numel() for p in decay["params"]) == 6
    assert sum(p.numel() for p in no_decay["params"]) == 6
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_wordpiece_greedy_longest_match_by_hand():
    # vocabulary (id = line): [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, un 5, ##aff 6, ##able 7, aff 8, ##a 9,
    # a 10, ! 11, , 12. "Unaffable!" -> lower-case -> words "unaffable", "!". WordPiece from position 0 tries
    # "unaffable", "unaffabl", ..., "una" (none in the vocabulary), then "un": taken. From position 2 it tries
    # "##affable", ..., "##affa" (no), "##aff": taken. From 5: "##able": taken. So un ##aff ##able ! = 5 6 7 11.
    # "unaffablex": un ##aff ##able, then position 9 has no "##x": the whole word is [UNK] = 1.
    from minipt.data.wordpiece import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "aff",
                                    "##a", "a", "!", ","])
    assert tokenizer.tokenize("Unaffable!") == ["un", "##aff", "##able", "!"]
    assert tokenizer.encode("Unaffable!") == [5, 6, 7, 11]
    assert tokenizer.encode("unaffablex, a") == [1, 12, 10]
    assert tokenizer.encode_inputs(("Unaffable", "a")) == [2, 5, 6, 7, 3, 10, 3]  # [CLS] A [SEP] B [SEP]
