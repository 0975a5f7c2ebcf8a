"""minipt.metrics: a 3-class, 8-example case worked out by hand, undefined ratios reported as 0, and agreement
with a plain-Python recount (pair by pair, no tensors) on random data.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from minipt.metrics import (
    MetricsError,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    perplexity,
    precision_recall_f1,
)

# The worked example: 8 plays of 3 genres (0 comedy, 1 history, 2 tragedy).
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2])
PREDICTIONS = torch.tensor([0, 0, 1, 2, 1, 1, 0, 1])
LABELS = ["comedy", "history", "tragedy"]
# Pairs (true, predicted): (0,0) (0,0) (0,1) (0,2) | (1,1) (1,1) (1,0) | (2,1)
#   true 0 -> predicted 0 twice, 1 once, 2 once:  row [2, 1, 1]
#   true 1 -> predicted 1 twice, 0 once:          row [1, 2, 0]
#   true 2 -> predicted 1 once:                   row [0, 1, 0]
CONFUSION = [[2, 1, 1], [1, 2, 0], [0, 1, 0]]


def test_accuracy_worked_example():
    # correct: positions 0, 1 (comedy), 4, 5 (history) -> 4 of 8
    assert accuracy(PREDICTIONS, TARGETS) == 0.5


def test_confusion_matrix_worked_example_rows_are_true_class():
    confusion = confusion_matrix(PREDICTIONS, TARGETS, num_classes=3)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == CONFUSION
    # the one tragedy (true 2) was called history (predicted 1): row 2, column 1
    assert confusion[2, 1].item() == 1 and confusion[1, 2].item() == 0


def test_precision_recall_f1_worked_example():
    scores = precision_recall_f1(torch.tensor(CONFUSION))
    # column sums (times predicted): [3, 4, 1];  row sums (support): [4, 3, 1];  diagonal (TP): [2, 2, 0]
    # precision = TP / column sum: 2/3, 2/4, 0/1
    # recall    = TP / row sum:    2/4, 2/3, 0/1
    # F1 = 2TP / (2TP + FP + FN):  class 0: 4 / (4 + 1 + 2) = 4/7   (harmonic mean of 2/3 and 1/2: (2/3)/(7/6) = 4/7)
    #                              class 1: 4 / (4 + 2 + 1) = 4/7;  class 2: 0 / (0 + 1 + 1) = 0
    torch.testing.assert_close(scores["precision"], torch.tensor([2 / 3, 1 / 2, 0.0], dtype=torch.float64))
    torch.testing.assert_close(scores["recall"], torch.tensor([1 / 2, 2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(scores["f1"], torch.tensor([4 / 7, 4 / 7, 0.0], dtype=torch.float64))
    assert scores["support"].tolist() == [4, 3, 1]


def test_macro_f1_worked_example_and_an_absent_class():
    # (4/7 + 4/7 + 0) / 3 = 8/21
    assert macro_f1(torch.tensor(CONFUSION)) == pytest.approx(8 / 21, abs=1e-12)
    # A 4th class that never occurs and is never predicted: all its ratios are 0/0 -> 0, and it still counts
    # in the mean: (4/7 + 4/7 + 0 + 0) / 4 = 2/7
    confusion = confusion_matrix(PREDICTIONS, TARGETS, num_classes=4)
    assert confusion[3].tolist() == [0, 0, 0, 0] and confusion[:, 3].tolist() == [0, 0, 0, 0]
    scores = precision_recall_f1(confusion)
    assert scores["precision"][3].item() == 0.0 and scores["recall"][3].item() == 0.0 and scores["f1"][3] == 0.0
    assert macro_f1(confusion) == pytest.approx(2 / 7, abs=1e-12)


def test_a_class_never_predicted_has_precision_zero_not_nan():
    # targets [0, 1], predictions [0, 0]: class 1 is never predicted -> precision 0/0 := 0, recall 0/1 = 0
    # class 0: precision 1/2, recall 1/1, F1 = 2*1 / (2*1 + 1 + 0) = 2/3
    scores = precision_recall_f1(confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 1]), num_classes=2))
    torch.testing.assert_close(scores["precision"], torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(scores["recall"], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(scores["f1"], torch.tensor([2 / 3, 0.0], dtype=torch.float64))


def test_perplexity_is_exp_of_the_mean_nll():
    # a uniform guess over 4 tokens: mean NLL = -log(1/4) = log 4 -> perplexity 4
    assert perplexity(math.log(4)) == pytest.approx(4.0, rel=1e-12)
    assert perplexity(0.0) == 1.0  # a perfect model
    assert perplexity(torch.tensor(math.log(65.0))) == pytest.approx(65.0, rel=1e-6)  # a tensor works too
    assert perplexity(1000.0) == math.inf  # exp(1000) overflows a float


def test_classification_report_worked_example():
    # mean precision (2/3 + 1/2 + 0)/3 = 7/18 = 0.3889; mean recall (1/2 + 2/3 + 0)/3 = 7/18; macro-F1 8/21 = 0.3810
    # name column: the longest name "macro avg" (9) + 2 = 11 wide; then four right-aligned 10-wide columns
    expected = (
        "            precision    recall        f1   support\n"
        "comedy          0.667     0.500     0.571         4\n"
        "history         0.500     0.667     0.571         3\n"
        "tragedy         0.000     0.000     0.000         1\n"
        "\n"
        "accuracy                            0.500         8\n"
        "macro avg       0.389     0.389     0.381         8\n"
    )
    assert classification_report(torch.tensor(CONFUSION), LABELS) == expected


def recount(predictions: list[int], targets: list[int], num_classes: int) -> dict:
    """The same metrics from the definitions, one example at a time, with plain Python ints."""
    true_positives = [0] * num_classes
    predicted = [0] * num_classes
    actual = [0] * num_classes
    for predicted_class, true_class in zip(predictions, targets, strict=True):
        predicted[predicted_class] += 1
        actual[true_class] += 1
        if predicted_class == true_class:
            true_positives[true_class] += 1
    precision = [tp / p if p else 0.0 for tp, p in zip(true_positives, predicted, strict=True)]
    recall = [tp / a if a else 0.0 for tp, a in zip(true_positives, actual, strict=True)]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall, strict=True)]  # harmonic mean
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for predicted_class, true_class in zip(predictions, targets, strict=True):
        matrix[true_class][predicted_class] += 1
    return {
        "confusion": matrix,
        "accuracy": sum(true_positives) / len(targets),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": actual,
        "macro_f1": sum(f1) / num_classes,
    }


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_a_plain_python_recount(seed):
    generator = random.Random(seed)
    num_classes = generator.randint(2, 6)
    size = generator.randint(1, 60)
    targets = [generator.randrange(num_classes) for _ in range(size)]
    # mostly right, sometimes wrong; the last class is never predicted, so its precision is 0/0
    last = num_classes - 1
    predictions = [t if t != last and generator.random() < 0.6 else generator.randrange(last) for t in targets]
    expected = recount(predictions, targets, num_classes)
    assert last not in predictions

    confusion = confusion_matrix(torch.tensor(predictions), torch.tensor(targets), num_classes)
    scores = precision_recall_f1(confusion)
    assert confusion.tolist() == expected["confusion"]
    assert accuracy(torch.tensor(predictions), torch.tensor(targets)) == pytest.approx(expected["accuracy"], abs=1e-12)
    for key in ("precision", "recall", "f1"):
        assert scores[key].tolist() == pytest.approx(expected[key], abs=1e-12)
    assert scores["support"].tolist() == expected["support"]
    assert macro_f1(confusion) == pytest.approx(expected["macro_f1"], abs=1e-12)


def test_bad_inputs_get_one_line_errors_naming_the_argument():
    with pytest.raises(MetricsError, match=r"accuracy: predictions and targets must both have shape \(N,\)"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(MetricsError, match="accuracy: no examples"):
        accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    with pytest.raises(MetricsError, match=r"confusion_matrix: targets must lie in \[0, 3\), got values from 0 to 3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(MetricsError, match=r"confusion_matrix: predictions must lie in \[0, 2\)"):
        confusion_matrix(torch.tensor([-1, 1]), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(MetricsError, match=r"precision_recall_f1: confusion must be a square \(C, C\) matrix"):
        precision_recall_f1(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(MetricsError, match="classification_report: got 2 labels for a 3-class confusion matrix"):
        classification_report(torch.tensor(CONFUSION), ["comedy", "history"])
