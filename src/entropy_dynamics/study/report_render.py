"""Rendering of the comparison report: PNG figures (matplotlib, no display) and the Markdown
and self-contained HTML pages (images embedded as base64)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from entropy_dynamics.study.runs import (
    QUADRANTS,
    Group,
    band,
    final_value,
    pass_rates,
    points,
    predictions_in,
    run_scores,
)
from entropy_dynamics.study.summaries import fit_line, mean_std


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_band(ax, group: Group, key: str, label: str, color=None) -> None:
    steps, mean, std = band(group, key)
    if not steps:
        return
    (line,) = ax.plot(steps, mean, label=label, color=color)
    ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def curves(groups, out: Path, plt) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in groups:
        _plot_band(ax, g, "entropy/mean", g.label)
    ax.set(xlabel="step", ylabel="rollout token entropy (nats)", title="Entropy over training")
    ax.legend(fontsize=7)
    paths = [_save(fig, out / "entropy.png", plt)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for g in groups:
        _plot_band(left, g, "reward/accuracy", g.label)
        avg = next((k for r in g.runs for row in r.rows for k in row if "eval/avg@" in k), None)
        if avg:
            _plot_band(right, g, avg, f"{g.label} {avg.split('/')[1]}")
    left.set(xlabel="step", ylabel="accuracy", title="Training accuracy (rollouts)")
    right.set(xlabel="step", ylabel="Avg@k", title="Held-out Avg@k")
    for ax in (left, right):
        if ax.lines:
            ax.legend(fontsize=7)
    return [*paths, _save(fig, out / "reward.png", plt)]


def scatter(groups, out: Path, plt) -> Path:
    runs = [r for g in groups for r in g.runs]
    predictions = predictions_in(runs)
    fig, axes = plt.subplots(1, len(predictions), figsize=(6 * len(predictions), 5), squeeze=False)
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
        ax.set(xlabel=f"predicted ΔH: {name}", ylabel="actual ΔH")
        ax.set_title(f"{name}: r = {r:.3f}, slope = {slope:.3g}", fontsize=10)
        ax.legend(fontsize=6)
    return _save(fig, out / "delta_h_scatter.png", plt)


def quadrants(groups, out: Path, plt) -> Path:
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        for name, label in QUADRANTS.items():
            _plot_band(ax, g, f"dynamics/quadrant/{name}", label)
        _plot_band(ax, g, "dynamics/delta_h_actual", "total actual ΔH", color="black")
        ax.axhline(0, color="grey", linewidth=0.4)
        ax.set(xlabel="step", ylabel="ΔH contribution", title=g.label)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    return _save(fig, out / "quadrants.png", plt)


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
        ax.legend(fontsize=7)
    return _save(fig, out / "pass_rate_hist.png", plt)


def filters(groups, keys: list[str], out: Path, plt) -> Path:
    cols = max(1, min(3, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for g in groups:
            _plot_band(ax, g, key, g.label)
        ax.set(xlabel="step", ylabel="fraction of tokens", title=key)
        if ax.lines:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    return _save(fig, out / "filters.png", plt)


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
        ax.legend(fontsize=7)
    return _save(fig, out / f"sweep_{short.replace('.', '_')}.png", plt)


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
