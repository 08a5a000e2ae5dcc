"""Plots of one training run from its ``metrics.jsonl`` (matplotlib, PNG, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from entropy_dynamics.study.runs import PREDICTIONS
from entropy_dynamics.study.summaries import pearson
from entropy_dynamics.training.metrics import read_metrics

__all__ = ["plot_run"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if value is not None and math.isfinite(value):
            steps.append(row["step"])
            values.append(value)
    return steps, values


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``entropy.png``, ``reward.png`` and ``dynamics.png`` for a run; return their paths."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    rows = read_metrics(run_dir / "metrics.jsonl")
    plt = _pyplot()
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*_series(rows, "entropy/mean"), label="rollout token entropy")
    ax.set(xlabel="step", ylabel="entropy (nats)", title=f"Entropy — {run_dir.name}")
    ax.legend()
    written.append(out / "entropy.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*_series(rows, "reward/mean"), label="train reward")
    ax.plot(*_series(rows, "reward/accuracy"), label="train accuracy")
    for key in sorted({k for r in rows for k in r if k.startswith("eval/")}):
        if key.startswith(("eval/avg@", "eval/pass@")):
            ax.plot(*_series(rows, key), marker="o", label=key)
    ax.set(xlabel="step", ylabel="rate", title=f"Reward and accuracy — {run_dir.name}")
    ax.legend(fontsize=8)
    written.append(out / "reward.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _, actual = _series(rows, "dynamics/delta_h_actual")
    for key, label in PREDICTIONS.items():  # the forecasts only in runs that recorded them
        steps, predicted = _series(rows, key)
        if not predicted:
            continue
        if len(predicted) == len(actual) and actual:
            r = pearson(predicted, actual)
            right.scatter(predicted, actual, s=12, label=f"{label}: r = {r:.3f}")
        left.plot(steps, predicted, label=label)
    left.plot(*_series(rows, "dynamics/delta_h_actual"), color="black", label="actual")
    left.axhline(0.0, color="grey", linewidth=0.5)
    left.set(xlabel="step", ylabel="ΔH per token", title="Entropy change of each update")
    left.legend(fontsize=8)
    if actual:
        lo, hi = min(actual), max(actual)
        right.plot([lo, hi], [lo, hi], color="grey", linewidth=0.5)
    right.set(xlabel="predicted ΔH", ylabel="actual ΔH", title="Predicted vs actual")
    right.legend(fontsize=8)
    written.append(out / "dynamics.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return written
