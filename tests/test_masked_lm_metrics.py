"""Masked-LM validation is scored on the <mask> positions only; the all-chosen figure is kept, named apart."""

from __future__ import annotations

import math

import torch

from minipt.jobs.pretrain import masked_lm_metrics, masked_lm_scores, masked_positions

MASK = 9


def test_masked_positions_skip_unchanged_and_random():
    inputs = torch.tensor([[MASK, 1, 2, MASK]])
    targets = torch.tensor([[4, 1, 5, -100]])  # chosen: 0 (<mask>), 1 (kept), 2 (random 5 -> 2); 3 not chosen
    assert masked_positions(inputs, targets, MASK).tolist() == [[True, False, False, False]]


def test_metrics_by_hand():
    # V = 2 after the mask id; logits chosen so the probabilities are easy:
    #   position 0 (<mask>, target 0): logits (ln 3, 0) -> p = (3/4, 1/4), loss -ln 3/4 = 0.287682, top-1 right
    #   position 1 (<mask>, target 1): logits (ln 3, 0) -> loss -ln 1/4 = 1.386294, top-1 wrong
    #   position 2 (kept, target 1):  logits (0, ln 3) -> loss -ln 3/4 = 0.287682 (answer visible)
    #   position 3: not chosen, never scored
    # masked-only loss = (0.287682 + 1.386294) / 2 = 0.836988, accuracy 1/2
    # all chosen       = (0.287682 + 1.386294 + 0.287682) / 3 = 0.653886
    log3 = math.log(3)
    logits = torch.tensor([[[log3, 0.0] + [0.0] * 8, [log3, 0.0] + [0.0] * 8,
                            [0.0, log3] + [0.0] * 8, [0.0] * 10]])  # (1, 4, 10)
    logits[..., 2:] = -math.inf  # only ids 0 and 1 possible
    inputs = torch.tensor([[MASK, MASK, 1, 0]])
    targets = torch.tensor([[0, 1, 1, -100]])
    metrics = masked_lm_metrics(masked_lm_scores(logits, inputs, targets, MASK))
    masked_only = (-math.log(3 / 4) - math.log(1 / 4)) / 2
    assert abs(metrics["val_loss"] - masked_only) < 1e-6
    assert metrics["val_accuracy"] == 0.5
    assert abs(metrics["perplexity"] - math.exp(masked_only)) < 1e-5
    assert abs(metrics["val_chosen_loss"] - (2 * -math.log(3 / 4) - math.log(1 / 4)) / 3) < 1e-6


def test_copying_model_looks_good_only_on_the_chosen_figure():
    # A model that copies its input: perfect at unchanged positions, clueless at <mask> (uniform over V = 10).
    torch.manual_seed(0)
    originals = torch.randint(0, 8, (4, 50))
    chosen = torch.rand(4, 50) < 0.3
    shows_mask = chosen & (torch.rand(4, 50) < 0.8)
    inputs = torch.where(shows_mask, torch.tensor(MASK), originals)
    targets = torch.where(chosen, originals, torch.tensor(-100))
    logits = 20.0 * torch.nn.functional.one_hot(inputs, 10).float()  # (B, T, V): copy the input
    logits[shows_mask] = 0.0  # uniform at <mask>
    metrics = masked_lm_metrics(masked_lm_scores(logits, inputs, targets, MASK))
    assert abs(metrics["val_loss"] - math.log(10)) < 1e-6  # masked-only: the uniform guess, log V
    assert metrics["val_chosen_loss"] < metrics["val_loss"] - 0.1  # flattered by the copied positions
