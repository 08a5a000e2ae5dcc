"""The collapse regime (issue 18): final entropy and Pass@k per method with intervals over seeds,
the difference to GRPO with Holm-adjusted p-values, and the entropy controller's tracking of its
target.

    python docs/results/collapse.py RUN_DIR_OR_GRID... -o OUT [--warmup 20] [--band 0.1]
    python docs/results/collapse.py --from-summary OLD_OUT/summary.json -o OUT


Reads ``entropy-dynamics compare`` grids (or run directories) through the report's own loaders
(``study.runs``: runs that differ only in seed form a group). Per run: the mean rollout entropy
of the last 20 steps, the final model's held-out entropy and unbiased Pass@k at k = 1..n from
``final_eval.json`` (n samples per problem), the step-0 held-out scores, and the share of steps
after ``--warmup`` whose mean rollout entropy lies within ±``--band`` of the target
(the target a closed-loop method logs; for the open-loop methods the first step's entropy, i.e.
"hold the initial entropy", as a reference). The statistics are the library's
(``entropy_dynamics.study.statistics``): per group the mean over seeds with its 95 % Student-t
interval; the difference to GRPO paired by seed with its paired-t interval, p-value and the
Holm-adjusted p-value over the cells of the difference table, and for Pass@k the hierarchical
bootstrap over seeds and problems (10,000 resamples; needs the runs' per-problem counts). Every
final-evaluation number names its split (``held-out`` for runs evaluated before the validation /
test splits existed). Writes ``OUT/summary.json``, ``OUT/runs.csv``, ``OUT/table.md``,
``OUT/collapse.png`` (entropy over steps, Pass@k against GRPO) and ``OUT/tracking.png`` (the
controller against its band).

``--from-summary`` recomputes the statistics from the per-seed values of a summary this script
wrote (the committed ``docs/results/collapse/**/summary.json``), without the runs: no bootstrap
and no figures then.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from entropy_dynamics.study.plot_style import COLORS, pyplot, save
from entropy_dynamics.study.runs import final_record, group_runs, load_runs, record_split
from entropy_dynamics.study.statistics import (
    RESAMPLES,
    compare_to_baseline,
    pass_at_k_matrix,
    t_interval,
)
from entropy_dynamics.study.summaries import json_text

LAST = 20
TARGET_KEYS = ("entropy_target/target", "adaptive_entropy/target", "entropic/target")
"""Where a closed-loop method logs its target; other methods are compared with the first step's
entropy."""


def mean_interval(values: list[float]) -> list[float]:
    """Mean and 95 % Student-t interval over ``values`` (seeds; NaN ones left out)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [math.nan] * 3
    interval = t_interval(finite)
    return [interval.mean, interval.low, interval.high]


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
        "tracking_ceiling": math.erf(band * constant / (noise * math.sqrt(2)))
        if noise > 0
        else math.nan,
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
    final = final_record(run)
    if final is not None:
        n, correct = int(final["k"]), np.asarray(final["correct"])
        out["heldout_entropy"] = final["mean_entropy"]
        for k in range(1, n + 1):
            out[f"pass@{k}"] = float(pass_at_k_matrix(correct, n, k).mean())
        out.update(solved_counts(correct, n))
    return out


def solved_counts(correct, n: int) -> dict[str, float]:
    """The two ends of the pass-rate histogram: problems none of the ``n`` samples solved, and
    problems every sample solved."""
    correct = np.asarray(correct)
    return {
        "never_solved": float((correct == 0).sum()),
        "always_solved": float((correct == n).sum()),
    }


def initial_row(path: Path, ks: list[int]) -> dict[str, float]:
    """The untrained model's scores from an ``entropy-dynamics eval --output`` JSON (its split
    should be the runs' final-evaluation split)."""
    data = json.loads(path.read_text())
    n, correct = int(data["k"]), np.asarray(data["per_problem_correct"])
    row = {"heldout_entropy": data["metrics"]["eval/entropy"], "split": data["split"]}
    row.update({f"pass@{k}": float(pass_at_k_matrix(correct, n, k).mean()) for k in ks if k <= n})
    row.update(solved_counts(correct, n))
    return row


def per_problem(run, ks: list[int]) -> dict[str, np.ndarray]:
    """Per-problem Pass@k of the run's final model (the hierarchical bootstrap's input)."""
    final = final_record(run)
    if final is None:
        return {}
    n, correct = int(final["k"]), np.asarray(final["correct"])
    return {f"pass@{k}": pass_at_k_matrix(correct, n, k) for k in ks if k <= n}


def table_columns(ks: list[int]) -> list[str]:
    return ["rollout_entropy_last", "heldout_entropy", *(f"pass@{k}" for k in ks)]


def summarize(
    paths: list[str],
    warmup: int,
    band: float,
    rename: dict[str, str] | None = None,
    ks: list[int] = (1, 4, 8, 16),
) -> dict:
    groups = group_runs(load_runs(paths))
    out, problems = {}, {}
    for group in groups:
        label = (rename or {}).get(group.label, group.label)
        records = [final_record(r) for r in group.runs]
        out[label] = {
            "method": group.method,
            "settings": group.settings,
            "seeds": [r.seed for r in group.runs],
            "split": "/".join(sorted({record_split(f) for f in records if f})) or None,
            "per_seed": {r.seed: run_values(r, warmup, band) for r in group.runs},
        }
        problems[label] = {r.seed: per_problem(r, ks) for r in group.runs}
    return add_statistics(out, ks, problems)


def add_statistics(groups: dict, ks: list[int], problems: dict | None = None) -> dict:
    """Per group ``mean_ci`` (mean and t interval of every value over seeds); against GRPO (the
    first group of method ``grpo``) ``minus_grpo_ci`` (paired difference and its paired-t
    interval, every value) and ``minus_grpo`` (the difference table's cells: p, Holm-adjusted
    p over the table, n, and the hierarchical bootstrap where ``problems`` has the per-problem
    scores)."""
    base = next((label for label, e in groups.items() if e["method"] == "grpo"), None)
    columns = table_columns(ks)
    for entry in groups.values():
        per_seed = entry["per_seed"]
        keys = list(dict.fromkeys(k for v in per_seed.values() for k in v))
        entry["mean_ci"] = {
            k: mean_interval([v.get(k, math.nan) for v in per_seed.values()]) for k in keys
        }
    if base is None:
        return groups

    def by_seed(entry: dict, keys) -> dict:
        return {
            k: {s: v[k] for s, v in entry["per_seed"].items() if math.isfinite(v.get(k, math.nan))}
            for k in keys
        }

    every = {k for e in groups.values() for v in e["per_seed"].values() for k in v}
    everything = compare_to_baseline({lb: by_seed(e, every) for lb, e in groups.items()}, base)
    for cell in everything:
        d = cell.difference
        groups[cell.method].setdefault("minus_grpo_ci", {})[cell.metric] = [d.mean, d.low, d.high]
    scores = None
    if problems:
        scores = {
            label: {k: {s: p[k] for s, p in by.items() if k in p} for k in columns}
            for label, by in problems.items()
        }
    table = compare_to_baseline({lb: by_seed(e, columns) for lb, e in groups.items()}, base, scores)
    for cell in table:
        d, boot = cell.difference, cell.bootstrap
        groups[cell.method].setdefault("minus_grpo", {})[cell.metric] = {
            "delta": d.mean,
            "t_interval": [d.low, d.high],
            "n": d.n,
            "p": cell.p_value,
            "p_holm": cell.p_adjusted,
            "bootstrap": None if boot is None else [boot.low, boot.high],
        }
    return groups


def fmt_interval(ci: list[float | None], digits: int = 3) -> str:
    """``mean [low, high]``; the mean alone without an interval (one seed), ``—`` without a mean."""
    if ci[0] is None or not math.isfinite(ci[0]):
        return "—"
    if ci[1] is None or not math.isfinite(ci[1]):  # one seed: no interval
        return f"{ci[0]:.{digits}f}"
    return f"{ci[0]:.{digits}f} [{ci[1]:.{digits}f}, {ci[2]:.{digits}f}]"


def table(summary: dict, ks: list[int], initial: dict | None = None) -> str:
    cols = table_columns(ks)
    names = ["final rollout entropy", "held-out entropy", *(f"Pass@{k}" for k in ks)]
    splits = sorted({e.get("split") or "—" for e in summary.values()})
    lines = ["| method | seeds | " + " | ".join(names) + " |", "|---" * (len(cols) + 2) + "|"]
    first = next(iter(summary.values()), None)
    if initial is not None:  # the model before training, evaluated once (no interval)
        row = [fmt_interval([initial.get(c, math.nan), math.nan, math.nan]) for c in cols]
        lines.append(
            f"| model before training ({initial['split']}) | — | " + " | ".join(row) + " |"
        )
    elif first is not None:  # the model before training, from the first group's step-0 evaluations
        ci = first["mean_ci"]
        start = {"rollout_entropy_last": "rollout_entropy_first"}
        row = [fmt_interval(ci.get(start.get(c, f"step0_{c}"), [math.nan] * 3)) for c in cols]
        seeds = len(first["seeds"])
        lines.append(f"| initial model (step 0) | {seeds} | " + " | ".join(row) + " |")
    diff = ["| method | " + " | ".join(f"Δ {n}" for n in names) + " |", "|---" * (len(cols) + 1)]
    diff[1] += "|"
    boot = ["| method | " + " | ".join(f"Δ {n}" for n in names[2:]) + " |", "|---" * (len(ks) + 1)]
    boot[1] += "|"
    cells = 0
    for label, entry in summary.items():
        ci = entry["mean_ci"]
        row = [fmt_interval(ci.get(c, [math.nan] * 3)) for c in cols]
        lines.append(f"| {label} | {len(entry['seeds'])} | " + " | ".join(row) + " |")
        if "minus_grpo" in entry:
            d = entry["minus_grpo"]
            row = [_diff_cell(d.get(c)) for c in cols]
            diff.append(f"| {label} | " + " | ".join(row) + " |")
            cells += sum(c in d and math.isfinite(d[c]["p"]) for c in cols)
            row = [_interval(d.get(c, {}).get("bootstrap")) for c in cols[2:]]
            boot.append(f"| {label} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n\n"
    text += (
        "Mean over seeds with its 95 % Student-t interval; final-evaluation split: "
        f"{', '.join(splits)}; rollout entropy: the last {LAST} training steps.\n\n"
    )
    if len(diff) == 2:
        return text + "No GRPO group (or no seed it shares): no differences to it.\n"
    text += "\n".join(diff) + "\n\n"
    text += (
        "Δ = method − GRPO paired by seed, with its 95 % paired-t interval; p: paired t; Holm: "
        f"p Holm-adjusted over the {cells} cells of this table.\n"
    )
    if any("[" in line for line in boot[2:]):
        text += "\n" + "\n".join(boot) + "\n\n"
        text += (
            f"Δ Pass@k with the hierarchical bootstrap: {RESAMPLES:,} resamples of the seeds and, "
            "within them, the split's problems (the same problems for method and GRPO).\n"
        )
    return text + solved_table(summary, initial)


def solved_table(summary: dict, initial: dict | None = None) -> str:
    """Dropped share and the pass-rate histogram's ends per group, with t intervals over seeds
    and the paired difference to GRPO (its p not in the Holm family above)."""
    keys = ("never_solved", "always_solved")
    if not any(k in e["mean_ci"] for e in summary.values() for k in keys):
        return ""
    lines = [
        "| method | dropped | never solved | always solved | Δ never solved | Δ always solved |",
        "|---|---|---|---|---|---|",
    ]
    if initial is not None and "never_solved" in initial:
        lines.append(
            f"| model before training | — | {initial['never_solved']:.0f} | "
            f"{initial['always_solved']:.0f} | | |"
        )
    for label, entry in summary.items():
        ci, diff = entry["mean_ci"], entry.get("minus_grpo_ci", {})
        dropped = ci.get("frac_dropped", [math.nan] * 3)[0]
        share = "—" if not math.isfinite(dropped) or dropped <= 0 else f"{100 * dropped:.2f} %"
        share = "< 0.005 %" if share == "0.00 %" else share
        cells = [fmt_interval(ci.get(k, [math.nan] * 3), 1) for k in keys]
        deltas = [fmt_interval(diff[k], 1) if k in diff else "" for k in keys]
        lines.append(f"| {label} | {share} | " + " | ".join(cells + deltas) + " |")
    return (
        "\n" + "\n".join(lines) + "\n\nDropped: the share of response tokens the filter removed, "
        "mean over steps and seeds. Never / always solved: problems of the split that none / all "
        "of the samples solved (mean over seeds, 95 % t interval; Δ paired by seed).\n"
    )


def _diff_cell(cell: dict | None) -> str:
    """``+0.090 [+0.045, +0.135], p 0.005, Holm 0.169``."""
    if cell is None or cell["delta"] is None or not math.isfinite(cell["delta"]):
        return "—"
    text = f"{cell['delta']:+.3f} {_interval(cell['t_interval'])}"
    return f"{text}, p {_p(cell['p'])}, Holm {_p(cell['p_holm'])}"


def _p(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval(bounds: list[float | None] | None) -> str:
    if bounds is None or not all(b is not None and math.isfinite(b) for b in bounds):
        return "—"
    return f"[{bounds[0]:+.3f}, {bounds[1]:+.3f}]"


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
    ax_k.set_title("final model, 95 % t interval over seeds")
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


def from_summary(path: Path, ks: list[int]) -> tuple[dict, dict]:
    """The meta and groups of a summary this script wrote, the statistics recomputed from its
    per-seed values (a summary written before the splits: its final evaluations are held-out)."""
    data = json.loads(path.read_text())
    groups = {}
    for label, entry in data["groups"].items():
        per_seed = {
            int(seed): {k: math.nan if v is None else v for k, v in values.items()}
            for seed, values in entry["per_seed"].items()
        }
        evaluated = any("heldout_entropy" in v for v in per_seed.values())
        groups[label] = {
            "method": entry["method"],
            "settings": entry["settings"],
            "seeds": entry["seeds"],
            "split": entry.get("split", "held-out" if evaluated else None),
            "per_seed": per_seed,
        }
    return data.get("meta", {}), add_statistics(groups, ks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--band", type=float, default=0.1)
    parser.add_argument("--ks", default="1,2,4,8,16")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument(
        "--rename", action="append", default=[], metavar="LABEL->NAME", help="rename a group"
    )
    parser.add_argument(
        "--from-summary", type=Path, help="recompute from this summary.json's per-seed values"
    )
    parser.add_argument(
        "--initial", type=Path, help="the untrained model's `entropy-dynamics eval --output` JSON"
    )
    args = parser.parse_args()
    if bool(args.paths) == bool(args.from_summary):
        parser.error("give run directories or --from-summary, not both")
    ks = [int(k) for k in args.ks.split(",")]
    args.output.mkdir(parents=True, exist_ok=True)
    rename = dict(item.split("->", 1) for item in args.rename)
    meta = {"warmup": args.warmup, "band": args.band, "last_steps": LAST}
    if args.from_summary:
        old, summary = from_summary(args.from_summary, ks)
        meta.update({k: old[k] for k in ("warmup", "band", "last_steps", "initial") if k in old})
    else:
        summary = summarize(args.paths, args.warmup, args.band, rename, ks)
    meta.update(
        interval="95 % Student t over seeds; differences paired by seed (paired t)",
        p_adjustment="Holm over the cells of the difference table (entropies and Pass@k)",
        bootstrap_resamples=RESAMPLES,
    )
    with open(args.output / "runs.csv", "w", newline="") as fh:
        keys = sorted({k for e in summary.values() for v in e["per_seed"].values() for k in v})
        writer = csv.writer(fh)
        writer.writerow(["group", "seed", *keys])
        for label, entry in summary.items():
            for seed, values in entry["per_seed"].items():
                writer.writerow([label, seed, *(f"{values.get(k, math.nan):.6g}" for k in keys)])
    initial = initial_row(args.initial, ks) if args.initial else meta.pop("initial", None)
    if initial is not None:
        meta["initial"] = initial
    (args.output / "summary.json").write_text(json_text({"meta": meta, "groups": summary}) + "\n")
    text = table(summary, ks, initial)
    (args.output / "table.md").write_text(text)
    print(text)
    for label, entry in summary.items():
        for key in ("tracking", "tracking_smoothed", "tracking_ceiling", "batch_noise"):
            values = [round(v.get(key, math.nan), 3) for v in entry["per_seed"].values()]
            print(f"{label}: {key} (±{meta['band']:.0%}, after step {meta['warmup']}): {values}")
    if not args.no_figure and args.paths:
        print(figure(args.paths, summary, args.output, rename))
        print(tracking_figure(args.paths, args.warmup, args.band, args.output))


if __name__ == "__main__":
    main()
