"""Numerical checks of the paper's theorems (``study/verification.py``, ``verify-theory``): the
log-log slope by hand, and second-order convergence of both theorems' errors."""

from __future__ import annotations

import math

import pytest

from entropy_dynamics.study.verification import convergence_table, loglog_slope


def test_convergence_table_reports_second_order_slopes() -> None:
    rows = convergence_table(vocab_size=200, positions=8, seed=0)
    slopes = [row.slope for row in rows if row.slope is not None]
    assert len(slopes) == 2
    assert all(abs(slope - 2.0) < 0.1 for slope in slopes)


def test_loglog_slope_by_hand() -> None:
    steps = [1e-1, 1e-2, 1e-3]
    assert loglog_slope(steps, [3 * s**2 for s in steps]) == pytest.approx(2.0)
    assert loglog_slope(steps, [math.sqrt(s) for s in steps]) == pytest.approx(0.5)
