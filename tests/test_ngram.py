"""The count baselines of minipt.models.ngram, on the module docstring's worked example."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from minipt.models.ngram import bigram_cross_entropy, bigram_log_probs, unigram_entropy, unigram_log_probs

IDS = torch.tensor([0, 1, 1, 2])  # V = 3


def test_unigram_add_one_by_hand():
    # counts (1, 2, 1), N = 4, add-one: (1 + 1, 2 + 1, 1 + 1) / (4 + 3) = (2, 3, 2) / 7
    assert_close(unigram_log_probs(IDS, 3).exp(), torch.tensor([2, 3, 2], dtype=torch.float64) / 7)


def test_unseen_token_gets_smoothing_mass_only():
    # V = 4, token 3 never seen: (0 + 1) / (4 + 4) = 1/8; without smoothing it would be log 0 = -inf
    assert abs(unigram_log_probs(IDS, 4)[3].exp().item() - 1 / 8) < 1e-15
    assert unigram_log_probs(IDS, 4, smoothing=0.0)[3].item() == -math.inf


def test_bigram_rows_by_hand():
    # pairs (0,1), (1,1), (1,2); row 1 counts (0, 1, 1), n(1) = 2: (0+1, 1+1, 1+1) / (2 + 3) = (1, 2, 2) / 5
    # row 2 never starts a pair: uniform (1, 1, 1) / 3
    probabilities = bigram_log_probs(IDS, 3).exp()
    assert_close(probabilities[1], torch.tensor([1, 2, 2], dtype=torch.float64) / 5)
    assert_close(probabilities[2], torch.full((3,), 1 / 3, dtype=torch.float64))
    assert_close(probabilities.sum(dim=1), torch.ones(3, dtype=torch.float64))


def test_unigram_entropy_by_hand():
    # f = (1/4, 1/2, 1/4): H = 2 * (1/4) ln 4 + (1/2) ln 2 = 1.5 ln 2 = 1.039721
    assert abs(unigram_entropy(IDS, 3) - 1.5 * math.log(2)) < 1e-12


def test_bigram_cross_entropy_by_hand():
    # on its own training ids: -(log p(1|0) + log p(1|1) + log p(2|1)) / 3
    # p(1|0) = (1 + 1) / (1 + 3) = 1/2, p(1|1) = p(2|1) = 2/5
    expected = -(math.log(1 / 2) + 2 * math.log(2 / 5)) / 3
    assert abs(bigram_cross_entropy(bigram_log_probs(IDS, 3), IDS) - expected) < 1e-12
