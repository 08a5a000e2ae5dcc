"""One run's plots from its metrics file, and the Pearson r they print."""

from __future__ import annotations

import math

import pytest

from entropy_dynamics.study.run_plots import plot_run
from entropy_dynamics.study.summaries import pearson
from entropy_dynamics.training.metrics import MetricsWriter


def test_pearson_against_hand_values() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = (0, 1, 2), y = (0, 1, 0): cov = 0 -> r = 0.
    assert pearson([0, 1, 2], [0, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(pearson([1.0], [2.0]))


def test_plot_run_writes_pngs(tmp_path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        for step in range(1, 5):
            writer.write(
                step,
                {
                    "entropy/mean": 1.0 / step,
                    "reward/mean": 0.1 * step,
                    "reward/accuracy": 0.1 * step,
                    "dynamics/delta_h_actual": -0.01 * step,
                    "dynamics/delta_h_first_order": -0.011 * step,
                    "dynamics/delta_h_thm33": -0.009 * step,
                },
            )
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["entropy.png", "reward.png", "dynamics.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
