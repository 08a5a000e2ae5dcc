"""One look for every figure of a run and of a report: pyplot on the Agg backend (no display), font
sizes that read at the size the figures are shown, constrained layout (matplotlib moves titles,
axis labels and tick labels apart, so none overlaps another), one colour cycle, and per-step
curves drawn as an exponential moving average over the faint raw series (as TensorBoard does)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLORS", "GREY", "STYLE", "ema", "plot_smoothed", "pyplot", "save"]

COLORS = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
"""The Okabe–Ito palette: distinguishable under the common colour-vision deficiencies."""
GREY = "#888888"
"""Reference curves (GRPO behind another method, y = x, zero lines)."""
RAW_ALPHA = 0.25
"""Opacity of the raw series under its smoothed curve."""
STYLE: dict[str, Any] = {
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "savefig.dpi": 120,
}
"""rc settings of every figure; legends ≥ 8 pt, titles 11 pt."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with :data:`STYLE` and :data:`COLORS` applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.rcParams.update({**STYLE, "axes.prop_cycle": cycler(color=COLORS)})
    return plt


def ema(values: Sequence[float], span: float | None = None) -> list[float]:
    """Exponential moving average ``s_t = (1 - a) s_{t-1} + a x_t``, ``a = 2 / (span + 1)``,
    debiased like Adam's moments (``s_t / (1 - (1 - a)^t)``) so the curve starts at the data
    rather than at 0. ``span`` defaults to a tenth of the series (at least 1: no smoothing)."""
    if span is None:
        span = max(1.0, len(values) / 10)
    alpha = 2.0 / (span + 1.0)
    smoothed, running, weight = [], 0.0, 0.0
    for x in values:
        running = (1 - alpha) * running + alpha * x
        weight = (1 - alpha) * weight + alpha
        smoothed.append(running / weight)
    return smoothed


def plot_smoothed(ax, steps: Sequence[float], values: Sequence[float], label: str, **kwargs):
    """Draw ``values`` smoothed by :func:`ema` (solid, labelled) over the raw series (faint,
    unlabelled, same colour); return the smoothed line. Nothing is drawn for an empty series."""
    if not len(steps):
        return None
    (line,) = ax.plot(steps, ema(values), label=label, **kwargs)
    if len(steps) > 2:  # two points are their own average
        raw = {k: v for k, v in kwargs.items() if k not in ("linewidth", "zorder")}
        raw["color"] = line.get_color()
        ax.plot(
            steps, values, alpha=RAW_ALPHA, linewidth=0.8, zorder=line.get_zorder() - 0.1, **raw
        )
    return line


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
