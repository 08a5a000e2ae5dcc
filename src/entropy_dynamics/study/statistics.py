"""Statistics of a study's claims: intervals over seeds and problems, paired differences, Holm.

A claim in ``docs/results.md`` compares methods over a handful of seeds (one run each) on a fixed
test set of problems. Two sources of noise enter every number: the seed (training and sampling
randomness) and the choice of problems. This module gives one answer to each question a report
asks, and every report and results script uses it:

- :func:`t_interval`: a method's mean over seeds with its Student-t interval. The percentile
  bootstrap over seeds (:func:`percentile_bootstrap`, kept to show why it is not used) covers the
  true mean only ~84 % of the time at n = 5 for a nominal 95 %: with few seeds its interval is
  too narrow by the factor ``z / t_{n-1}`` and by resampling only the values seen.
- :func:`paired_difference`: a method minus the baseline, paired by seed (same seed, same data
  order and same test problems), with a paired-t interval and two-sided p-value.
- :func:`hierarchical_bootstrap`: for Pass@k / pass@1 on a problem set, a two-level bootstrap that
  resamples seeds and, within each drawn seed, problems (paired: the same draws for method and
  baseline), so that the sampling noise of a finite test set is in the interval too. It is
  reported beside the t interval, which sees the seeds only.
- :func:`holm`: Holm–Bonferroni adjusted p-values over the comparisons of one table (a table of
  ~35 cells at α = 0.05 has ~1.75 false positives when nothing differs).
- :func:`compare_to_baseline`: all of the above for one table.

Conventions: 95 % intervals; a difference is a *claim* when its Holm-adjusted p-value is below
0.05; every function takes plain sequences and returns plain floats (NaN where undefined, e.g.
one seed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Comparison",
    "Interval",
    "compare_to_baseline",
    "hierarchical_bootstrap",
    "holm",
    "paired_difference",
    "pass_at_k_matrix",
    "percentile_bootstrap",
    "t_interval",
]

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval, over ``n`` units (seeds)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def format(self, digits: int = 3, signed: bool = False) -> str:
        """``0.123 [0.100, 0.146]`` (``+0.123 [...]`` when ``signed``)."""
        spec = f"{'+' if signed else ''}.{digits}f"
        if math.isnan(self.low):
            return format(self.mean, spec)
        return f"{self.mean:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def _values(values: Sequence[float], name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: need a non-empty list of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: every value must be finite, got {array.tolist()}")
    return array


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` (one per seed) with the Student-t interval
    ``mean ± t_{(1+c)/2, n-1} · s / √n`` (``s`` the sample standard deviation); NaN bounds for
    one value.

    Example: ``t_interval([1, 2, 3])`` is ``2 ± 4.303 · 1 / √3 = [-0.484, 4.484]``.
    """
    x = _values(values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def percentile_bootstrap(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean with the percentile-bootstrap interval over ``values`` (resampled with replacement).

    Too narrow over few seeds (module docstring); here to be compared, not to report claims.
    """
    x = _values(values)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), x.size)


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[Interval, float]:
    """``values - baseline`` paired element by element (same seed): the mean difference with its
    paired-t interval, and the two-sided p-value of "no difference" (NaN for one pair)."""
    x, y = _values(values, "values"), _values(baseline, "baseline")
    if x.shape != y.shape:
        raise ValueError(f"paired values need one baseline value each: {x.size} vs {y.size}")
    difference = x - y  # (n,)
    interval = t_interval(difference, confidence)
    if difference.size < 2:
        return interval, math.nan
    sd = difference.std(ddof=1)
    if sd == 0:  # every seed moved by the same amount: certain unless it is 0
        return interval, 1.0 if difference[0] == 0 else 0.0
    statistic = difference.mean() / (sd / math.sqrt(difference.size))
    p = 2 * scipy_stats.t.sf(abs(statistic), difference.size - 1)
    return interval, float(p)


def pass_at_k_matrix(correct: np.ndarray, samples: int, k: int) -> np.ndarray:
    """Unbiased Pass@k ``1 - C(n-c, k) / C(n, k)`` of every entry of ``correct`` (counts of
    correct samples out of ``n = samples``), any shape; ``k = 1`` is the pass rate ``c / n``."""
    c = np.asarray(correct, dtype=np.int64)
    if not 1 <= k <= samples:
        raise ValueError(f"k must lie in [1, samples={samples}], got {k}")
    if c.size and (c.min() < 0 or c.max() > samples):
        raise ValueError(f"correct counts must lie in [0, {samples}]")
    # Π_{i=n-c+1}^{n} (1 - k / i), as training.evaluate.pass_at_k, vectorised over entries
    i = np.arange(1, samples + 1, dtype=np.float64)  # (n,)
    factors = np.where(i[None, :] > (samples - c.reshape(-1, 1)), 1.0 - k / i[None, :], 1.0)
    product = np.where(samples - c.reshape(-1) < k, 0.0, factors.prod(axis=1))
    return (1.0 - product).reshape(c.shape)


def hierarchical_bootstrap(
    scores: np.ndarray,
    baseline: np.ndarray | None = None,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Two-level bootstrap of the mean of ``scores`` ``(seeds, problems)`` (e.g.
    :func:`pass_at_k_matrix` of each seed's final evaluation): each resample draws ``seeds``
    seeds with replacement and, for each drawn seed, ``problems`` problems with replacement.

    With ``baseline`` (same shape, rows paired by seed, columns the same problems), the interval
    is of the mean difference, the method's and the baseline's values drawn with the same seed and
    problem indices. Percentile interval; the point estimate is the plain mean (difference).
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"scores must be (seeds, problems), got shape {x.shape}")
    if baseline is not None:
        b = np.asarray(baseline, dtype=np.float64)
        if b.shape != x.shape:
            raise ValueError(f"baseline must have the scores' shape {x.shape}, got {b.shape}")
        x = x - b  # pairing: every draw takes both at the same (seed, problem)
    n_seeds, n_problems = x.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    block = max(1, 2_000_000 // (n_seeds * n_problems))  # resamples per block (bounded memory)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds))  # (size, S)
        problems = rng.integers(0, n_problems, size=(size, n_seeds, n_problems))  # (size, S, Q)
        means[start : start + size] = x[seeds[..., None], problems].mean(axis=(1, 2))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), n_seeds)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: sorted ascending, the i-th
    (0-based) of ``m`` is ``max_{j ≤ i} min(1, (m - j) p_(j))``. NaN entries stay NaN and do
    not count in ``m``.

    Example: ``holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = order.size, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Comparison:
    """One cell of a "vs baseline" table: ``metric`` of ``method`` minus the baseline's.

    Attributes:
        difference: mean paired difference with its paired-t interval (``n`` seeds).
        p_value: two-sided paired-t p-value; ``p_adjusted`` Holm-adjusted over the table.
        bootstrap: the hierarchical-bootstrap interval of the difference (seeds and problems),
            for metrics computed on a problem set; ``None`` otherwise.
    """

    method: str
    metric: str
    difference: Interval
    p_value: float
    p_adjusted: float
    bootstrap: Interval | None = None

    @property
    def significant(self) -> bool:
        """A claim: the Holm-adjusted p-value is below 0.05."""
        return self.p_adjusted < 0.05


def compare_to_baseline(
    values: Mapping[str, Mapping[str, Mapping[int, float]]],
    baseline: str,
    problem_scores: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]] | None = None,
    confidence: float = CONFIDENCE,
) -> list[Comparison]:
    """Every method against ``baseline`` on every metric, Holm-adjusted over the whole table.

    Args:
        values: ``{method: {metric: {seed: value}}}``; pairs are the seeds both have.
        baseline: the method compared against (a key of ``values``).
        problem_scores: optional ``{method: {metric: {seed: per-problem scores}}}`` (the same
            problems in the same order for every method and seed) for the metrics that have
            them: adds the hierarchical-bootstrap interval of the difference.

    Returns:
        One :class:`Comparison` per (method ≠ baseline, metric the baseline has), in the order of
        ``values``; cells with fewer than two paired seeds get NaN p-values (and are not counted
        in Holm's ``m``).
    """
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(values)}")
    cells = []
    for method, metrics in values.items():
        if method == baseline:
            continue
        for metric, by_seed in metrics.items():
            reference = values[baseline].get(metric)
            if reference is None:
                continue
            seeds = sorted(set(by_seed) & set(reference))
            if not seeds:
                continue
            difference, p = paired_difference(
                [by_seed[s] for s in seeds], [reference[s] for s in seeds], confidence
            )
            boot = None
            per_problem = (problem_scores or {}).get(method, {}).get(metric)
            base_problem = (problem_scores or {}).get(baseline, {}).get(metric)
            if per_problem and base_problem:
                paired = [s for s in seeds if s in per_problem and s in base_problem]
                if paired:
                    boot = hierarchical_bootstrap(
                        np.array([per_problem[s] for s in paired]),
                        np.array([base_problem[s] for s in paired]),
                        confidence,
                    )
            cells.append((method, metric, difference, p, boot))
    adjusted = holm([cell[3] for cell in cells])
    return [
        Comparison(method, metric, difference, p, p_adj, boot)
        for (method, metric, difference, p, boot), p_adj in zip(cells, adjusted, strict=True)
    ]
