r"""The floors a pretrained model must beat: a bag-of-words logistic regression.

Bag of words: a speech becomes the set of words it contains, :math:`x \in \{0, 1\}^V` with :math:`x_w = 1` when
word :math:`w` of the training vocabulary occurs in it (order, counts and unknown words are dropped). A softmax
regression on it,

.. math::
    p(y \mid x) = \operatorname{softmax}(W x + b), \qquad
    \mathcal{L} = \frac{\sum_n \omega_{y_n} \bigl(-\log p(y_n \mid x_n)\bigr)}{\sum_n \omega_{y_n}}, \qquad
    \omega_c = \frac{1}{N_c},

is trained on the labelled speeches. The class weights :math:`\omega_c` give each class the same total weight,
as the finetuning runs' class-balanced batches do, and the step kept is the one with the best validation
macro-F1, as the finetuning runs keep their best epoch: the baseline gets the same help as the neural rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minipt import functional as MF
from minipt.metrics import accuracy, confusion_matrix, macro_f1
from minipt.optim import AdamW

__all__ = ["words", "bag_of_words", "bag_of_words_baseline"]

WORD = re.compile(r"[a-z']+")
Example = tuple[str, str]  # (text, label)


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (letters and apostrophes)."""
    return WORD.findall(text.lower())


def bag_of_words(texts: Sequence[str], vocabulary: dict[str, int]) -> Tensor:
    """Word presence ``(N, V)``: 1 where the text contains the vocabulary's word, else 0."""
    features = torch.zeros(len(texts), len(vocabulary))
    for row, text in enumerate(texts):
        for word in words(text):
            if word in vocabulary:
                features[row, vocabulary[word]] = 1.0
    return features


def _tensors(examples: Sequence[Example], vocabulary: dict[str, int], labels: list[str]) -> tuple[Tensor, Tensor]:
    x = bag_of_words([text for text, _ in examples], vocabulary)  # (N, V)
    y = torch.tensor([labels.index(label) for _, label in examples])  # (N,)
    return x, y


def _macro_f1(linear: nn.Linear, x: Tensor, y: Tensor, num_classes: int) -> float:
    with torch.no_grad():
        return macro_f1(confusion_matrix(linear(x).argmax(dim=-1), y, num_classes))


def bag_of_words_baseline(
    train: Sequence[Example], validation: Sequence[Example], test: Sequence[Example], labels: list[str],
    seed: int = 0, steps: int = 300, lr: float = 0.05, weight_decay: float = 0.01,
) -> dict:
    """Train the class-balanced softmax regression above full-batch with AdamW for ``steps`` steps, keep the
    step with the best validation macro-F1 (checked every 10 steps) and score it on ``test``.

    Returns ``test_accuracy``, ``test_macro_f1``, ``best_val_macro_f1``, ``trainable_params`` and
    ``wall_seconds``.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    vocabulary: dict[str, int] = {}
    for text, _ in train:
        for word in words(text):
            vocabulary.setdefault(word, len(vocabulary))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        _tensors(split, vocabulary, labels) for split in (train, validation, test)
    )
    counts = torch.bincount(y_train, minlength=len(labels)).clamp_min(1)  # N_c, (C,)
    example_weights = (1.0 / counts)[y_train]  # omega_{y_n}, (N,)
    linear = nn.Linear(len(vocabulary), len(labels))
    optimizer = AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    best_f1, best_state = -1.0, None
    for step in range(steps):
        losses = MF.cross_entropy(linear(x_train), y_train, reduction="none")  # (N,)
        loss = (example_weights * losses).sum() / example_weights.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            val_f1 = _macro_f1(linear, x_val, y_val, len(labels))
            if val_f1 > best_f1:
                best_f1, best_state = val_f1, {key: value.clone() for key, value in linear.state_dict().items()}
    linear.load_state_dict(best_state)
    with torch.no_grad():
        predictions = linear(x_test).argmax(dim=-1)  # (N_test,)
    return {
        "test_accuracy": accuracy(predictions, y_test),
        "test_macro_f1": macro_f1(confusion_matrix(predictions, y_test, len(labels))),
        "best_val_macro_f1": best_f1,
        "trainable_params": sum(p.numel() for p in linear.parameters()),
        "wall_seconds": time.perf_counter() - start,
    }
