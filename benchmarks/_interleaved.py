"""Learn-phase timings on identical data, variants interleaved, their medians and ratios, and the
JSON report (shared by the benchmarks).

Different settings sample different rollouts after their first update, so their step times differ
by the data, not by the setting. Here every repeat samples one rollout from the same weights
(seeded), then learns from it once per variant, weights and optimizer state restored before each.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def interleaved_learn_times(
    trainer, problems: list, variants: dict[str, Callable[[], None]], repeats: int, seed: int
):
    """``(rollout times, {variant: learn times}, last rollout)``; ``variants[name]()`` switches
    the trainer to that variant before its learn."""
    weights = copy.deepcopy(trainer.model.state_dict())
    optimizer = copy.deepcopy(trainer.optimizer.state_dict())
    rollout_times, learn_times = [], {name: [] for name in variants}
    trainer.learn(problems, trainer.rollout(problems))  # warm-up
    rollout = None
    for _ in range(repeats):
        torch.manual_seed(seed)
        trainer.model.load_state_dict(weights)
        start = time.perf_counter()
        rollout = trainer.rollout(problems)
        rollout_times.append(time.perf_counter() - start)
        for name, switch in variants.items():
            trainer.model.load_state_dict(weights)
            trainer.optimizer.load_state_dict(optimizer)
            switch()
            start = time.perf_counter()
            trainer.learn(problems, rollout)
            learn_times[name].append(time.perf_counter() - start)
    return rollout_times, learn_times, rollout


def base_overrides(args: argparse.Namespace) -> list[str]:
    """The trainer config of the benchmarks' command-line options: seed, batch shape, no
    evaluation, no TensorBoard, ``--threads``."""
    overrides = [
        f"seed={args.seed}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        "eval.every=0",
        "tensorboard=false",
    ]
    return overrides + ([f"threads={args.threads}"] if args.threads else [])


def median_ratios(rollout_times, learn_times, rollout, baseline: str = "grpo") -> dict:
    """Medians of :func:`interleaved_learn_times`' timings and each variant's ratios:
    ``learn_ratio`` (its learn time over ``baseline``'s) and ``step_ratio`` (1 + its extra time
    over a full ``baseline`` step, rollout + learn)."""
    rollout_s = statistics.median(rollout_times)
    learn_s = {name: statistics.median(times) for name, times in learn_times.items()}
    base, step_s = learn_s[baseline], rollout_s + learn_s[baseline]
    return {
        "rollout_s": rollout_s,
        "learn_s": learn_s,
        "learn_s_all": learn_times,
        "response_tokens": float(rollout.response_mask.sum()),
        "learn_ratio": {name: learn_s[name] / base for name in learn_s},
        "step_ratio": {name: 1.0 + (learn_s[name] - base) / step_s for name in learn_s},
    }


def write_results(args: argparse.Namespace, measured: dict) -> None:
    """``args.output`` ← JSON of the options, the machine and ``measured``; print the ratios."""
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


def run_benchmark(
    doc: str,
    measure: Callable[[argparse.Namespace, Path], dict],
    *,
    repeats: int,
    output: str,
    probe: bool = False,
) -> None:
    """The command line shared by the interleaved benchmarks: parse the options, run
    ``measure(args, run_dir)`` in a temporary run directory, write its JSON (:func:`write_results`,
    default ``benchmarks/results/<output>``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    if probe:
        parser.add_argument("--probe", type=int, default=32, help="probe prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / output)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_results(args, measure(args, Path(tmp) / "run"))
