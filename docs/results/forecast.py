"""How well the parameter-space forecast predicted each update's entropy change, as JSON + PNG.

    python docs/results/forecast.py RUN_PARENT_DIR [-o DIR] [--skip 5]

For every run under ``RUN_PARENT_DIR`` trained with ``forecast.enabled=true`` (and
``forecast.second_order=true``), one point per training step after the first ``--skip``: the
forecast taken before the step against the ΔH measured after it, on the step's batch and on the
fixed probe set. Per run and pooled: Pearson r, least-squares slope of actual on forecast, mean
absolute error; for reference the same for the logit-space predictions of the dynamics metrics.
Writes ``summary.json`` and ``forecast.png`` into ``-o``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from entropy_dynamics.study.summaries import fit_line
from entropy_dynamics.training.metrics import read_metrics

PAIRS = {  # name → (predicted key, actual key)
    "batch, first order": ("dynamics/forecast", "dynamics/delta_h_actual"),
    "batch, second order": ("dynamics/forecast_second_order", "dynamics/delta_h_actual"),
    "probe, first order": ("dynamics/forecast_probe", "dynamics/delta_h_probe_actual"),
    "probe, second order": (
        "dynamics/forecast_probe_second_order",
        "dynamics/delta_h_probe_actual",
    ),
    "batch, measured Δz (logit space)": (
        "dynamics/delta_h_first_order",
        "dynamics/delta_h_actual",
    ),
    "batch, Theorem 3.3 (logit space)": ("dynamics/delta_h_thm33", "dynamics/delta_h_actual"),
}


GROUPS = ("pos_adv_pos_dev", "pos_adv_neg_dev", "neg_adv_pos_dev", "neg_adv_neg_dev", "other")


def _points(rows: list[dict], skip: int, predicted: str, actual: str):
    pairs = [
        (row[predicted], row[actual])
        for row in rows
        if row.get("step", 0) > skip and predicted in row and actual in row
    ]
    return [p for p, _ in pairs], [a for _, a in pairs]


def _fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    r, slope = fit_line(xs, ys)
    mae = statistics.mean(abs(x - y) for x, y in zip(xs, ys, strict=True)) if xs else float("nan")
    scale = statistics.mean(abs(y) for y in ys) if ys else float("nan")
    return {"points": len(xs), "r": r, "slope": slope, "mae": mae, "mean_abs_actual": scale}


def summarize(parent: Path, skip: int) -> dict:
    runs = {
        p.parent.name: read_metrics(p)
        for p in sorted(parent.glob("*/metrics.jsonl"))
        if any("dynamics/forecast" in row for row in read_metrics(p))
    }
    if not runs:
        raise SystemExit(f"{parent}: no run recorded dynamics/forecast (forecast.enabled=true)")
    out: dict = {"runs": sorted(runs), "skip_steps": skip, "per_run": {}, "pooled": {}}
    for name, (predicted, actual) in PAIRS.items():
        pooled_x, pooled_y = [], []
        for run, rows in runs.items():
            xs, ys = _points(rows, skip, predicted, actual)
            out["per_run"].setdefault(run, {})[name] = _fit(xs, ys)
            pooled_x += xs
            pooled_y += ys
        out["pooled"][name] = _fit(pooled_x, pooled_y)
    # each token group's share of the batch forecast, summed over training (parameter space),
    # next to the actual ΔH of the group's own positions (dynamics/quadrant/*, logit space)
    for group in GROUPS:
        shares = [_total(rows, skip, f"dynamics/forecast_group/{group}") for rows in runs.values()]
        own = [_total(rows, skip, f"dynamics/quadrant/{group}") for rows in runs.values()]
        out.setdefault("groups", {})[group] = {"forecast_share": shares, "own_positions": own}
    return out


def _total(rows: list[dict], skip: int, key: str) -> float:
    return sum(row[key] for row in rows if row.get("step", 0) > skip and key in row)


def plot(parent: Path, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: read_metrics(parent / name / "metrics.jsonl") for name in summary["runs"]}
    names = list(PAIRS)[:4]
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), constrained_layout=True)
    for ax, name in zip(axes.flat, names, strict=True):
        predicted, actual = PAIRS[name]
        for run, rows in runs.items():
            xs, ys = _points(rows, summary["skip_steps"], predicted, actual)
            ax.scatter(xs, ys, s=8, alpha=0.6, label=run)
        fit = summary["pooled"][name]
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.6)
        ax.set(xlabel="forecast ΔH (before the step)", ylabel="actual ΔH (after the step)")
        ax.set_title(
            f"{name}: r = {fit['r']:.3f}, slope = {fit['slope']:.2f}, MAE = {fit['mae']:.1e}",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/results/forecast"))
    parser.add_argument("--skip", type=int, default=5, help="first steps left out")
    args = parser.parse_args()
    summary = summarize(args.parent, args.skip)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(args.parent, summary, args.output / "forecast.png")
    for name, fit in summary["pooled"].items():
        print(f"{name:36s} r={fit['r']:.4f} slope={fit['slope']:.3f} MAE={fit['mae']:.3e}")


if __name__ == "__main__":
    main()
