r"""The floor a pretrained model must beat: TF-IDF n-grams and a logistic regression, the practitioner's first try.

Features (scikit-learn's ``TfidfVectorizer``, twice, side by side): word 1- and 2-grams, and character 2- to
5-grams taken within word boundaries (``char_wb``), each weighted

.. math:: x_{t} = (1 + \log \operatorname{tf}_t) \cdot \operatorname{idf}_t, \qquad
          \operatorname{idf}_t = 1 + \log \frac{1 + N}{1 + \operatorname{df}_t}

(sublinear term frequency; ``df`` counted on the labelled training texts only) and each block scaled to unit l2
norm. A class-balanced logistic regression on them (each class weighted :math:`N / (C N_c)`, so every class has the
same total weight, as the finetuning runs' balanced batches give it), with inverse regularisation strength
:math:`C` chosen from :data:`C_GRID` by validation macro-F1. Test is scored once, with the chosen :math:`C`.

This is not what minipt teaches, so it uses the well-kept library rather than a hand-written copy.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline

from minipt.metrics import accuracy, confusion_matrix, macro_f1

__all__ = ["C_GRID", "tfidf_features", "tfidf_classifier", "choose_c", "tfidf_baseline", "scores"]

Example = tuple[str, str]  # (text, label)
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse regularisation strengths tried on validation


def tfidf_features() -> FeatureUnion:
    """Word 1-2-grams and within-word character 2-5-grams, sublinear tf-idf, each block l2-normalised."""
    return FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, norm="l2")),
        ("characters", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, norm="l2")),
    ])


def tfidf_classifier(c: float, seed: int = 0):
    """The pipeline: :func:`tfidf_features`, then a class-balanced logistic regression of strength ``c``."""
    regression = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    return make_pipeline(tfidf_features(), regression)


def scores(predicted: Sequence[str], examples: Sequence[Example], labels: list[str]) -> dict:
    """``accuracy`` and ``macro_f1`` of predicted label names against the examples' labels (minipt's metrics)."""
    predictions = torch.tensor([labels.index(label) for label in predicted])  # (N,)
    targets = torch.tensor([labels.index(label) for _, label in examples])  # (N,)
    return {"accuracy": accuracy(predictions, targets),
            "macro_f1": macro_f1(confusion_matrix(predictions, targets, len(labels)))}


def fit(train: Sequence[Example], c: float, seed: int):
    """The pipeline of strength ``c`` fitted on ``train`` (a regression that stops at ``max_iter`` is kept)."""
    model = tfidf_classifier(c, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit([text for text, _ in train], [label for _, label in train])
    return model


def choose_c(train: Sequence[Example], validation: Sequence[Example], labels: list[str],
             grid: Sequence[float] = C_GRID, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The selection, which sees training and validation examples only: fit each ``C`` of ``grid`` on ``train``,
    score validation macro-F1; returns the best ``C`` (the smallest of ties: the strongest regularisation) and
    every ``C``'s validation macro-F1."""
    validation_f1 = {}
    for c in grid:
        model = fit(train, c, seed)
        validation_f1[c] = scores(model.predict([text for text, _ in validation]), validation, labels)["macro_f1"]
    best = max(grid, key=lambda c: (validation_f1[c], -c))
    return best, validation_f1


def tfidf_baseline(train: Sequence[Example], validation: Sequence[Example], test: Sequence[Example],
                   labels: list[str], seed: int = 0, grid: Sequence[float] = C_GRID) -> dict:
    """Choose ``C`` on validation (:func:`choose_c`), refit on ``train`` with it, score ``test`` once.

    Returns ``test_accuracy``, ``test_macro_f1``, ``c`` (the choice), ``val_macro_f1`` (per ``C``),
    ``best_val_macro_f1``, ``trainable_params`` (weights and biases of the regression) and ``wall_seconds``.
    """
    start = time.perf_counter()
    c, validation_f1 = choose_c(train, validation, labels, grid, seed)
    model = fit(train, c, seed)
    test_scores = scores(model.predict([text for text, _ in test]), test, labels)
    regression = model[-1]
    return {
        "test_accuracy": test_scores["accuracy"],
        "test_macro_f1": test_scores["macro_f1"],
        "c": c,
        "val_macro_f1": validation_f1,
        "best_val_macro_f1": validation_f1[c],
        "trainable_params": int(regression.coef_.size + regression.intercept_.size),
        "wall_seconds": time.perf_counter() - start,
    }
