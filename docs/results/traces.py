"""How the search traces change with training (issue 26): per model, the lines of search its
answers open — operations and backtracking per answer, and how many different first moves and
different operations its k samples of one problem try — beside the untrained model.

    python docs/results/traces.py GRID_OR_RUN... -o OUT [--initial] [--problems 100] [--k 16]

Samples ``--k`` answers to each of the first ``--problems`` problems of the test split (T = 1,
answers up to the run's ``rollout.max_new_tokens``; ``torch.manual_seed(--seed)`` before each
model) from each run's newest checkpoint (``RunSetup.from_run``) and, with ``--initial``, from the
untrained model of the runs' task. Reads every answer with the task's trace parser
(``entropy_dynamics.tasks.parse_trace``). Per model: operations per answer, ``back`` lines per
answer, the share of answers that backtrack, distinct first operations among a problem's k answers
and distinct operations (``left op right``) over them (means over problems), and the share of
correct answers. Per group (runs that differ only in seed) the mean over seeds with its 95 %
Student-t interval (``collapse.mean_interval``). Writes ``OUT/traces.json`` and ``OUT/traces.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from collapse import fmt_interval, mean_interval

from entropy_dynamics.study.runs import group_runs, load_runs
from entropy_dynamics.tasks import parse_trace
from entropy_dynamics.tasks.base import score_all
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.setup import RunSetup

COLUMNS = {
    "operations": "operations per answer",
    "backs": "back lines per answer",
    "backtracking": "answers that backtrack",
    "first_moves": "distinct first operations per problem",
    "operations_tried": "distinct operations per problem",
    "correct": "correct answers",
}


def trace_values(completions: list[str], correct: list[bool], k: int) -> dict[str, float]:
    """The columns from ``k`` consecutive completions per problem (and their correctness)."""
    parsed = [parse_trace(text) for text in completions]
    ops = [[s.operation[:3] for s in p.steps if s.operation is not None] for p in parsed]
    backs = [sum(s.operation is None for s in p.steps) for p in parsed]
    groups = [range(start, start + k) for start in range(0, len(parsed), k)]
    return {
        "operations": float(np.mean([len(o) for o in ops])),
        "backs": float(np.mean(backs)),
        "backtracking": float(np.mean([b > 0 for b in backs])),
        "first_moves": float(np.mean([len({ops[i][0] for i in g if ops[i]}) for g in groups])),
        "operations_tried": float(np.mean([len({op for i in g for op in ops[i]}) for g in groups])),
        "correct": float(np.mean(correct)),
    }


def measure(setup: RunSetup, problems: int, k: int, seed: int) -> dict[str, float]:
    """Sample and read ``k`` answers to each of the test split's first ``problems``."""
    chosen = setup.problems("test")[:problems]
    torch.manual_seed(seed)
    rollout = generate(
        setup.model,
        setup.tokenizer,
        [setup.task.prompt(problem) for problem in chosen],
        num_samples=k,
        temperature=1.0,
        max_new_tokens=setup.config.rollout.max_new_tokens,
        batch_size=64,
    )
    owners = [chosen[i] for i in rollout.prompt_index.tolist()]
    scores = score_all(setup.task, owners, rollout.completions)
    return trace_values(rollout.completions, [float(s.correct) >= 0.5 for s in scores], k)


def table(summary: dict) -> str:
    head = ["model", "seeds", *COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, entry in summary.items():
        cells = [fmt_interval(entry["mean_ci"][key], 2) for key in COLUMNS]
        lines.append(f"| {label} | {len(entry['per_seed'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="compare grids or run directories")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--initial", action="store_true", help="also the untrained model")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rename", action="append", default=[], metavar="LABEL->NAME")
    args = parser.parse_args()
    rename = dict(item.split("->", 1) for item in args.rename)
    groups = group_runs(load_runs(args.paths))
    summary: dict = {}
    if args.initial:  # the embedded model of the first run's task, untrained
        task = groups[0].runs[0].config["task.name"]
        base = RunSetup.build(load_config(None, ["model.path="], task=task))
        summary["model before training"] = {
            "per_seed": {"-": measure(base, args.problems, args.k, args.seed)}
        }
    for group in groups:
        per_seed = {}
        for run in group.runs:
            setup = RunSetup.from_run(run.path)
            per_seed[run.seed] = measure(setup, args.problems, args.k, args.seed)
            print(f"{run.path}: {per_seed[run.seed]}", flush=True)
        summary[rename.get(group.label, group.label)] = {"per_seed": per_seed}
    for entry in summary.values():
        values = list(entry["per_seed"].values())
        entry["mean_ci"] = {key: mean_interval([v[key] for v in values]) for key in COLUMNS}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "traces.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.output / "traces.md").write_text(table(summary))
    print(table(summary))


if __name__ == "__main__":
    main()
