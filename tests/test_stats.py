"""minipt.stats: mean ± std, Student's t quantile against printed tables, and the paired t-interval by hand."""

from __future__ import annotations

import math

import pytest

from minipt.stats import mean_std, paired_interval, t_cdf, t_quantile


def test_mean_and_sample_std_by_hand() -> None:
    # 1, 2, 3, 6: mean 3, squared deviations 4 + 1 + 0 + 9 = 14, sample variance 14 / 3
    assert mean_std([1.0, 2.0, 3.0, 6.0]) == pytest.approx((3.0, math.sqrt(14 / 3)))
    assert mean_std([0.5]) == (0.5, 0.0)


@pytest.mark.parametrize("p, df, expected", [
    # the printed tables of Student's t (two-sided 95%: p = 0.975), to 4 decimals
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 3, 3.1824), (0.975, 4, 2.7764), (0.975, 9, 2.2622),
    (0.975, 30, 2.0423), (0.975, 120, 1.9799), (0.95, 5, 2.0150), (0.995, 10, 3.1693),
])
def test_t_quantile_matches_the_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-4)


def test_t_cdf_closed_forms() -> None:
    # df = 1 is the Cauchy distribution, F(x) = 1/2 + arctan(x) / pi; df = 2: F(x) = 1/2 + x / (2 sqrt(2 + x^2))
    for x in (0.3, 1.0, 4.0):
        assert t_cdf(x, 1) == pytest.approx(0.5 + math.atan(x) / math.pi, abs=1e-9)
        assert t_cdf(-x, 2) == pytest.approx(0.5 - x / (2 * math.sqrt(2 + x * x)), abs=1e-9)


def test_t_quantile_agrees_with_torch_student_t() -> None:
    torch = pytest.importorskip("torch")
    for df in (2, 7):
        x = t_quantile(0.9, df)
        # integrate torch's StudentT density (the oracle) from 0 to x with a fine trapezoid
        grid = torch.linspace(0, x, 20001, dtype=torch.float64)
        density = torch.distributions.StudentT(float(df)).log_prob(grid).exp()
        assert 0.5 + torch.trapezoid(density, grid).item() == pytest.approx(0.9, abs=1e-6)


def test_paired_interval_worked_example() -> None:
    # differences 0.116, 0.076, 0.073 (module docstring): mean 0.0883, s_d 0.0240, t(0.975, 2) = 4.303,
    # half-width 4.303 * 0.0240 / sqrt(3) = 0.0596 -> [0.029, 0.148], which excludes 0
    result = paired_interval([0.655, 0.644, 0.607], [0.539, 0.568, 0.534])
    assert result["differences"] == pytest.approx([0.116, 0.076, 0.073])
    assert result["mean"] == pytest.approx(0.08833, abs=1e-5)
    assert result["std"] == pytest.approx(0.02400, abs=1e-4)
    assert (result["low"], result["high"]) == pytest.approx((0.0287, 0.1479), abs=2e-4)
    assert result["distinguishable"] is True


def test_paired_interval_containing_zero_and_one_seed() -> None:
    # differences +0.10, -0.05, +0.02: mean 0.0233, the interval spans 0
    result = paired_interval([0.6, 0.5, 0.52], [0.5, 0.55, 0.5])
    assert result["low"] < 0 < result["high"] and result["distinguishable"] is False
    single = paired_interval([0.6], [0.5])
    assert single["low"] is None and single["distinguishable"] is None and single["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="per seed"):
        paired_interval([0.1, 0.2], [0.1])
