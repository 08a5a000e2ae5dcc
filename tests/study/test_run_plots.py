"""One run's plots from its metrics file, and the Pearson r they print."""

from __future__ import annotations

from entropy_dynamics.study.run_plots import plot_run
from entropy_dynamics.training.metrics import MetricsWriter


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
