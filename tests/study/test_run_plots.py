"""One run's plots from its metrics file: the PNGs written; raw vs smoothed said in the legend,
"measured Δz" defined, legends beside the data, an ``entropy_target`` run's target drawn,
whole-number step ticks, no axis that a tiny change fills, and no ``r = nan``."""

from __future__ import annotations

import pytest

from entropy_dynamics.study import plot_style
from entropy_dynamics.study.run_plots import plot_run
from entropy_dynamics.training.metrics import MetricsWriter


def _write(run_dir, steps: int, **extra: float) -> None:
    with MetricsWriter(run_dir, tensorboard=False) as writer:
        for step in range(1, steps + 1):
            writer.write(
                step,
                {
                    "entropy/mean": 0.300 + 0.0001 * step,  # a change far under 0.05 nats
                    "reward/mean": 0.1 * step / steps,
                    "reward/accuracy": 0.1 * step / steps,
                    "dynamics/delta_h_actual": -0.01 * step,
                    "dynamics/delta_h_first_order": -0.011 * step,
                    "dynamics/delta_h_thm33": -0.009 * step,
                    **({"eval/avg@4": 0.248 + 0.002 * (step == steps),
                        "eval/pass@4": 0.5} if step in (1, steps) else {}),
                    **extra,
                },
            )  # fmt: skip


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures plot_run draws, by file name (saved as usual)."""
    drawn = {}
    save = plot_style.save

    def keep(fig, path):
        fig.canvas.draw()
        drawn[path.stem] = (fig, [(ax, ax.get_legend()) for ax in fig.axes])
        return save(fig, path)

    monkeypatch.setattr(plot_style, "save", keep)
    return drawn


def _labels(legend) -> list[str]:
    return [text.get_text() for text in legend.get_texts()] if legend else []


def test_plot_run_writes_pngs(tmp_path) -> None:
    _write(tmp_path, 4)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["entropy.png", "reward.png", "dynamics.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_legends_explain_the_curves_and_stay_off_the_data(tmp_path, figures) -> None:
    _write(tmp_path, 12)
    plot_run(tmp_path)
    for name in ("entropy", "reward"):
        [(ax, legend)] = figures[name][1]
        assert plot_style.RAW_NOTE in _labels(legend)  # faint raw vs solid smoothed, said
    for name, (_, axes) in figures.items():
        for ax, legend in axes:
            if legend is not None:
                assert not legend.get_window_extent().overlaps(ax.get_window_extent()), name
    (_, left_legend), _ = figures["dynamics"][1]
    first_order = next(t for t in _labels(left_legend) if t.startswith("first order"))
    assert "Δz = logit change measured after the step" in first_order  # "measured Δz" defined


def test_short_runs_get_whole_steps_and_tiny_changes_a_minimum_span(tmp_path, figures) -> None:
    _write(tmp_path, 3)
    plot_run(tmp_path)
    for name, (_, axes) in figures.items():
        ax = axes[0][0]  # the per-step axes of each figure
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
    entropy, reward = figures["entropy"][1][0][0], figures["reward"][1][0][0]
    bottom, top = entropy.get_ylim()
    assert top - bottom >= plot_style.ENTROPY_SPAN - 1e-12  # 0.0003 nats does not fill it
    bottom, top = reward.get_ylim()
    assert top - bottom >= plot_style.RATE_SPAN - 1e-12 and bottom >= 0.0 and top <= 1.0


def test_an_entropy_target_run_shows_its_target(tmp_path, figures) -> None:
    _write(tmp_path, 6, **{"entropy_target/target": 0.25})
    plot_run(tmp_path)
    [(ax, legend)] = figures["entropy"][1]
    assert "target" in _labels(legend)
    line = next(line for line in ax.get_lines() if line.get_label() == "target")
    assert set(line.get_ydata()) == {0.25}


def test_a_correlation_of_one_point_is_said_not_shown_as_nan(tmp_path, figures) -> None:
    _write(tmp_path, 1)
    plot_run(tmp_path)
    _, (_, scatter_legend) = figures["dynamics"][1]
    labels = _labels(scatter_legend)
    assert labels and not any("nan" in label for label in labels)
    assert any("r undefined" in label for label in labels)
