"""Cost of the entropy forecast (``forecast.enabled``) as a ratio to a plain GRPO step.

Measured on identical data, as ``trainer_throughput.py`` measures the filters: one fixed rollout
batch of the embedded default, learned from (rewards, statistics, filter, update, dynamics)
starting from the same weights and optimizer state each time, the variants interleaved,
``--repeats`` times; medians. Variants: no forecast; the first-order forecast of the batch and
the probe set (``groups=false``); plus the token-group split (the default); plus the second-order
term. Ratios: a variant's learn time over plain GRPO's learn time, and its extra time over a full
GRPO step (rollout + learn). Writes JSON (default ``benchmarks/results/forecast_cost.json``).

    python benchmarks/forecast_cost.py --repeats 15
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from _interleaved import interleaved_learn_times

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.trainer import Trainer

VARIANTS = {  # name → (forecast on, groups, second order)
    "grpo": (False, False, False),
    "forecast_first_order": (True, False, False),
    "forecast_groups": (True, True, False),
    "forecast_second_order": (True, True, True),
}


def _measure(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    overrides = [
        f"seed={args.seed}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        "eval.every=0",
        "tensorboard=false",
        "forecast.enabled=true",
        f"forecast.probe_prompts={args.probe}",
    ]
    if args.threads:
        overrides.append(f"threads={args.threads}")
    trainer = Trainer(load_config(None, overrides), run_dir)
    forecaster = trainer.forecaster
    problems = [trainer.train_problems[i] for i in trainer.cursor.take(args.prompts)]

    def use(enabled: bool, groups: bool, second_order: bool):
        def switch() -> None:
            trainer.forecaster = forecaster if enabled else None
            forecaster.groups, forecaster.second_order = groups, second_order

        return switch

    variants = {name: use(*setting) for name, setting in VARIANTS.items()}
    rollout_times, learn_times, rollout = interleaved_learn_times(
        trainer, problems, variants, args.repeats, args.seed
    )
    rollout_s = statistics.median(rollout_times)
    learn_s = {name: statistics.median(times) for name, times in learn_times.items()}
    step_s = rollout_s + learn_s["grpo"]
    return {
        "rollout_s": rollout_s,
        "learn_s": learn_s,
        "learn_s_all": learn_times,
        "response_tokens": float(rollout.response_mask.sum()),
        "probe_tokens": float(trainer.probe.mask.sum()) if trainer.probe else 0.0,
        "learn_ratio": {name: learn_s[name] / learn_s["grpo"] for name in VARIANTS},
        "step_ratio": {name: 1.0 + (learn_s[name] - learn_s["grpo"]) / step_s for name in VARIANTS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--probe", type=int, default=32, help="probe prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results/forecast_cost.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measured = _measure(args, Path(tmp) / "run")
    results = {
        "config": vars(args) | {"output": str(args.output)},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        **measured,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("learn_ratio", "step_ratio", "rollout_s")}, indent=1))


if __name__ == "__main__":
    main()
