"""Small statistics for reports: mean ± sample std over seeds, Pearson r and least-squares slope."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["fit_line", "mean_std", "pearson"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value, nan for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else 0.0


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Pearson r and least-squares slope of ``ys`` on ``xs`` (nan for < 2 points or flat x)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    r = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan
    return r, (sxy / sxx if sxx > 0 else math.nan)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation (``nan`` if fewer than 2 points or a constant series)."""
    return fit_line(xs, ys)[0]
