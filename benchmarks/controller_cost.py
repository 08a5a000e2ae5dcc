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
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch
from _interleaved import interleaved_learn_times

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.controllers import build_controller
from entropy_dynamics.training.trainer import Trainer

VARIANTS = {  # name → (method, controller options, controller state set before each learn)
    "grpo": ("grpo", {}, {}),
    "entropy_target": ("entropy_target", {"target": 0.5}, {}),
    "adaptive_entropy": ("adaptive_entropy", {}, {"coef": 0.01, "last_entropy": 0.0}),
    "entropic": ("entropic", {"target": 0.2}, {}),
}


def _measure(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    overrides = [
        f"seed={args.seed}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        "eval.every=0",
        "tensorboard=false",
    ]
    if args.threads:
        overrides.append(f"threads={args.threads}")
    trainer = Trainer(load_config(None, overrides), run_dir)
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
    rollout_s = statistics.median(rollout_times)
    learn_s = {name: statistics.median(times) for name, times in learn_times.items()}
    step_s = rollout_s + learn_s["grpo"]
    return {
        "rollout_s": rollout_s,
        "learn_s": learn_s,
        "learn_s_all": learn_times,
        "response_tokens": float(rollout.response_mask.sum()),
        "learn_ratio": {name: learn_s[name] / learn_s["grpo"] for name in VARIANTS},
        "step_ratio": {name: 1.0 + (learn_s[name] - learn_s["grpo"]) / step_s for name in VARIANTS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results/controller_cost.json"
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
