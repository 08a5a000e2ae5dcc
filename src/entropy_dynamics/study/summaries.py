"""Small statistics for reports: mean ± sample std over seeds, Pearson r and least-squares slope;
and the strict JSON their summaries are written as."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fit_line", "json_text", "mean_std", "pearson"]


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


def _json_ready(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_ready(v) for v in value]
    return value


def json_text(data: Any) -> str:
    """``data`` as strict JSON (indent 1): a NaN or infinity, which ``json.dumps`` would write
    as the bare ``NaN`` no JSON parser outside Python accepts, becomes ``null``; objects JSON
    does not know are written as their ``str``."""
    return json.dumps(_json_ready(data), indent=1, allow_nan=False, default=str)
