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
from pathlib import Path

from _interleaved import base_overrides, interleaved_learn_times, median_ratios, run_benchmark

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
        *base_overrides(args),
        "forecast.enabled=true",
        f"forecast.probe_prompts={args.probe}",
    ]
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
    probe_tokens = float(trainer.probe.mask.sum()) if trainer.probe else 0.0
    return {**median_ratios(rollout_times, learn_times, rollout), "probe_tokens": probe_tokens}


def main() -> None:
    run_benchmark(__doc__, _measure, repeats=15, output="forecast_cost.json", probe=True)


if __name__ == "__main__":
    main()
