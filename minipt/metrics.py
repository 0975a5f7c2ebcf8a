r"""Evaluation metrics written out: accuracy, the confusion matrix, precision / recall / F1, perplexity.

Everything for classification starts from the confusion matrix :math:`M` of shape ``(C, C)``:
**rows are the true class, columns the predicted class**, so :math:`M_{ij}` counts the examples of true class
:math:`i` that the model called :math:`j`. For class :math:`c`:

.. math::
    \mathrm{TP}_c = M_{cc}, \qquad
    \mathrm{FP}_c = \sum_{i \ne c} M_{ic} \;(\text{rest of column } c), \qquad
    \mathrm{FN}_c = \sum_{j \ne c} M_{cj} \;(\text{rest of row } c)

Example, 3 classes and 8 examples (``tests/test_metrics.py`` works it through)::

                    predicted 0  1  2
    M = true 0               [2, 1, 1]      class 0: TP = 2, FP = 1 + 0 = 1, FN = 1 + 1 = 2
        true 1               [1, 2, 0]
        true 2               [0, 1, 0]

Precision, recall and F1 are undefined for a class when their denominator is 0 (a class never predicted has
no precision); minipt then reports 0, as scikit-learn does with ``zero_division=0``.

Errors are :class:`MetricsError` (a ``ValueError``) naming the function and the bad argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minipt.errors import MiniptError

__all__ = [
    "MetricsError",
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "macro_f1",
    "perplexity",
    "classification_report",
]


MetricsError = MiniptError  # inputs a metric cannot use: minipt's one error class


def _check_predictions(function: str, predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    predictions, targets = torch.as_tensor(predictions), torch.as_tensor(targets)
    if predictions.shape != targets.shape or predictions.dim() != 1:
        raise MetricsError(
            f"{function}: predictions and targets must both have shape (N,), "
            f"got {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    if predictions.numel() == 0:
        raise MetricsError(f"{function}: no examples (predictions and targets are empty)")
    return predictions, targets


def _check_confusion(function: str, confusion: Tensor) -> Tensor:
    confusion = torch.as_tensor(confusion)
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] == 0:
        raise MetricsError(f"{function}: confusion must be a square (C, C) matrix, got shape {tuple(confusion.shape)}")
    return confusion


def accuracy(predictions: Tensor, targets: Tensor) -> float:
    r"""The fraction of examples whose predicted class is the true class.

    .. math::
        \mathrm{accuracy} = \frac{1}{N} \sum_{n=1}^{N} [\hat y_n = y_n]

    Shapes: ``predictions`` ``(N,)`` predicted class indices (e.g. ``logits.argmax(-1)``), ``targets`` ``(N,)``.
    """
    predictions, targets = _check_predictions("accuracy", predictions, targets)
    correct = (predictions == targets).sum().item()
    return correct / targets.numel()


def confusion_matrix(predictions: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    r"""Count every (true class, predicted class) pair: rows = true class, columns = predicted class.

    .. math::
        M_{ij} = \sum_{n=1}^{N} [y_n = i]\,[\hat y_n = j]

    Each pair gets one bin number :math:`i \cdot C + j`; counting the bins and reshaping to ``(C, C)`` gives
    :math:`M`. The diagonal holds the correct predictions, so ``M.trace() / M.sum()`` is the accuracy.

    Shapes: ``predictions``, ``targets`` ``(N,)`` with values in ``[0, num_classes)``; output ``(C, C)`` int64.
    """
    predictions, targets = _check_predictions("confusion_matrix", predictions, targets)
    if num_classes < 1:
        raise MetricsError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    for name, values in (("predictions", predictions), ("targets", targets)):
        if values.min() < 0 or values.max() >= num_classes:
            raise MetricsError(
                f"confusion_matrix: {name} must lie in [0, {num_classes}), "
                f"got values from {values.min().item()} to {values.max().item()}"
            )
    bins = targets.long() * num_classes + predictions.long()  # (N,)  row i, column j -> bin i*C + j
    counts = torch.bincount(bins, minlength=num_classes * num_classes)  # (C*C,)
    return counts.view(num_classes, num_classes)  # (C, C)


def _ratio_or_zero(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` elementwise, and 0 where the denominator is 0 (the metric is undefined)."""
    safe_denominator = denominator.clamp(min=1)  # where it is 0 the numerator is 0 too, so 0 / 1 = 0
    return numerator / safe_denominator


def precision_recall_f1(confusion: Tensor) -> dict[str, Tensor]:
    r"""Per-class precision, recall, F1 and support from a confusion matrix (rows true, columns predicted).

    .. math::
        \mathrm{precision}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c}
            = \frac{M_{cc}}{\sum_i M_{ic}} \qquad \text{(of the examples called } c \text{, the share that are } c)

        \mathrm{recall}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FN}_c}
            = \frac{M_{cc}}{\sum_j M_{cj}} \qquad \text{(of the examples of class } c \text{, the share found)}

        F_{1,c} = \frac{2\,\mathrm{precision}_c\,\mathrm{recall}_c}{\mathrm{precision}_c + \mathrm{recall}_c}
            = \frac{2\,\mathrm{TP}_c}{2\,\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c}

    The second form of :math:`F_1` (the harmonic mean, multiplied out) is the one computed: it needs no
    precision or recall, so it is defined whenever the class was predicted or present at all.
    Every ratio whose denominator is 0 is reported as 0 (scikit-learn's ``zero_division=0``).
    ``support`` is the number of true examples of each class, :math:`\sum_j M_{cj}`.

    Shapes: ``confusion`` ``(C, C)``; each output ``(C,)``, float64 (support: int64).
    """
    confusion = _check_confusion("precision_recall_f1", confusion)
    true_positives = confusion.diagonal().double()  # (C,)
    predicted_counts = confusion.sum(dim=0).double()  # (C,)  column sums: TP + FP
    support = confusion.sum(dim=1)  # (C,)  row sums: TP + FN
    false_positives = predicted_counts - true_positives
    false_negatives = support.double() - true_positives
    return {
        "precision": _ratio_or_zero(true_positives, predicted_counts),
        "recall": _ratio_or_zero(true_positives, support.double()),
        "f1": _ratio_or_zero(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
        "support": support.long(),
    }


def macro_f1(confusion: Tensor) -> float:
    r"""The unweighted mean of the per-class F1 scores: every class counts the same, however rare.

    .. math::
        \text{macro-}F_1 = \frac{1}{C} \sum_{c=1}^{C} F_{1,c}

    All ``C`` classes of the matrix count, including a class absent from both targets and predictions
    (its F1 is 0). This is the mean of the F1 scores, not the F1 of the mean precision and mean recall.

    Shapes: ``confusion`` ``(C, C)``.
    """
    return precision_recall_f1(confusion)["f1"].mean().item()


def perplexity(mean_nll: float | Tensor) -> float:
    r"""The exponential of the mean negative log-likelihood per token (the cross-entropy in nats).

    .. math::
        \mathrm{PPL} = \exp\Bigl(-\frac{1}{T}\sum_{t=1}^{T} \log p(x_t \mid x_{<t})\Bigr)

    A model that spreads its probability evenly over :math:`k` tokens has mean NLL :math:`\log k` and
    perplexity :math:`k`: "as unsure as a fair choice among :math:`k`". A uniform guess over a vocabulary of
    :math:`V` gives :math:`V`; a perfect model gives 1. A diverged loss too large for ``exp`` gives ``inf``.
    """
    mean_nll = float(mean_nll)
    try:
        return math.exp(mean_nll)
    except OverflowError:  # mean_nll > ~709: the true value exceeds the largest float
        return math.inf


def classification_report(confusion: Tensor, labels: list[str]) -> str:
    """A plain-text table: precision, recall, F1 and support per class, then accuracy and the macro averages.

    The ``macro avg`` row holds the mean precision, the mean recall and the macro-F1 (:func:`macro_f1`);
    the ``accuracy`` row holds the accuracy in the F1 column. ``labels[c]`` names row/column ``c``. Example::

                    precision    recall        f1   support
        comedy          0.667     0.500     0.571         4
        history         0.500     0.667     0.571         3
        tragedy         0.000     0.000     0.000         1

        accuracy                            0.500         8
        macro avg       0.389     0.389     0.381         8
    """
    confusion = _check_confusion("classification_report", confusion)
    if len(labels) != confusion.shape[0]:
        raise MetricsError(
            f"classification_report: got {len(labels)} labels for a {confusion.shape[0]}-class confusion matrix"
        )
    scores = precision_recall_f1(confusion)
    total = int(confusion.sum())
    accuracy_value = confusion.diagonal().sum().item() / total if total else 0.0
    name_width = max(len(name) for name in [*labels, "accuracy", "macro avg"]) + 2
    blank = " " * 10

    def row(name: str, cells: str) -> str:
        return f"{name:<{name_width}}{cells}".rstrip()

    lines = [row("", "".join(f"{heading:>10}" for heading in ("precision", "recall", "f1", "support")))]
    for c, label in enumerate(labels):
        precision, recall, f1 = (scores[key][c].item() for key in ("precision", "recall", "f1"))
        lines.append(row(label, f"{precision:>10.3f}{recall:>10.3f}{f1:>10.3f}{scores['support'][c].item():>10d}"))
    lines.append("")
    lines.append(row("accuracy", f"{blank}{blank}{accuracy_value:>10.3f}{total:>10d}"))
    mean_precision, mean_recall = scores["precision"].mean().item(), scores["recall"].mean().item()
    macro = scores["f1"].mean().item()
    lines.append(row("macro avg", f"{mean_precision:>10.3f}{mean_recall:>10.3f}{macro:>10.3f}{total:>10d}"))
    return "\n".join(lines) + "\n"
