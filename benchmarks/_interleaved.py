"""Learn-phase timings on identical data, variants interleaved (shared by the benchmarks).

Different settings sample different rollouts after their first update, so their step times differ
by the data, not by the setting. Here every repeat samples one rollout from the same weights
(seeded), then learns from it once per variant, weights and optimizer state restored before each.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

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
