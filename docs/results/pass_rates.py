"""The pass-rate histogram (the paper's Figure of per-problem pass rates; issue 26): for each
method, how many test problems its final models solve in 0, 1, …, n of their n samples, mean over
seeds with a 95 % Student-t interval, beside the untrained model.

    python docs/results/pass_rates.py GRID_OR_RUN... -o OUT [--initial BASE.json] [--rename A->B]

Reads ``entropy-dynamics compare`` grids (or run directories) through the report's loaders
(``study.runs``: runs that differ only in seed form a group) and each run's final-evaluation
record of the test split (``final_eval.json``: the per-problem count of correct samples).
``--initial`` is the untrained model's ``entropy-dynamics eval --output`` JSON on the same split.
Writes ``OUT/pass_rates.json`` (per seed: problems at each count 0..n; per group: mean and
interval per count and per band), ``OUT/pass_rates.md`` (the bands: never solved, 1 to n/4,
… , always solved) and ``OUT/pass_rates.png`` (problems per count, one line per method).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from collapse import fmt_interval, mean_interval  # the sibling script's statistics, format

from entropy_dynamics.study.plot_style import COLORS, GREY, pyplot, save
from entropy_dynamics.study.runs import final_record, group_runs, load_runs


def counts(correct, n: int) -> list[int]:
    """Problems solved by exactly j of the ``n`` samples, for j = 0..n."""
    correct = np.asarray(correct, dtype=int)
    if correct.size and (correct.min() < 0 or correct.max() > n):
        raise ValueError(f"per-problem correct counts must lie in 0..{n}")
    return np.bincount(correct, minlength=n + 1).tolist()


def bands(n: int) -> list[tuple[str, int, int]]:
    """(label, first count, last count): never solved, four quarters of 1..n−1, always solved."""
    edges = sorted({1, *(round(n * q / 4) for q in (1, 2, 3)), n})
    inner = [
        (f"{lo}–{hi - 1} of {n}" if hi - 1 > lo else f"{lo} of {n}", lo, hi - 1)
        for lo, hi in itertools.pairwise(edges)
        if hi > lo
    ]
    return [(f"0 of {n} (never)", 0, 0), *inner, (f"{n} of {n} (always)", n, n)]


def summarize(groups, rename: dict[str, str], initial: Path | None = None) -> dict:
    """Per group the per-seed counts and, per count and per band, mean [t interval] over seeds."""
    out: dict = {"groups": {}}
    ns: set[int] = set()
    for group in groups:
        per_seed = {}
        for run in group.runs:
            final = final_record(run)
            if final is not None:
                ns.add(int(final["k"]))
                per_seed[run.seed] = counts(final["correct"], int(final["k"]))
        if per_seed:
            out["groups"][rename.get(group.label, group.label)] = {"per_seed": per_seed}
    if initial is not None:
        data = json.loads(initial.read_text())
        ns.add(int(data["k"]))
        out["initial"] = counts(data["per_problem_correct"], int(data["k"]))
    if not ns:
        raise SystemExit("pass_rates.py: no run has a final evaluation (final_eval.json)")
    if len(ns) != 1:
        raise SystemExit(f"pass_rates.py: the runs drew different samples per problem: {ns}")
    n = out["n"] = ns.pop()
    out["bands"] = bands(n)
    for entry in out["groups"].values():
        seeds = list(entry["per_seed"].values())
        entry["per_count"] = [mean_interval([s[j] for s in seeds]) for j in range(n + 1)]
        entry["per_band"] = [
            mean_interval([sum(s[lo : hi + 1]) for s in seeds]) for _, lo, hi in out["bands"]
        ]
    return out


def table(summary: dict) -> str:
    """Problems per band: mean [95 % t interval] over seeds; the untrained model's count."""
    head = ["method", "seeds", *(label for label, _, _ in summary["bands"])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if "initial" in summary:
        cells = [str(sum(summary["initial"][lo : hi + 1])) for _, lo, hi in summary["bands"]]
        lines.append("| *model before training* | 1 | " + " | ".join(cells) + " |")
    for label, entry in summary["groups"].items():
        cells = [fmt_interval(ci, 1) for ci in entry["per_band"]]
        lines.append(f"| {label} | {len(entry['per_seed'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(summary: dict, out: Path) -> Path:
    """Problems per count of correct samples, one line per method (mean over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(summary["n"] + 1)
    if "initial" in summary:
        ax.plot(x, summary["initial"], color=GREY, ls="--", marker=".", label="before training")
    for color, (label, entry) in zip(COLORS * 2, summary["groups"].items(), strict=False):
        ax.plot(x, [m for m, _, _ in entry["per_count"]], color=color, marker=".", label=label)
    ax.set(
        xlabel=f"correct samples of {summary['n']} (per test problem)",
        ylabel="test problems (mean over seeds)",
        title="Pass-rate histogram of the final models",
    )
    ax.legend(fontsize=7)
    return save(fig, out / "pass_rates.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="compare grids or run directories")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--initial", type=Path, help="the untrained model's eval --output JSON")
    parser.add_argument("--rename", action="append", default=[], metavar="LABEL->NAME")
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args()
    rename = dict(item.split("->", 1) for item in args.rename)
    summary = summarize(group_runs(load_runs(args.paths)), rename, args.initial)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "pass_rates.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.output / "pass_rates.md").write_text(table(summary))
    if not args.no_figure:
        figure(summary, args.output)
    print(table(summary))


if __name__ == "__main__":
    main()
