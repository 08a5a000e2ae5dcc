"""Plots of one training run from its ``metrics.jsonl`` (matplotlib, PNG, no display needed), in
the look of :mod:`~entropy_dynamics.study.plot_style`: per-step curves smoothed over their raw
series (the legend says which is which), the in-run evaluations (of the validation split) as
markers, an ``entropy_target`` run's target, and no series that repeats another; legends under
the data, whole-number steps, no axis that a tiny change fills (the spans of
:mod:`~entropy_dynamics.study.plot_style`), and no correlation shown as ``nan``."""

from __future__ import annotations

import math
from pathlib import Path

from entropy_dynamics.study import plot_style as style
from entropy_dynamics.study.runs import DEFINED, PREDICTIONS
from entropy_dynamics.study.summaries import pearson
from entropy_dynamics.training.metrics import read_metrics

__all__ = ["TARGET", "plot_run"]

TARGET = "entropy_target/target"
"""The target an ``entropy_target`` run steers its entropy to, as logged each step."""


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if value is not None and math.isfinite(value):
            steps.append(row["step"])
            values.append(value)
    return steps, values


def _same(rows: list[dict], key: str, other: str) -> bool:
    """Whether ``key`` repeats ``other``: logged at the same steps with the same values."""
    mine = dict(zip(*_series(rows, key), strict=True))
    theirs = dict(zip(*_series(rows, other), strict=True))
    return mine.keys() == theirs.keys() and all(
        math.isclose(v, theirs[s], rel_tol=1e-9, abs_tol=1e-12) for s, v in mine.items()
    )


def _entropy(ax, rows: list[dict], name: str) -> None:
    style.plot_smoothed(ax, *_series(rows, "entropy/mean"), "rollout token entropy")
    steps, validation = _series(rows, "eval/entropy")
    if steps:
        ax.plot(steps, validation, marker="o", linestyle="--", label="validation entropy (eval)")
    steps, target = _series(rows, TARGET)
    if steps:
        ax.step(steps, target, where="post", linestyle=":", color="black", label="target")
    ax.set(xlabel="step", ylabel="entropy (nats per token)", title=f"Entropy — {name}")
    style.finish(ax, style.ENTROPY_SPAN, low=0.0)
    style.legend(ax)


def _reward(ax, rows: list[dict], name: str) -> None:
    if _same(rows, "reward/mean", "reward/accuracy"):
        style.plot_smoothed(ax, *_series(rows, "reward/accuracy"), "train reward = accuracy")
    else:
        style.plot_smoothed(ax, *_series(rows, "reward/mean"), "train reward")
        style.plot_smoothed(ax, *_series(rows, "reward/accuracy"), "train accuracy")
    evals = sorted(
        {k for r in rows for k in r if k.startswith(("eval/avg@", "eval/pass@"))},
        key=lambda k: (k.startswith("eval/avg@"), int(k.split("@")[1])),
    )
    for key in evals:
        if key.startswith("eval/avg@") and _same(rows, key, "eval/pass@1"):
            continue  # Avg@k is the unbiased Pass@1 estimate: drawn once, as pass@1
        ax.plot(*_series(rows, key), marker="o", linestyle="--", label=f"validation {key[5:]}")
    ax.set(xlabel="step", ylabel="rate", title=f"Reward and accuracy — {name}")
    style.finish(ax, style.RATE_SPAN, low=0.0, high=1.0 if _rates_only(rows) else None)
    style.legend(ax)


def _rates_only(rows: list[dict]) -> bool:
    """Whether the reward is a rate in ``[0, 1]`` like the rest of the axis."""
    return all(0.0 <= v <= 1.0 for v in _series(rows, "reward/mean")[1])


def _dynamics(left, right, rows: list[dict]) -> None:
    actual_steps, actual = _series(rows, "dynamics/delta_h_actual")
    for key, label in PREDICTIONS.items():  # the forecasts only in runs that recorded them
        label = DEFINED.get(key, label)
        steps, predicted = _series(rows, key)
        if not predicted:
            continue
        line = style.plot_smoothed(left, steps, predicted, label)
        if len(predicted) == len(actual) and actual:
            r = style.r_text(pearson(predicted, actual))
            short = label.split(":")[0]  # the left legend defines it
            right.scatter(predicted, actual, s=12, color=line.get_color(), label=f"{short}: {r}")
    style.plot_smoothed(left, actual_steps, actual, "actual", color="black")
    left.axhline(0.0, color=style.GREY, linewidth=0.5)
    left.set(xlabel="step", ylabel="ΔH per token", title="Entropy change of each update")
    if actual:
        lo, hi = min(actual), max(actual)
        right.plot([lo, hi], [lo, hi], color=style.GREY, linewidth=0.8, label="y = x")
    right.set(xlabel="predicted ΔH", ylabel="actual ΔH", title="Predicted vs actual")
    style.finish(left)
    for ax in (left, right):
        style.legend(ax, ncols=1)  # one column: the definition of Δz is a long label


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``entropy.png``, ``reward.png`` and ``dynamics.png`` for a run; return their paths."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(run_dir / "metrics.jsonl")
    plt = style.pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.8))  # the legend under the axes
    _entropy(ax, rows, run_dir.name)
    written = [style.save(fig, out / "entropy.png")]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    _reward(ax, rows, run_dir.name)
    written.append(style.save(fig, out / "reward.png"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5))
    _dynamics(left, right, rows)
    written.append(style.save(fig, out / "dynamics.png"))
    return written
