"""Rendering of the comparison report: PNG figures (matplotlib, no display) and the Markdown
and self-contained HTML pages (images embedded as base64)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from entropy_dynamics.dynamics import QUADRANT_LABELS
from entropy_dynamics.study import plot_style as style
from entropy_dynamics.study.runs import (
    DEFINED,
    Group,
    band,
    final_value,
    pass_rates,
    points,
    predictions_in,
    run_scores,
)
from entropy_dynamics.study.summaries import fit_line, mean_std

__all__ = [
    "curves",
    "filters",
    "histogram",
    "markdown",
    "page",
    "pyplot",
    "quadrants",
    "scatter",
    "sweep",
]


def pyplot():
    """The report's pyplot: :func:`~entropy_dynamics.study.plot_style.pyplot`."""
    return style.pyplot()


def _plot_band(ax, group: Group, key: str, label: str | None, **kwargs) -> None:
    """The mean over seeds, smoothed over its raw values, in a band of ± 1 std (smoothed)."""
    steps, mean, std = band(group, key)
    line = style.plot_smoothed(ax, steps, mean, label, **kwargs)
    if line is not None and len(group.runs) > 1:
        lower, upper = style.ema(mean - std), style.ema(mean + std)
        ax.fill_between(steps, lower, upper, color=line.get_color(), alpha=0.15, linewidth=0)


def _save(fig, path: Path) -> Path:
    return style.save(fig, path)


def _legend_below(fig, ncols: int) -> None:
    """One legend for all subplots, under them (constrained layout keeps room for it)."""
    by_label = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    if by_label:  # and which line is raw, which smoothed
        by_label.update({label: handle for handle, label in style.raw_note(fig.axes)})
        fig.legend(by_label.values(), by_label.keys(), loc="outside lower center", ncols=ncols)


def _entropy_multiples(groups, plt):
    """One small axes per group, GRPO's curve in grey behind each (``> 4`` groups tangle)."""
    reference = next((g for g in groups if g.method == "grpo"), None)
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 2.8 * rows), sharex=True, sharey=True, squeeze=False
    )
    for i, (ax, g) in enumerate(zip(axes.flat, groups, strict=False)):
        if reference is not None and g is not reference:
            _plot_band(ax, reference, "entropy/mean", None, color=style.GREY)
        _plot_band(ax, g, "entropy/mean", None, color=style.COLORS[i % len(style.COLORS)])
        ax.set_title(g.label)
        style.finish(ax)
    for i in range(len(groups), rows * cols):  # an empty cell: the axes above shows the steps
        axes.flat[i].axis("off")
        axes.flat[i - cols].xaxis.set_tick_params(labelbottom=True)
    note = f" (grey: {reference.label})" if reference is not None else ""
    fig.suptitle(f"Entropy over training{note}")
    fig.supxlabel("step")
    fig.supylabel("rollout token entropy (nats)")
    return fig


def curves(groups, out: Path, plt) -> list[Path]:
    if len(groups) > 4:
        fig = _entropy_multiples(groups, plt)
    else:
        fig, ax = plt.subplots(figsize=(7, 4.8))  # the legend under the axes
        for g in groups:
            _plot_band(ax, g, "entropy/mean", g.label)
        ax.set(xlabel="step", ylabel="rollout token entropy (nats)", title="Entropy over training")
        style.finish(ax, style.ENTROPY_SPAN, low=0.0)
        style.legend(ax)
    paths = [_save(fig, out / "entropy.png")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, g in enumerate(groups):
        color = style.COLORS[i % len(style.COLORS)]
        _plot_band(left, g, "reward/accuracy", g.label, color=color)
        avg = next((k for r in g.runs for row in r.rows for k in row if "eval/avg@" in k), None)
        if avg:
            steps, mean, std = band(g, avg)
            right.errorbar(steps, mean, std, marker="o", capsize=3, color=color, label=g.label)
    left.set(xlabel="step", ylabel="accuracy", title="Training accuracy (rollouts)")
    right.set(xlabel="step", ylabel="Avg@k", title="Held-out Avg@k")
    for ax in (left, right):  # a change of 0.002 does not fill the axis
        style.finish(ax, style.RATE_SPAN, low=0.0, high=1.0)
    _legend_below(fig, min(len(groups), 4))
    return [*paths, _save(fig, out / "reward.png")]


def scatter(groups, out: Path, plt) -> Path:
    runs = [r for g in groups for r in g.runs]
    predictions = predictions_in(runs)
    fig, axes = plt.subplots(1, len(predictions), figsize=(6 * len(predictions), 6), squeeze=False)
    for ax, (key, name) in zip(axes[0], predictions.items(), strict=True):
        every_x, every_y = points(runs, key)
        for g in groups:
            xs, ys = points(g.runs, key)
            ax.scatter(xs, ys, s=10, alpha=0.7, label=g.label)
        r, slope = fit_line(every_x, every_y)
        if every_x:
            lo, hi = min(every_x + every_y), max(every_x + every_y)
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.6, label="y = x")
        ax.axhline(0, color="grey", linewidth=0.3)
        ax.axvline(0, color="grey", linewidth=0.3)
        ax.set(xlabel=f"predicted ΔH: {DEFINED.get(key, name)}", ylabel="actual ΔH")
        ax.set_title(f"{name}: {style.r_text(r)}" + (f", slope = {slope:.3g}" if r == r else ""))
        style.legend(ax)
    return _save(fig, out / "delta_h_scatter.png")


def quadrants(groups, out: Path, plt) -> Path:
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        for name, label in QUADRANT_LABELS.items():
            _plot_band(ax, g, f"dynamics/quadrant/{name}", label)
        _plot_band(ax, g, "dynamics/delta_h_actual", "total actual ΔH", color="black")
        ax.axhline(0, color="grey", linewidth=0.4)
        ax.set(xlabel="step", ylabel="ΔH contribution", title=g.label)
        style.finish(ax)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    _legend_below(fig, 3)
    return _save(fig, out / "quadrants.png")


def histogram(groups, out: Path, plt) -> Path:
    data = [(g, *pass_rates(g)) for g in groups]
    ns = set().union(*(n for _, _, n in data))
    # One bar per possible rate j/n when every run drew n samples per problem; else deciles.
    n = next(iter(ns)) if len(ns) == 1 else 0
    edges = (np.arange(n + 2) - 0.5) / n if n else np.linspace(0, 1, 11)
    fig, ax = plt.subplots(figsize=(8, 4))
    shown = [(g, rates) for g, rates, _ in data if rates]
    width = (edges[1] - edges[0]) / max(len(shown), 1)
    for i, (g, rates) in enumerate(shown):
        counts, _ = np.histogram(rates, bins=edges)
        ax.bar(edges[:-1] + (i + 0.5) * width, counts / len(rates), width=width, label=g.label)
    ax.set(xlabel="per-problem pass rate of the final model", ylabel="fraction of problems")
    ax.set_title("Per-problem pass rates (all-wrong at 0, all-right at 1)")
    if shown:
        ax.legend()
    else:  # an empty axis would read as "no problem at any rate"
        ax.text(0.5, 0.5, "no data: no run has per-problem counts\n(final_eval.json, or eval.json "
                "of eval --run)", ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    return _save(fig, out / "pass_rate_hist.png")


def filters(groups, keys: list[str], out: Path, plt) -> Path:
    cols = max(1, min(3, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for g in groups:
            _plot_band(ax, g, key, g.label)
        ax.set(xlabel="step", ylabel="fraction of tokens", title=key)
        style.finish(ax)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    _legend_below(fig, min(len(groups), 4))
    return _save(fig, out / "filters.png")


def sweep(groups, key: str, short: str, pass_key: str, ks, out: Path, plt) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    symbol = "μ" if short == "mu" else short
    for method in dict.fromkeys(g.method for g in groups if key in g.settings):
        mine = [g for g in groups if g.method == method and key in g.settings]
        xs = [g.settings[key] for g in mine]
        for ax, values in (
            (left, [[final_value(r, "entropy/mean") for r in g.runs] for g in mine]),
            (right, [[run_scores(r, ks)[1].get(pass_key, math.nan) for r in g.runs] for g in mine]),
        ):
            stats = [mean_std(v) for v in values]
            ax.errorbar(xs, [m for m, _ in stats], [s for _, s in stats], marker="o", label=method)
    left.set(xlabel=symbol, ylabel="final rollout entropy", title=f"Entropy vs {symbol}")
    right.set(xlabel=symbol, ylabel=pass_key, title=f"{pass_key} vs {symbol}")
    for ax in (left, right):
        ax.legend()
    return _save(fig, out / f"sweep_{short.replace('.', '_')}.png")


def markdown(title: str, sections: list, out: Path) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + ([s.text, ""] if s.text else [])
        for header, rows in s.tables:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in s.figures]
    return "\n".join(lines)


def page(title: str, sections: list) -> str:
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
        "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2>" + (f"<p>{esc(s.text)}</p>" if s.text else ""))
        for header, rows in s.tables:
            head = "".join(f"<th>{esc(c)}</th>" for c in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        for path in s.figures:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{esc(path.stem)}' src='data:image/png;base64,{data}'>")
    return "\n".join([*parts, "</body></html>"])
