"""The study's statistics against hand computations, scipy and simulated coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from entropy_dynamics.study.statistics import (
    compare_to_baseline,
    hierarchical_bootstrap,
    holm,
    paired_difference,
    pass_at_k_matrix,
    percentile_bootstrap,
    t_interval,
)
from entropy_dynamics.training.evaluate import pass_at_k


def test_t_interval_by_hand() -> None:
    # mean 2, s = 1, t_{0.975, 2} = 4.3027: 2 ± 4.3027 / √3 = 2 ± 2.4841
    interval = t_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(-0.48414, abs=1e-4)
    assert interval.high == pytest.approx(4.48414, abs=1e-4)
    single = t_interval([0.5])
    assert single.mean == 0.5 and math.isnan(single.low) and math.isnan(single.high)


def test_paired_difference_matches_scipy_ttest_rel() -> None:
    method = [0.70, 0.74, 0.69, 0.80, 0.77]
    baseline = [0.65, 0.70, 0.71, 0.72, 0.70]
    interval, p = paired_difference(method, baseline)
    reference = scipy_stats.ttest_rel(method, baseline)
    assert p == pytest.approx(reference.pvalue, rel=1e-12)
    low, high = reference.confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-12)
    assert interval.mean == pytest.approx(np.mean(np.subtract(method, baseline)))


def test_paired_difference_constant_shift_and_errors() -> None:
    interval, p = paired_difference([1.0, 2.0], [0.5, 1.5])  # every seed +0.5: certain
    assert interval.mean == 0.5 and p == 0.0
    assert paired_difference([1.0, 2.0], [1.0, 2.0])[1] == 1.0
    with pytest.raises(ValueError, match="one baseline value each"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.nan])


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, math.nan, 0.01])  # NaN ignored: m = 2
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])


def test_pass_at_k_matrix_equals_the_scalar_estimator() -> None:
    counts = np.array([[0, 1, 5], [8, 16, 3]])
    for k in (1, 4, 16):
        expected = [[pass_at_k(16, int(c), k) for c in row] for row in counts]
        assert pass_at_k_matrix(counts, 16, k) == pytest.approx(np.array(expected), abs=1e-12)
    with pytest.raises(ValueError, match="k must lie"):
        pass_at_k_matrix(counts, 16, 17)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_t_interval_covers_at_its_level_on_normal_data(n: int) -> None:
    rng = np.random.default_rng(n)
    draws = rng.normal(0.3, 0.05, size=(4000, n))  # true mean 0.3
    covered = [t_interval(row).low <= 0.3 <= t_interval(row).high for row in draws]
    assert abs(np.mean(covered) - 0.95) <= 0.02


def test_percentile_bootstrap_undercovers_at_five_seeds() -> None:
    rng = np.random.default_rng(5)
    draws = rng.normal(0.3, 0.05, size=(4000, 5))
    covered = []
    for i, row in enumerate(draws):
        interval = percentile_bootstrap(row, resamples=1000, seed=i)
        covered.append(interval.low <= 0.3 <= interval.high)
    coverage = float(np.mean(covered))
    assert coverage < 0.90  # ~0.84 at n = 5: why the study reports t intervals
    ratios = []
    for row in draws[:200]:
        t, boot = t_interval(row), percentile_bootstrap(row, resamples=1000)
        ratios.append((boot.high - boot.low) / (t.high - t.low))
    assert np.mean(ratios) < 0.75  # ~0.62: z / t_4 and the resampling of five values


def test_hierarchical_bootstrap_sees_the_problem_noise() -> None:
    rng = np.random.default_rng(0)
    seeds_only = np.repeat(rng.normal(0.5, 0.02, size=(8, 1)), 200, axis=1)  # no problem noise
    with_problems = seeds_only + rng.normal(0.0, 0.3, size=(8, 200))
    narrow = hierarchical_bootstrap(seeds_only, resamples=2000)
    wide = hierarchical_bootstrap(with_problems, resamples=2000)
    assert wide.high - wide.low > narrow.high - narrow.low
    assert narrow.low <= seeds_only.mean() <= narrow.high
    constant = hierarchical_bootstrap(np.full((3, 5), 0.25), resamples=100)
    assert (constant.low, constant.mean, constant.high) == pytest.approx((0.25, 0.25, 0.25))


def test_hierarchical_bootstrap_pairs_method_and_baseline() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, size=(8, 100))  # problems differ a lot
    method = base + 0.05  # the same problems, +0.05 each
    paired = hierarchical_bootstrap(method, base, resamples=500)
    assert paired.mean == pytest.approx(0.05)
    assert paired.high - paired.low == pytest.approx(0.0, abs=1e-12)  # pairing removes it all
    with pytest.raises(ValueError, match="baseline must have"):
        hierarchical_bootstrap(method, base[:, :10])


def test_compare_to_baseline_table() -> None:
    values = {
        "grpo": {"pass@16": {0: 0.60, 1: 0.62, 2: 0.61}, "entropy": {0: 0.2, 1: 0.21, 2: 0.2}},
        "clip_b": {"pass@16": {0: 0.70, 1: 0.71, 2: 0.69, 3: 0.9}, "entropy": {0: 0.3, 1: 0.3}},
    }
    scores = {
        "grpo": {"pass@16": {s: [0.5, 0.7] for s in range(3)}},
        "clip_b": {"pass@16": {s: [0.6, 0.8] for s in range(3)}},
    }
    cells = compare_to_baseline(values, "grpo", scores)
    by_metric = {c.metric: c for c in cells}
    pass16 = by_metric["pass@16"]
    assert pass16.difference.n == 3  # seed 3 has no baseline partner
    assert pass16.difference.mean == pytest.approx(0.09)
    assert pass16.bootstrap is not None and pass16.bootstrap.mean == pytest.approx(0.1)
    raw = [c.p_value for c in cells]
    assert [c.p_adjusted for c in cells] == pytest.approx(holm(raw))
    assert by_metric["entropy"].bootstrap is None
    with pytest.raises(ValueError, match="baseline"):
        compare_to_baseline(values, "nope")
