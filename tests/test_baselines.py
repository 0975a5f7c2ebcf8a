"""The TF-IDF + logistic-regression baseline: a task it must solve, and C chosen on validation alone."""

from __future__ import annotations

import inspect

from minipt.jobs import baselines
from minipt.jobs.baselines import C_GRID, choose_c, scores, tfidf_baseline


def test_scores_by_hand() -> None:
    # truth a, a, b, b; predicted a, b, b, b: accuracy 3/4; F1(a) = 2 * 1 * 0.5 / 1.5 = 2/3, F1(b) = 2 * 2/3 * 1 /
    # (5/3) = 0.8; macro-F1 = (2/3 + 0.8) / 2 = 0.7333
    examples = [("x", "a"), ("y", "a"), ("z", "b"), ("w", "b")]
    result = scores(["a", "b", "b", "b"], examples, ["a", "b"])
    assert result["accuracy"] == 0.75 and abs(result["macro_f1"] - 11 / 15) < 1e-6


def test_baseline_learns_a_word_rule_with_unequal_classes() -> None:
    # label "verse" iff the text contains "thee"; 3 verse for every prose example, so the class weights matter
    train = [(f"i love thee well {i}", "verse") for i in range(12)] + [(f"the plain truth {i}", "prose")
                                                                       for i in range(4)]
    validation = [("fare thee well", "verse"), ("the truth", "prose")]
    test = [("i know thee", "verse"), ("plain words", "prose"), ("thee and me", "verse")]
    result = tfidf_baseline(train, validation, test, ["prose", "verse"], seed=0)
    assert result["test_accuracy"] == 1.0 and result["test_macro_f1"] == 1.0
    assert result["c"] in C_GRID and set(result["val_macro_f1"]) == set(C_GRID)
    assert result["best_val_macro_f1"] == max(result["val_macro_f1"].values())


def test_choose_c_reads_no_test_data() -> None:
    # the selection helper's signature has no test split, and the baseline hands it only train and validation
    assert list(inspect.signature(choose_c).parameters) == ["train", "validation", "labels", "grid", "seed"]
    seen = []

    def spy(train, validation, labels, grid=C_GRID, seed=0):
        seen.append(list(train) + list(validation))
        return choose_c(train, validation, labels, grid, seed)

    train = [("good fine", "pos"), ("bad awful", "neg")] * 3
    validation = [("good", "pos"), ("bad", "neg")]
    test = [("SECRET TEST TEXT good", "pos"), ("SECRET TEST TEXT bad", "neg")]
    original, baselines.choose_c = baselines.choose_c, spy
    try:
        tfidf_baseline(train, validation, test, ["neg", "pos"], grid=(1.0, 10.0))
    finally:
        baselines.choose_c = original
    assert seen and not any("SECRET" in text for text, _ in seen[0])
