"""Cost of the closed-loop methods (issue 18) as a ratio to a plain GRPO step.

Measured as ``forecast_cost.py`` measures the forecast: one fixed rollout batch of the embedded
default, learned from (rewards, statistics, controller, filter, update, dynamics) starting from
the same weights and optimizer state each time, the variants interleaved, ``--repeats`` times;
medians. Each variant acts on every repeat, so the cost is that of the method at work, not idle:

- ``entropy_target``: target 0.5 nats, above the embedded model's ~0.29, so the controller
  ranks the batch's tokens by their forecast and drops up to its cap (10 %) every time;
- ``adaptive_entropy``: the bonus on (coefficient 0.01, the last entropy below the target), so
  the update also backpropagates the entropy;
- ``entropic``: target 0.2, so ``α ≠ 0`` and EntroPIC's term is in the loss (its loss is not the
  fused PPO-clip one, so the update takes the unfused path).

Ratios: a variant's learn time over plain GRPO's, and its extra time over a full GRPO step
(rollout + learn). Writes JSON (default ``benchmarks/results/controller_cost.json``).

    python benchmarks/controller_cost.py --repeats 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _interleaved import base_overrides, interleaved_learn_times, median_ratios, run_benchmark

from entropy_dynamics.methods import build_controller
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.trainer import Trainer

VARIANTS = {  # name → (method, controller options, controller state set before each learn)
    "grpo": ("grpo", {}, {}),
    "entropy_target": ("entropy_target", {"target": 0.5}, {}),
    "adaptive_entropy": ("adaptive_entropy", {}, {"coef": 0.01, "last_entropy": 0.0}),
    "entropic": ("entropic", {"target": 0.2}, {}),
}


def _measure(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    trainer = Trainer(load_config(None, base_overrides(args)), run_dir)
    problems = [trainer.train_problems[i] for i in trainer.cursor.take(args.prompts)]
    steps = trainer.config.steps

    def use(method: str, control: dict, state: dict):
        algorithm = load_config(None, [f"algorithm.method={method}"]).algorithm
        base = algorithm.policy_loss()

        def switch() -> None:
            trainer.controller = build_controller(method, control, base, steps)
            trainer.controller.state.update(state)
            trainer.loss_config = base
            trainer.fused_loss = trainer.forward.fuses_loss(base)

        return switch

    variants = {name: use(*setting) for name, setting in VARIANTS.items()}
    rollout_times, learn_times, rollout = interleaved_learn_times(
        trainer, problems, variants, args.repeats, args.seed
    )
    return median_ratios(rollout_times, learn_times, rollout)


def main() -> None:
    run_benchmark(__doc__, _measure, repeats=9, output="controller_cost.json")


if __name__ == "__main__":
    main()
