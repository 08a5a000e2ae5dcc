"""Small statistics for reports (``study/summaries.py``): mean ± sample std, Pearson r and the
least-squares slope, by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from entropy_dynamics.study.summaries import fit_line, json_text, mean_std, pearson


def test_mean_std_and_fit_line_by_hand() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))  # sample std: sqrt(((1)^2+(1)^2)/1)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))
    r, slope = fit_line([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])  # y = 2x + 1
    assert r == pytest.approx(1.0) and slope == pytest.approx(2.0)
    r, slope = fit_line([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0, 0.0])  # symmetric: no trend
    assert r == pytest.approx(0.0) and slope == pytest.approx(0.0)
    assert all(math.isnan(v) for v in fit_line([1.0], [1.0]))


def test_pearson_against_hand_values() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (0, 1, 2), y = (0, 1, 0): cov = 0 -> r = 0.
    assert pearson([0, 1, 2], [0, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(pearson([1.0], [2.0]))


def test_json_text_is_strict_json_with_null_for_nan() -> None:
    data = {"mean": math.nan, "pair": (1.5, -math.inf), "n": np.int64(3), "x": np.float64(0.25)}
    text = json_text(data)
    assert "NaN" not in text and "Infinity" not in text  # what json.dumps would write
    assert json.loads(text) == {"mean": None, "pair": [1.5, None], "n": 3, "x": 0.25}
