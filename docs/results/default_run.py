"""The README's default run over seeds: start and end of every figure it quotes, with intervals.

    python docs/results/default_run.py RUN_DIR_OR_GRID... -o OUT

Per run (the default ``entropy-dynamics train``, one seed each): the mean rollout entropy of the
first and the last 20 steps; the validation split's entropy, pass@1 and Pass@8 at the first
in-training evaluation (the model before training) and at the last; the final model's test
scores (``final_eval.json``); the number of steps whose entropy, re-measured after the update,
fell; and the Pearson r, across steps, of the first-order prediction and of Theorem 3.3's with
that actual change. Statistics are the library's (``entropy_dynamics.study.statistics``): mean
over seeds with its 95 % Student-t interval, and each end − start paired by seed with its
paired-t interval and p-value. Writes ``OUT/summary.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from entropy_dynamics.study.runs import final_record, load_runs
from entropy_dynamics.study.statistics import paired_difference, pass_at_k_matrix, t_interval
from entropy_dynamics.study.summaries import json_text, pearson

LAST = 20
CHANGES = {  # quoted as start -> end, paired by seed
    "rollout entropy": ("rollout_entropy_first", "rollout_entropy_last"),
    "validation entropy": ("validation_entropy_first", "validation_entropy_last"),
    "validation pass@1": ("validation_pass@1_first", "validation_pass@1_last"),
    "validation Pass@8": ("validation_pass@8_first", "validation_pass@8_last"),
}


def run_values(run) -> dict[str, float]:
    """The figures of one run (NaN where the run lacks them)."""
    train = run.train_rows
    entropy = [r["entropy/mean"] for r in train]
    out = {
        "steps": float(len(train)),
        "rollout_entropy_first": float(np.mean(entropy[:LAST])),
        "rollout_entropy_last": float(np.mean(entropy[-LAST:])),
    }
    evals = [r for r in run.rows if "eval/pass@1" in r]
    for end, row in (("first", evals[0] if evals else {}), ("last", evals[-1] if evals else {})):
        out[f"validation_entropy_{end}"] = row.get("eval/entropy", math.nan)
        for k in ("pass@1", "pass@8"):
            out[f"validation_{k}_{end}"] = row.get(f"eval/{k}", math.nan)
    actual = [r["dynamics/delta_h_actual"] for r in train if "dynamics/delta_h_actual" in r]
    out["steps_entropy_fell"] = float(sum(a < 0 for a in actual)) if actual else math.nan
    for name, key in (("first_order", "delta_h_first_order"), ("thm33", "delta_h_thm33")):
        pairs = [
            (r[f"dynamics/{key}"], r["dynamics/delta_h_actual"])
            for r in train
            if f"dynamics/{key}" in r and "dynamics/delta_h_actual" in r
        ]
        out[f"r_{name}"] = pearson(*zip(*pairs, strict=True)) if len(pairs) > 2 else math.nan
    final = final_record(run)
    if final is not None:
        n, correct = int(final["k"]), np.asarray(final["correct"])
        out["test_entropy"] = final["mean_entropy"]
        for k in (1, 8):
            if k <= n:
                out[f"test_pass@{k}"] = float(pass_at_k_matrix(correct, n, k).mean())
    return out


def summarize(paths: list[str]) -> dict:
    runs = sorted(load_runs(paths), key=lambda r: r.seed)
    per_seed = {run.seed: run_values(run) for run in runs}
    keys = list(dict.fromkeys(k for v in per_seed.values() for k in v))
    mean_ci = {}
    for key in keys:
        values = [v[key] for v in per_seed.values() if math.isfinite(v.get(key, math.nan))]
        if len(values) >= 2:
            ci = t_interval(values)
            mean_ci[key] = [ci.mean, ci.low, ci.high]
        elif values:
            mean_ci[key] = [values[0], math.nan, math.nan]
    changes = {}
    for name, (start, end) in CHANGES.items():
        seeds = [
            s for s, v in per_seed.items() if math.isfinite(v[start]) and math.isfinite(v[end])
        ]
        if len(seeds) >= 2:
            interval, p = paired_difference(
                [per_seed[s][end] for s in seeds], [per_seed[s][start] for s in seeds]
            )
            changes[name] = {
                "delta": interval.mean,
                "t_interval": [interval.low, interval.high],
                "p": p,
                "n": len(seeds),
            }
    return {"seeds": list(per_seed), "per_seed": per_seed, "mean_ci": mean_ci, "changes": changes}


def _ci(values: list[float] | None, digits: int = 3) -> str:
    if not values or not math.isfinite(values[0]):
        return "—"
    if not math.isfinite(values[1]):
        return f"{values[0]:.{digits}f}"
    return f"{values[0]:.{digits}f} [{values[1]:.{digits}f}, {values[2]:.{digits}f}]"


def table(summary: dict) -> str:
    ci, n = summary["mean_ci"], len(summary["seeds"])
    lines = ["| figure | start | end | end − start (paired t) | p |", "|---|---|---|---|---|"]
    for name, (start, end) in CHANGES.items():
        change = summary["changes"].get(name)
        delta = "—"
        p = "—"
        if change is not None:
            low, high = change["t_interval"]
            delta = f"{change['delta']:+.3f} [{low:+.3f}, {high:+.3f}]"
            p = "<0.001" if change["p"] < 0.001 else f"{change['p']:.3f}"
        lines.append(f"| {name} | {_ci(ci.get(start))} | {_ci(ci.get(end))} | {delta} | {p} |")
    lines += ["", "| figure | mean [95 % t interval] |", "|---|---|"]
    for key, label in (
        ("test_entropy", "final model, test entropy"),
        ("test_pass@1", "final model, test pass@1"),
        ("test_pass@8", "final model, test Pass@8"),
        ("steps_entropy_fell", "steps whose re-measured entropy fell"),
        ("r_first_order", "Pearson r across steps, first-order prediction vs actual"),
        ("r_thm33", "Pearson r across steps, Theorem 3.3's prediction vs actual"),
    ):
        digits = 1 if key == "steps_entropy_fell" else 3
        lines.append(f"| {label} | {_ci(ci.get(key), digits)} |")
    steps = ci.get("steps", [math.nan])[0]
    return (
        "\n".join(lines) + f"\n\n{n} seeds of {steps:.0f} steps; mean over seeds with its 95 % "
        "Student-t interval; start = the first 20 steps (rollout) or the step-0 evaluation "
        "(validation), end = the last 20 steps or the last evaluation.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    summary = summarize(args.paths)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json_text(summary) + "\n")
    text = table(summary)
    (args.output / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
