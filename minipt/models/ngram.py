r"""Count models: the unigram and bigram baselines a language model has to beat.

A unigram model ignores the context: it predicts every token with its frequency in the training text. A bigram
model reads only the previous token. Both are counted, not trained, with add-``smoothing`` (Laplace) so that a
token or pair never seen in training costs a finite amount:

.. math::
    p(c) = \frac{n(c) + s}{N + sV}, \qquad p(b \mid a) = \frac{n(a, b) + s}{n(a) + sV}

where :math:`n(c)` counts token :math:`c` among the :math:`N` training tokens, :math:`n(a, b)` counts the pairs
"``b`` right after ``a``" and :math:`n(a) = \sum_b n(a, b)`. The unigram **entropy**
:math:`H = -\sum_c f_c \log f_c` of the raw frequencies :math:`f_c = n(c) / N` is the best a context-free model can
score on the training text itself.

Worked example: ids ``[0, 1, 1, 2]``, ``V = 3``, ``s = 1``. Unigram: counts ``(1, 2, 1)``, ``N = 4``, so
``p = (2, 3, 2) / 7``. Bigram pairs ``(0,1), (1,1), (1,2)``: row 1 has counts ``(0, 1, 1)`` and ``n(1) = 2``, so
``p(. | 1) = (1, 2, 2) / 5``. Entropy: ``f = (1/4, 1/2, 1/4)``, ``H = 1.5 ln 2 = 1.0397`` nats.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["unigram_log_probs", "bigram_log_probs", "unigram_entropy", "bigram_cross_entropy"]


def unigram_log_probs(ids: Tensor, vocab_size: int, smoothing: float = 1.0) -> Tensor:
    """``ids`` ``(N,)`` long -> ``log p(c)`` ``(V,)`` float64, the add-``smoothing`` unigram model."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()  # (V,)
    return ((counts + smoothing) / (counts.sum() + smoothing * vocab_size)).log()


def bigram_log_probs(ids: Tensor, vocab_size: int, smoothing: float = 1.0) -> Tensor:
    """``ids`` ``(N,)`` long -> ``log p(b | a)`` ``(V, V)`` float64 (row ``a``), the add-``smoothing`` bigram model."""
    pairs = ids[:-1] * vocab_size + ids[1:]  # (N - 1,): the pair (a, b) as one index a * V + b
    counts = torch.bincount(pairs, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size).double()
    smoothed = counts + smoothing  # (V, V)
    return (smoothed / smoothed.sum(dim=1, keepdim=True)).log()


def unigram_entropy(ids: Tensor, vocab_size: int) -> float:
    """``H = -sum_c f_c log f_c`` (nats) of the raw frequencies of ``ids`` ``(N,)``; unseen tokens add 0."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()  # (V,)
    frequencies = counts[counts > 0] / counts.sum()
    return -(frequencies * frequencies.log()).sum().item()


def bigram_cross_entropy(log_probs: Tensor, ids: Tensor) -> float:
    """Mean ``-log p(ids[t+1] | ids[t])`` (nats per token) of the bigram model ``log_probs`` ``(V, V)`` on ``ids``."""
    return -log_probs[ids[:-1], ids[1:]].mean().item()
