"""Self-checks for the notebooks' exercises: one line that says whether an answer is right.

A student who works an exercise by hand writes the number into the notebook and calls ``check``::

    from minipt.exercises import check
    check(my_answer, expected=0.5, tol=1e-3)   # prints "correct" or what was expected

``check`` compares elementwise (scalars, lists and tensors alike) and never raises on a wrong answer:
an exercise is there to be tried again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Number = float | int | Sequence[float] | torch.Tensor


def _as_tensor(value: Number) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).detach().cpu()


def check(answer: Number, expected: Number, tol: float = 1e-4, name: str = "answer") -> bool:
    r"""Print ``correct`` when ``answer`` equals ``expected`` within ``tol``, else what was expected.

    Correct means :math:`|\text{answer}_i - \text{expected}_i| \le \text{tol}` for every element ``i``
    (and the same shape). Returns ``True`` when correct, so a solutions notebook can ``assert check(...)``.
    """
    if answer is None or answer is Ellipsis:
        print(f"{name}: not answered yet (replace the ... with your answer)")
        return False
    got, want = _as_tensor(answer), _as_tensor(expected)
    if got.shape != want.shape:
        print(f"{name}: not yet: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        return False
    distance = (got - want).abs().max().item() if want.numel() else 0.0
    if math.isfinite(distance) and distance <= tol:
        print(f"{name}: correct")
        return True
    print(f"{name}: not yet: expected {_show(want)} (within {tol:g}), got {_show(got)}")
    return False


def _show(value: torch.Tensor) -> str:
    if value.dim() == 0:
        return f"{value.item():.6g}"
    return str([round(number, 6) for number in value.flatten().tolist()])
