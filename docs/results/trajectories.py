"""Start and end of each run's training curves, mean ± sample std over seeds, as JSON.

    python docs/results/trajectories.py RUN_PARENT_DIR [-o FILE]

Per group of runs (``<group>-seed<N>`` directories): held-out entropy, pass@1 and pass@8 at the
first and the last in-training evaluation, the mean rollout entropy and train accuracy over the
first and the last 20 steps, and the fraction of steps whose re-measured entropy change was
negative. Mean and sample standard deviation are the library's
(``entropy_dynamics.study.summaries.mean_std``); the intervals of a claim come from
``entropy_dynamics.study.statistics`` (``collapse.py``, the report's vs-baseline tables).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from entropy_dynamics.study.summaries import mean_std
from entropy_dynamics.training.metrics import read_metrics


def summarize(parent: Path) -> dict[str, dict[str, list[float]]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for run in sorted(p.parent for p in parent.glob("*/metrics.jsonl")):
        groups[re.sub(r"-seed\d+$", "", run.name)].append(run)
    out = {}
    for group, runs in groups.items():
        values: dict[str, list[float]] = defaultdict(list)
        for run in runs:
            rows = read_metrics(run / "metrics.jsonl")
            evals = [r for r in rows if "eval/pass@1" in r]
            train = [r for r in rows if "entropy/mean" in r]
            values["eval_entropy_first"].append(evals[0]["eval/entropy"])
            values["eval_entropy_last"].append(evals[-1]["eval/entropy"])
            for k in ("pass@1", "pass@8"):
                values[f"eval_{k}_first"].append(evals[0][f"eval/{k}"])
                values[f"eval_{k}_last"].append(evals[-1][f"eval/{k}"])
            for name, key in (
                ("rollout_entropy", "entropy/mean"),
                ("train_accuracy", "reward/accuracy"),
            ):
                values[f"{name}_first20"].append(statistics.mean(r[key] for r in train[:20]))
                values[f"{name}_last20"].append(statistics.mean(r[key] for r in train[-20:]))
            falling = [r["dynamics/delta_h_actual"] < 0 for r in train]
            values["frac_steps_delta_h_negative"].append(sum(falling) / len(falling))
        out[group] = {"seeds": len(runs), **{k: list(mean_std(v)) for k, v in values.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    text = json.dumps(summarize(args.parent), indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
