"""The bag-of-words baseline: its features by hand, and a task it must solve."""

from __future__ import annotations

import torch

from minipt.jobs.baselines import bag_of_words, bag_of_words_baseline, words


def test_words_and_presence_features_by_hand() -> None:
    # "Thou art, thou ART!" -> words thou, art, thou, art (lower-cased, punctuation dropped);
    # vocabulary {thou: 0, art: 1, king: 2}: presence (not counts) -> [1, 1, 0]; "o'er the king" -> [0, 0, 1]
    # ("o'er" and "the" are not in the vocabulary and are dropped).
    assert words("Thou art, thou ART!") == ["thou", "art", "thou", "art"]
    vocabulary = {"thou": 0, "art": 1, "king": 2}
    features = bag_of_words(["Thou art, thou ART!", "o'er the king"], vocabulary)
    assert torch.equal(features, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def test_baseline_learns_a_word_rule_with_unequal_classes() -> None:
    # label "verse" iff the text contains "thee"; 3 verse for every prose example, so the class weights matter
    train = [("i love thee well", "verse")] * 12 + [("the plain truth of it", "prose")] * 4
    validation = [("fare thee well", "verse"), ("the truth", "prose")]
    test = [("i know thee", "verse"), ("plain words", "prose"), ("thee and me", "verse")]
    result = bag_of_words_baseline(train, validation, test, ["prose", "verse"], seed=0, steps=50)
    assert result["test_accuracy"] == 1.0 and result["test_macro_f1"] == 1.0
    assert result["trainable_params"] == (len(set(" ".join(t for t, _ in train).split())) + 1) * 2
