"""One look for every figure of a run and of a report: pyplot on the Agg backend (no display), font
sizes that read at the size the figures are shown, constrained layout (matplotlib moves titles,
axis labels and tick labels apart, so none overlaps another), one colour cycle, and per-step
curves drawn as an exponential moving average over the faint raw series (as TensorBoard does),
said in the legend; legends under the axes, never over the data; whole-number step ticks; and a
minimum span on axes where a tiny change would otherwise fill the height (:func:`finish`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COLORS",
    "ENTROPY_SPAN",
    "GREY",
    "RATE_SPAN",
    "RAW_NOTE",
    "STYLE",
    "ema",
    "finish",
    "legend",
    "min_span",
    "plot_smoothed",
    "pyplot",
    "r_text",
    "raw_note",
    "save",
]

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
ENTROPY_SPAN = 0.05
"""The least height of an entropy axis, in nats per token (:func:`min_span`)."""
RATE_SPAN = 0.1
"""The least height of a rate axis: reward, accuracy, Avg@k, Pass@k (:func:`min_span`)."""
RAW_NOTE = "faint: each step's value; solid: smoothed (moving average)"
"""The legend entry of an axes with smoothed curves (:func:`legend`)."""
_RAW = "raw"  # the gid of a raw series under its smoothed curve
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
    if len(steps) == 1:  # a line of one point draws nothing: a marker does
        kwargs = {"marker": "o", **kwargs}
    (line,) = ax.plot(steps, ema(values), label=label, **kwargs)
    if len(steps) > 2:  # two points are their own average
        raw = {k: v for k, v in kwargs.items() if k not in ("linewidth", "zorder")}
        raw["color"] = line.get_color()
        ax.plot(steps, values, alpha=RAW_ALPHA, linewidth=0.8, zorder=line.get_zorder() - 0.1,
                gid=_RAW, **raw)  # fmt: skip
    return line


def legend(ax, **kwargs) -> None:
    """The axes' legend under it (below the step axis, off the data), with :data:`RAW_NOTE`
    when some curve is smoothed over its raw series; nothing when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    for handle, label in raw_note([ax]):
        handles.append(handle)
        labels.append(label)
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncols=kwargs.pop("ncols", 2), **kwargs)  # fmt: skip


def raw_note(axes) -> list[tuple[Any, str]]:
    """``[(handle, RAW_NOTE)]`` when a curve of ``axes`` is smoothed over its raw series, for a
    legend to say which is which; else ``[]``."""
    from matplotlib.lines import Line2D

    if not any(line.get_gid() == _RAW for ax in axes for line in ax.get_lines()):
        return []
    return [(Line2D([], [], color=GREY, alpha=0.6, linewidth=0.8), RAW_NOTE)]


def min_span(ax, span: float, low: float | None = None, high: float | None = None) -> None:
    """Widen the y-axis to at least ``span`` about its centre (within ``[low, high]`` where
    given), so a change smaller than that does not fill the whole height."""
    bottom, top = ax.get_ylim()
    if top - bottom >= span:
        return
    centre = (top + bottom) / 2
    bottom, top = centre - span / 2, centre + span / 2
    if low is not None and bottom < low:
        bottom, top = low, low + span
    if high is not None and top > high:
        bottom, top = max(high - span, low if low is not None else high - span), high
    ax.set_ylim(bottom, top)


def finish(ax, span: float | None = None, low: float | None = None,
           high: float | None = None) -> None:  # fmt: skip
    """Whole-number ticks on a step axis (x), one per step when there are few, and at least a
    step wide (a single step would get fractional ticks around it); with ``span``,
    :func:`min_span`."""
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    left, right = ax.get_xlim()
    if right - left < 1:
        centre = (left + right) / 2
        ax.set_xlim(centre - 0.5, centre + 0.5)
    few = right - left < 6
    ax.xaxis.set_major_locator(MultipleLocator(1) if few else MaxNLocator(integer=True))
    if span is not None:
        min_span(ax, span, low, high)


def r_text(r: float) -> str:
    """``r = 0.123``, or why there is none (fewer than two points, or one without spread)."""
    return f"r = {r:.3f}" if r == r else "r undefined (too few points, or no spread)"


def save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
