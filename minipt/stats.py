r"""Numbers over seeds: the mean and spread of a score, and the paired 95% t-interval of a difference.

A run's test score depends on its seed (the initialisation, the batches, the few labels drawn). With :math:`n`
seeds, each score is summarised by its mean :math:`\bar x` and sample standard deviation
:math:`s = \sqrt{\sum_i (x_i - \bar x)^2 / (n - 1)}`.

Two rows run on the same seeds are compared **paired**: :math:`d_i = a_i - b_i` removes what the seed does to both
(the same labels, the same split). The 95% interval of the mean difference is

.. math::
    \bar d \pm t_{0.975,\, n-1} \, \frac{s_d}{\sqrt n},

with :math:`t_{0.975,\nu}` the 97.5% quantile of Student's t distribution with :math:`\nu = n - 1` degrees of
freedom. The difference is *distinguishable from zero* when the interval does not contain 0.

The t quantile is computed here by hand: the density

.. math:: f_\nu(x) = \frac{\Gamma(\frac{\nu+1}{2})}{\sqrt{\nu\pi}\,\Gamma(\frac{\nu}{2})}
          \Bigl(1 + \frac{x^2}{\nu}\Bigr)^{-\frac{\nu+1}{2}}

is integrated with Simpson's rule, :math:`F_\nu(x) = \tfrac12 + \int_0^x f_\nu`, and :math:`F_\nu(t) = p` is
solved by bisection.

Worked example (3 seeds): differences 0.116, 0.076, 0.073 -> mean 0.0883, deviations 0.0277, -0.0123, -0.0153,
:math:`s_d = \sqrt{(0.000765 + 0.000152 + 0.000235)/2} = 0.0240`, :math:`t_{0.975,2} = 4.303`, half-width
:math:`4.303 \cdot 0.0240 / \sqrt 3 = 0.0596`: the interval [0.029, 0.148] excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_std", "t_pdf", "t_cdf", "t_quantile", "paired_interval"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (``n - 1`` in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std: no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (n - 1))


def t_pdf(x: float, df: float) -> float:
    r"""Student's t density :math:`f_\nu(x)` (formula in the module docstring), via log-gamma for large ``df``."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: float, intervals: int = 2000) -> float:
    r""":math:`F_\nu(x) = \frac12 + \int_0^x f_\nu(u)\,du`, the integral by Simpson's rule on ``intervals`` (even)
    equal pieces: :math:`\frac{h}{3}(f_0 + 4f_1 + 2f_2 + \dots + 4f_{m-1} + f_m)`. Symmetric: ``F(-x) = 1 - F(x)``."""
    if x < 0:
        return 1.0 - t_cdf(-x, df, intervals)
    h = x / intervals
    total = t_pdf(0.0, df) + t_pdf(x, df)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * t_pdf(i * h, df)
    return 0.5 + total * h / 3


def t_quantile(p: float, df: float) -> float:
    r"""The ``p`` quantile :math:`t_{p,\nu}` of Student's t with ``df`` degrees of freedom, by bisection on
    :func:`t_cdf` (to about 1e-9). E.g. ``t_quantile(0.975, 2)`` = 4.303, ``t_quantile(0.975, 1)`` = 12.706."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # bracket the quantile
        low, high = high, 2 * high
    while high - low > 1e-9 * max(1.0, high):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    r"""The paired difference ``a - b`` over seeds (``a[i]`` and ``b[i]`` from the same seed): its per-seed
    ``differences``, ``mean``, ``std``, the ``level`` t-interval ``low``, ``high`` of the mean, and
    ``distinguishable`` (the interval excludes 0). With one seed there is no interval (``low``, ``high`` None)."""
    if len(a) != len(b):
        raise ValueError(f"paired_interval: {len(a)} and {len(b)} values; a pair needs one of each per seed")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean, std = mean_std(differences)
    n = len(differences)
    if n < 2:
        return {"differences": differences, "mean": mean, "std": std, "n": n, "low": None, "high": None,
                "distinguishable": None}
    half = t_quantile(1 - (1 - level) / 2, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    return {"differences": differences, "mean": mean, "std": std, "n": n, "low": low, "high": high,
            "distinguishable": low > 0 or high < 0}
