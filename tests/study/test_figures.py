"""Every figure of a run and of a report reads: no two drawn texts (titles, axis labels, tick
labels, legend entries) of one figure overlap, measured with matplotlib's own text extents."""

from __future__ import annotations

import itertools
import math

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from entropy_dynamics.study import plot_style
from entropy_dynamics.study.report import FIGURES, write_report
from entropy_dynamics.study.run_plots import plot_run
from entropy_dynamics.training.config import load_config, save_config
from entropy_dynamics.training.metrics import MetricsWriter

matplotlib.use("Agg")

STEPS = 30
FORECASTS = ("dynamics/forecast", "dynamics/forecast_second_order")


def _row(step: int, scale: float, seed: int) -> dict[str, float]:
    """Noisy, plausible values of every key a run's or a report's figures draw."""
    wiggle = math.sin(1.7 * step + seed)
    actual = scale * 0.01 * math.cos(0.4 * step) + 0.002 * wiggle
    row = {
        "entropy/mean": 1.2 * math.exp(-step / (10 * scale)) + 0.05 * wiggle + 0.01 * seed,
        "reward/mean": 0.1 + 0.02 * step - 0.05,  # a format penalty: reward ≠ accuracy
        "reward/accuracy": 0.1 + 0.02 * step + 0.03 * wiggle,
        "dynamics/delta_h_actual": actual,
        "dynamics/delta_h_first_order": 1.1 * actual,
        "dynamics/delta_h_thm33": 0.9 * actual + 0.001,
        FORECASTS[0]: 1.2 * actual,
        FORECASTS[1]: 1.05 * actual,
        "actor/frac_kept": 1.0 - 0.01 * scale,
        "actor/pg_clipfrac": 0.02 + 0.001 * wiggle,
        "clip_b/frac_clipped": 0.01 * scale,
    }
    for i, name in enumerate(("pos_adv_pos_dev", "pos_adv_neg_dev", "neg_adv_pos_dev")):
        row[f"dynamics/quadrant/{name}"] = actual * (i + 1) / 6
    row["dynamics/quadrant/neg_adv_neg_dev"] = 0.0
    if step % 10 == 0:
        rate = 0.2 + 0.01 * step
        row |= {"eval/entropy": row["entropy/mean"] + 0.1, "eval/avg@4": rate}
        row |= {"eval/pass@1": rate, "eval/pass@4": min(1.0, 2 * rate)}
    return row


def _write_run(root, name: str, overrides: list[str], scale: float, seed: int):
    config = load_config(None, [f"name={name}", f"output_dir={root}", f"steps={STEPS}", *overrides])
    config.run_dir.mkdir(parents=True)
    save_config(config, config.run_dir / "config.yaml")
    with MetricsWriter(config.run_dir, tensorboard=False) as writer:
        for step in range(1, STEPS + 1):
            writer.write(step, _row(step, scale, seed))
    return config.run_dir


def _drawn_texts(fig) -> list[Text]:
    """The visible, non-empty texts the last draw of ``fig`` put on the canvas. Tick labels count
    only where their tick lies inside the view (matplotlib keeps, but does not draw, the others),
    and nothing of an axis switched off (``ax.axis("off")``) counts."""
    axis_owned, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis_owned |= {id(t) for t in axis.findobj(Text)}
            if not ax.axison:
                continue
            drawn += [axis.label, axis.get_offset_text()]
            lo, hi = sorted(axis.get_view_interval())
            slack = 1e-9 * max(1.0, abs(hi - lo))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if lo - slack <= tick.get_loc() <= hi + slack:
                    drawn += [tick.label1, tick.label2]
    drawn += [t for t in fig.findobj(Text) if id(t) not in axis_owned]
    return [t for t in dict.fromkeys(drawn) if t.get_visible() and t.get_text().strip()]


def overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` whose boxes overlap by more than half a pixel each way
    (boxes that merely touch are fine)."""
    canvas = FigureCanvasAgg(fig)  # a closed figure's canvas no longer draws
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _drawn_texts(fig)]
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 0.5
        and min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 0.5
    ]


@pytest.fixture
def figures(monkeypatch) -> dict[str, object]:
    """Every figure closed while the fixture is active, by file name, still drawable."""
    seen, close = {}, plt.close

    def spy(fig=None):
        if fig is not None and not isinstance(fig, str | int):
            name = fig.get_label() or f"figure {len(seen)}"
            seen[name] = fig
        return close(fig)

    monkeypatch.setattr(plt, "close", spy)
    real_save = plot_style.save

    def save(fig, path):
        fig.set_label(path.name)
        return real_save(fig, path)

    monkeypatch.setattr(plot_style, "save", save)
    return seen


def _assert_readable(figures: dict[str, object], expected: list[str]) -> None:
    assert sorted(figures) == sorted(expected)
    bad = {name: pairs for name, fig in figures.items() if (pairs := overlaps(fig))}
    assert not bad, f"overlapping texts: {bad}"


def test_run_figures_do_not_overlap(tmp_path, figures) -> None:
    run = _write_run(tmp_path, "grpo-seed0", [], 1.0, 0)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["entropy.png", "reward.png", "dynamics.png"]
    _assert_readable(figures, [p.name for p in paths])


@pytest.mark.parametrize("mus", [(2.0,), (1.5, 2.0, 2.5, 3.0)], ids=["3 groups", "5 groups"])
def test_report_figures_do_not_overlap(tmp_path, figures, mus) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        _write_run(root, f"grpo-seed{seed}", [f"seed={seed}"], 1.0, seed)
        for mu in mus:
            overrides = [f"seed={seed}", "algorithm.method=clip_b"]
            overrides.append(f"algorithm.loss.filter_options.mu={mu}")
            _write_run(root, f"clip_b-mu={mu}-seed{seed}", overrides, mu, seed)
    if len(mus) == 1:  # a third group: GRPO at another learning rate
        _write_run(root, "grpo-lr-seed0", ["optim.lr=1e-5"], 0.5, 0)
    result = write_report([root], tmp_path / "report", ks=(1, 4))
    names = [p.name for p in result.figures]
    assert {f"{f}.png" for f in FIGURES} <= set(names)
    _assert_readable(figures, names)


def test_reward_figure_draws_no_duplicate_series(tmp_path, figures) -> None:
    run = tmp_path / "run"
    with MetricsWriter(run, tensorboard=False) as writer:
        for step in range(1, 6):  # reward = accuracy, Avg@4 = Pass@1: each drawn once
            row = {"entropy/mean": 1.0, "reward/mean": 0.1 * step, "reward/accuracy": 0.1 * step}
            writer.write(step, row | {"eval/avg@4": 0.5, "eval/pass@1": 0.5, "eval/pass@4": 0.8})
    plot_run(run)
    legend = figures["reward.png"].axes[0].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["train reward = accuracy", "validation pass@1", "validation pass@4",
                      plot_style.RAW_NOTE]  # fmt: skip

