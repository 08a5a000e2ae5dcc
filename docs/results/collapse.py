"""The collapse regime (issue 18): final entropy and Pass@k per method with bootstrap intervals over
seeds, and the entropy controller's tracking of its target.

    python docs/results/collapse.py RUN_DIR_OR_GRID... -o OUT [--warmup 20] [--band 0.1]

Reads ``entropy-dynamics compare`` grids (or run directories) through the report's own loaders
(``study.runs``: runs that differ only in seed form a group). Per run: the mean rollout entropy
of the last 20 steps, the final model's held-out entropy and unbiased Pass@k at k = 1..n from
``final_eval.json`` (n samples per problem), the step-0 held-out scores, and the share of steps
after ``--warmup`` whose mean rollout entropy lies within ±``--band`` of the target
(the target a closed-loop method logs; for the open-loop methods the first step's entropy, i.e.
"hold the initial entropy", as a reference). Per group: the mean over seeds with a 95 % percentile
bootstrap interval (10,000 resamples of the seeds), and the difference to GRPO paired by seed.
Writes ``OUT/summary.json``, ``OUT/runs.csv``, ``OUT/table.md``, ``OUT/collapse.png`` (entropy
over steps, Pass@k against GRPO) and ``OUT/tracking.png`` (the controller against its band).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from entropy_dynamics.study.plot_style import COLORS, pyplot, save
from entropy_dynamics.study.runs import group_runs, load_runs
from entropy_dynamics.training.evaluate import pass_at_k

RESAMPLES = 10_000
LAST = 20
TARGET_KEYS = ("entropy_target/target", "adaptive_entropy/target", "entropic/target")
"""Where a closed-loop method logs its target; other methods are compared with the first step's
entropy."""


def bootstrap(values: list[float], seed: int = 0) -> list[float]:
    """Mean and 95 % percentile bootstrap interval of the mean over ``values`` (seeds)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return [math.nan] * 3
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return [float(x.mean()), float(low), float(high)]


def tracking(rows: list[dict], warmup: int, band: float) -> dict[str, float]:
    """How closely the rollout entropy follows the target after ``warmup`` steps.

    ``tracking``: share of steps whose mean rollout entropy lies within ±band of the target;
    ``tracking_smoothed``: the same for its trailing 10-step mean; ``batch_noise``: the step-to-step
    noise of one batch's entropy (std of successive differences / √2); ``tracking_ceiling``: the
    share a controller holding the underlying entropy exactly at the target would reach under that
    noise (``erf(band · target / (noise · √2))``, Gaussian noise); ``target``: the constant target.
    """
    train = [r for r in rows if "entropy/mean" in r]
    after = [i for i, r in enumerate(train) if r["step"] > warmup]
    if len(after) < 2:
        return {"tracking": math.nan}
    h = np.array([r["entropy/mean"] for r in train])
    keys = [k for k in TARGET_KEYS if k in train[-1]]
    target = np.array([r.get(keys[0], h[0]) if keys else h[0] for r in train])
    smooth = np.array([h[max(0, i - 9) : i + 1].mean() for i in range(len(h))])
    idx = np.array(after)
    noise = float(np.std(np.diff(h[idx])) / math.sqrt(2))
    constant = float(target[idx][0]) if np.ptp(target[idx]) == 0 else math.nan
    width = band * target[idx]
    return {
        "tracking": float(np.mean(np.abs(h[idx] - target[idx]) <= width)),
        "tracking_smoothed": float(np.mean(np.abs(smooth[idx] - target[idx]) <= width)),
        "batch_noise": noise,
        "tracking_ceiling": math.erf(band * constant / (noise * math.sqrt(2))),
        "target": constant,
        "relative_error_mean": float(np.mean((h[idx] - target[idx]) / target[idx])),
    }


def run_values(run, warmup: int, band: float) -> dict[str, float]:
    train = run.train_rows
    evals = [r for r in run.rows if "eval/pass@1" in r]
    out = {
        "rollout_entropy_first": float(np.mean([r["entropy/mean"] for r in train[:LAST]])),
        "rollout_entropy_last": float(np.mean([r["entropy/mean"] for r in train[-LAST:]])),
        "step0_heldout_entropy": evals[0]["eval/entropy"] if evals else math.nan,
    }
    for key, value in (evals[0] if evals else {}).items():
        if key.startswith("eval/pass@"):
            out[f"step0_{key[5:]}"] = value
    kept = [r["actor/frac_kept"] for r in train if "actor/frac_kept" in r]
    out["frac_dropped"] = 1.0 - float(np.mean(kept)) if kept else math.nan
    out.update(tracking(run.rows, warmup, band))
    final = run.final_eval
    if final is not None:
        n, correct = int(final["k"]), final["correct"]
        out["heldout_entropy"] = final["mean_entropy"]
        for k in range(1, n + 1):
            out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
    return out


def summarize(
    paths: list[str], warmup: int, band: float, rename: dict[str, str] | None = None
) -> dict:
    groups = group_runs(load_runs(paths))
    for group in groups:
        group.label = (rename or {}).get(group.label, group.label)
    base = next((g for g in groups if g.method == "grpo"), None)
    base_by_seed = (
        {r.seed: run_values(r, warmup, band) for r in base.runs} if base is not None else {}
    )
    out = {}
    for group in groups:
        per_run = {r.seed: run_values(r, warmup, band) for r in group.runs}
        keys = list(dict.fromkeys(k for v in per_run.values() for k in v))
        entry = {"method": group.method, "settings": group.settings, "seeds": list(per_run)}
        entry["per_seed"] = per_run
        values = {k: [v.get(k, math.nan) for v in per_run.values()] for k in keys}
        entry["mean_ci"] = {k: bootstrap(v) for k, v in values.items()}
        paired = [s for s in per_run if s in base_by_seed]
        if group is not base and paired:
            entry["minus_grpo_ci"] = {
                k: bootstrap(
                    [per_run[s].get(k, math.nan) - base_by_seed[s].get(k, math.nan) for s in paired]
                )
                for k in keys
            }
        out[group.label] = entry
    return out


def _fmt(ci: list[float], digits: int = 3) -> str:
    if not math.isfinite(ci[0]):
        return "—"
    return f"{ci[0]:.{digits}f} [{ci[1]:.{digits}f}, {ci[2]:.{digits}f}]"


def table(summary: dict, ks: list[int]) -> str:
    cols = ["rollout_entropy_last", "heldout_entropy", *(f"pass@{k}" for k in ks)]
    names = ["final rollout entropy", "held-out entropy", *(f"Pass@{k}" for k in ks)]
    lines = ["| method | seeds | " + " | ".join(names) + " |", "|---" * (len(cols) + 2) + "|"]
    diff = ["| method | " + " | ".join(f"Δ {n}" for n in names) + " |", "|---" * (len(cols) + 1)]
    diff[1] += "|"
    first = next(iter(summary.values()), None)
    if first is not None:  # the model before training, from the first group's step-0 evaluations
        ci = first["mean_ci"]
        start = {"rollout_entropy_last": "rollout_entropy_first"}
        row = [_fmt(ci.get(start.get(c, f"step0_{c}"), [math.nan] * 3)) for c in cols]
        seeds = len(first["seeds"])
        lines.append(f"| initial model (step 0) | {seeds} | " + " | ".join(row) + " |")
    for label, entry in summary.items():
        ci = entry["mean_ci"]
        row = [_fmt(ci.get(c, [math.nan] * 3)) for c in cols]
        lines.append(f"| {label} | {len(entry['seeds'])} | " + " | ".join(row) + " |")
        if "minus_grpo_ci" in entry:
            d = entry["minus_grpo_ci"]
            row = [_fmt(d.get(c, [math.nan] * 3)) for c in cols]
            diff.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(diff) + "\n"


def figure(paths: list[str], summary: dict, out: Path, rename: dict[str, str]) -> Path:
    plt = pyplot()
    groups = group_runs(load_runs(paths))
    for group in groups:
        group.label = rename.get(group.label, group.label)
    fig, (ax_h, ax_k) = plt.subplots(1, 2, figsize=(11, 4))
    for color, group in zip(COLORS * 3, groups, strict=False):
        curves = np.array([[r["entropy/mean"] for r in run.train_rows] for run in group.runs])
        steps = np.arange(1, curves.shape[1] + 1)
        kernel = np.ones(10) / 10
        smooth = np.array([np.convolve(c, kernel, mode="valid") for c in curves])
        mean = smooth.mean(axis=0)
        ax_h.plot(steps[9:], mean, color=color, label=group.label)
        low, high = smooth.min(axis=0), smooth.max(axis=0)
        ax_h.fill_between(steps[9:], low, high, color=color, alpha=0.15)
        ci = summary[group.label]["mean_ci"]
        ks = sorted(int(k.split("@")[1]) for k in ci if k.startswith("pass@") and k[5:].isdigit())
        if ks:
            base = summary[groups[0].label]["mean_ci"]
            y = (
                np.array([ci[f"pass@{k}"] for k in ks])
                - np.array([base[f"pass@{k}"][0] for k in ks])[:, None]
            )
            ax_k.plot(ks, y[:, 0], color=color, marker="o", ms=3, label=group.label)
            ax_k.fill_between(ks, y[:, 1], y[:, 2], color=color, alpha=0.12)
    ax_h.set(xlabel="step", ylabel="rollout entropy (nats, 10-step mean)")
    ax_h.set_title("rollout entropy: seed mean, band = min..max over seeds")
    ticks = [k for k in ks if k & (k - 1) == 0]
    ax_k.set(xlabel="k", ylabel=f"Pass@k − {groups[0].label}'s mean", xscale="log", xticks=ticks)
    ax_k.set_xticklabels([str(k) for k in ticks])
    ax_k.minorticks_off()
    ax_k.set_title("final model, 95 % bootstrap interval over seeds")
    ax_k.legend(fontsize=7)
    return save(fig, out / "collapse.png")


def tracking_figure(paths: list[str], warmup: int, band: float, out: Path) -> Path | None:
    """Each ``entropy_target`` seed's rollout entropy relative to its target (raw and 10-step
    trailing mean), the ±band, and GRPO's seeds relative to their first step's entropy."""
    plt = pyplot()
    groups = group_runs(load_runs(paths))
    controlled = [g for g in groups if g.method == "entropy_target"]
    if not controlled:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.8))

    def relative(run) -> tuple[list[int], np.ndarray, np.ndarray]:
        rows = run.train_rows
        h = np.array([r["entropy/mean"] for r in rows])
        target = np.array([r.get("entropy_target/target", h[0]) for r in rows])
        rel = 100 * (h / target - 1)
        smooth = np.array([rel[max(0, i - 9) : i + 1].mean() for i in range(len(rel))])
        return [r["step"] for r in rows], rel, smooth

    for group in (g for g in groups if g.method == "grpo"):
        for i, run in enumerate(group.runs):
            steps, _, smooth = relative(run)
            label = "GRPO vs its first step (10-step mean)" if i == 0 else None
            ax.plot(steps, smooth, color="#888888", lw=1, label=label)
    for color, run in zip(COLORS, controlled[0].runs, strict=False):
        steps, rel, smooth = relative(run)
        share = tracking(run.rows, warmup, band)["tracking"]
        ax.plot(steps, rel, color=color, lw=0.6, alpha=0.3)
        ax.plot(steps, smooth, color=color, lw=1.5, label=f"seed {run.seed}: {share:.0%} of steps")
    ax.axhspan(-100 * band, 100 * band, color="#009E73", alpha=0.08)
    ax.axvline(warmup, color="#000000", lw=0.8, ls=":")
    ax.set(xlabel="step", ylabel="rollout entropy vs target (%)")
    ax.set_title(f"entropy_target, hold the first step's entropy: ±{band:.0%} band (shaded)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return save(fig, out / "tracking.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--band", type=float, default=0.1)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument(
        "--rename", action="append", default=[], metavar="LABEL->NAME", help="rename a group"
    )
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rename = dict(item.split("->", 1) for item in args.rename)
    summary = summarize(args.paths, args.warmup, args.band, rename)
    meta = {"warmup": args.warmup, "band": args.band, "resamples": RESAMPLES, "last_steps": LAST}
    (args.output / "summary.json").write_text(
        json.dumps({"meta": meta, "groups": summary}, indent=1) + "\n"
    )
    with open(args.output / "runs.csv", "w", newline="") as fh:
        keys = sorted({k for e in summary.values() for v in e["per_seed"].values() for k in v})
        writer = csv.writer(fh)
        writer.writerow(["group", "seed", *keys])
        for label, entry in summary.items():
            for seed, values in entry["per_seed"].items():
                writer.writerow([label, seed, *(f"{values.get(k, math.nan):.6g}" for k in keys)])
    ks = [int(k) for k in args.ks.split(",")]
    text = table(summary, ks)
    (args.output / "table.md").write_text(text)
    print(text)
    for label, entry in summary.items():
        for key in ("tracking", "tracking_smoothed", "tracking_ceiling", "batch_noise"):
            values = [round(v.get(key, math.nan), 3) for v in entry["per_seed"].values()]
            print(f"{label}: {key} (±{args.band:.0%}, after step {args.warmup}): {values}")
    if not args.no_figure:
        print(figure(args.paths, summary, args.output, rename))
        print(tracking_figure(args.paths, args.warmup, args.band, args.output))


if __name__ == "__main__":
    main()
