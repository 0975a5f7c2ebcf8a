"""``minipt.exercises.check``: the one-line self-check the notebooks' exercises use."""

import torch

from minipt.exercises import check


def test_correct_within_tolerance(capsys) -> None:
    assert check(0.50004, expected=0.5, tol=1e-4) is True
    assert capsys.readouterr().out == "answer: correct\n"


def test_wrong_answer_shows_the_expected_value(capsys) -> None:
    assert check(0.6, expected=0.5, tol=1e-3, name="dL/dx") is False
    assert capsys.readouterr().out == "dL/dx: not yet: expected 0.5 (within 0.001), got 0.6\n"


def test_tensors_lists_and_shapes(capsys) -> None:
    assert check(torch.tensor([1.0, 2.0]), expected=[1.0, 2.0 + 5e-5]) is True
    assert check([1.0, 2.0, 3.0], expected=[1.0, 2.0]) is False
    assert "expected shape (2,), got (3,)" in capsys.readouterr().out


def test_unanswered_and_nan_are_not_correct(capsys) -> None:
    assert check(..., expected=1.0) is False
    assert "not answered yet" in capsys.readouterr().out
    assert check(float("nan"), expected=1.0) is False
