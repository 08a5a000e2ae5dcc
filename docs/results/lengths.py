"""Answer length and the filters' reach (issue 26): per task and method, the response tokens in a
batch, the response length at the start and the end of training, and the share of tokens the
method's filter drops, tasks side by side.

    python docs/results/lengths.py --task countdown GRID... --task countdown_search GRID... -o OUT

Reads ``entropy-dynamics compare`` grids (or run directories) through the report's loaders
(``study.runs``: runs that differ only in seed form a group). Per run, from ``metrics.jsonl``:
tokens per batch, the mean over steps of ``response/length_mean`` × the batch's rows
(``rollout.prompts_per_step`` × ``rollout.group_size``); the mean response length over the first
and the last 20 steps; the dropped share ``1 − mean actor/frac_kept`` (tokens of the whole batch,
over the steps) and a filter's share of the tokens with negative advantage it dropped
(``clip_b/frac_clipped_neg``, ``clip_v/frac_clipped_neg``: the drops that change the gradient).
Per group the mean over seeds with its 95 % Student-t interval (``collapse.mean_interval``:
``study.statistics.t_interval`` over the finite values). Writes ``OUT/lengths.md`` (the table),
``OUT/lengths.json`` (per seed and per group) and ``OUT/lengths.png`` (response length over
training, per task: seed mean, band min..max over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from collapse import mean_interval  # the sibling script: mean and t interval, NaN left out

from entropy_dynamics.study.plot_style import COLORS, pyplot, save
from entropy_dynamics.study.runs import group_runs, load_runs

LAST = 20
COLUMNS = {
    "tokens_per_batch": "response tokens per batch",
    "length_first": f"mean response length, first {LAST} steps",
    "length_last": f"mean response length, last {LAST} steps",
    "frac_dropped": "dropped share (1 − actor/frac_kept)",
    "frac_dropped_neg": "dropped share of the tokens with A < 0 (clip_*/frac_clipped_neg)",
}
PERCENT = ("frac_dropped", "frac_dropped_neg")


def run_values(run) -> dict[str, float]:
    """The four columns of one run (NaN where its metrics lack the key)."""
    train = run.train_rows
    lengths = [r["response/length_mean"] for r in train if "response/length_mean" in r]
    rows = int(run.config["rollout.prompts_per_step"]) * int(run.config["rollout.group_size"])
    kept = [r["actor/frac_kept"] for r in train if "actor/frac_kept" in r]
    # a filter's share of the negative-advantage tokens (the ones whose drop changes the
    # gradient; Clip_V also drops zero-advantage candidates, which only leave the denominator)
    negative = [v for r in train for k, v in r.items() if k.endswith("/frac_clipped_neg")]
    nan = math.nan
    return {
        "tokens_per_batch": float(np.mean(lengths)) * rows if lengths else nan,
        "length_first": float(np.mean(lengths[:LAST])) if lengths else nan,
        "length_last": float(np.mean(lengths[-LAST:])) if lengths else nan,
        "frac_dropped": 1.0 - float(np.mean(kept)) if kept else nan,
        "frac_dropped_neg": float(np.mean(negative)) if negative else nan,
    }


def summarize(tasks: dict[str, list], rename: dict[str, str]) -> dict:
    """``{task: {group label: {"seeds", "per_seed", "mean_ci"}}}`` of each task's run groups."""
    out: dict = {}
    for task, groups in tasks.items():
        out[task] = {}
        for group in groups:
            per_seed = {run.seed: run_values(run) for run in group.runs}
            intervals = {}
            for key in COLUMNS:  # NaN where a method lacks the metric (no filter)
                intervals[key] = mean_interval([v[key] for v in per_seed.values()])
            out[task][rename.get(group.label, group.label)] = {
                "method": group.method,
                "seeds": sorted(per_seed),
                "per_seed": per_seed,
                "mean_ci": intervals,
            }
    return out


def _cell(ci: list[float], percent: bool) -> str:
    scale, unit, digits = (100.0, " %", 3) if percent else (1.0, "", 1)
    mean, low, high = (v * scale for v in ci)
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(low):
        return f"{mean:.{digits}f}{unit}"
    return f"{mean:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}]"


def table(summary: dict) -> str:
    """One row per task and method: mean [95 % t interval] over seeds."""
    head = ["task", "method", "seeds", *COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, groups in summary.items():
        for label, group in groups.items():
            cells = [_cell(group["mean_ci"][k], k in PERCENT) for k in COLUMNS]
            lines.append(
                f"| {task} | {label} | {len(group['seeds'])} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def figure(tasks: dict[str, list], rename: dict[str, str], out: Path) -> Path:
    """Response length over training, one panel per task (its run groups)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    names = dict.fromkeys(rename.get(g.label, g.label) for gs in tasks.values() for g in gs)
    colors = dict(zip(names, COLORS * 3, strict=False))  # a method's colour in every panel
    for ax, (task, groups) in zip(axes[0], tasks.items(), strict=True):
        for group in groups:
            curves = [[r["response/length_mean"] for r in run.train_rows] for run in group.runs]
            width = min(len(c) for c in curves)
            curves = np.array([c[:width] for c in curves])
            steps = np.arange(1, width + 1)
            label = rename.get(group.label, group.label)
            color = colors[label]
            ax.plot(steps, curves.mean(axis=0), color=color, label=label)
            ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.12)
        ax.set(xlabel="step", ylabel="mean response length (tokens)", title=task)
        ax.legend(fontsize=7)
    return save(fig, out / "lengths.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", nargs="+", action="append", required=True, metavar=("NAME", "PATH"),
        help="a task's name, then its grids or run directories (repeat per task)",
    )  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--rename", action="append", default=[], metavar="LABEL->NAME")
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args()
    if any(len(task) < 2 for task in args.task):
        parser.error("--task: a name, then at least one grid or run directory")
    tasks = {task[0]: group_runs(load_runs(task[1:])) for task in args.task}  # read once
    rename = dict(item.split("->", 1) for item in args.rename)
    summary = summarize(tasks, rename)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lengths.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.output / "lengths.md").write_text(table(summary))
    if not args.no_figure:
        figure(tasks, rename, args.output)
    print(table(summary))


if __name__ == "__main__":
    main()
