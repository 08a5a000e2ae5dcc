"""What one training step measures beside its loss: the rewards, the rollout's statistics, and the
entropy dynamics — the positions they are measured at and the actual vs predicted ΔH there.

Shapes: ``N`` sampled responses of ``R`` positions; ``n`` dynamics positions; ``V`` vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.dynamics import entropy_dynamics_metrics
from entropy_dynamics.stats import TokenStats
from entropy_dynamics.tasks.base import Task, score_all
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import Rollout
from entropy_dynamics.training.update import position_logits, rollout_micro_batches

__all__ = [
    "dynamics_metrics",
    "dynamics_positions",
    "frac_zero_std",
    "logits_at",
    "reward_metrics",
    "rollout_metrics",
    "zero_variance_notice",
]


def reward_metrics(
    task: Task, problems: list, rollout: Rollout
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(reward (N,), metrics)``: each response scored against the problem of its prompt; the
    mean reward, accuracy and format rate, and the fraction of groups without reward variance
    (:func:`frac_zero_std`)."""
    owners = [problems[int(i)] for i in rollout.prompt_index]
    scores = score_all(task, owners, rollout.completions)
    reward = torch.tensor([s.reward for s in scores], dtype=torch.float32)  # (N,)
    correct = torch.tensor([s.correct for s in scores], dtype=torch.float32)  # (N,)
    fmt = torch.tensor([s.format for s in scores], dtype=torch.float32)  # (N,)
    metrics = {
        "reward/mean": reward.mean(),
        "reward/accuracy": correct.mean(),
        "reward/format": fmt.mean(),
        "reward/frac_zero_std": frac_zero_std(reward, rollout.prompt_index),
    }
    return reward, metrics


def frac_zero_std(reward: Tensor, prompt_index: Tensor) -> Tensor:
    """The fraction of groups (the samples of one prompt) whose rewards are all equal: zero
    standard deviation, so every advantage of the group is zero and it teaches nothing (TRL's
    ``frac_reward_zero_std``). ``reward`` and ``prompt_index`` ``(N,)``; a 0-dim tensor."""
    index = prompt_index.long().cpu()  # (N,)
    groups = int(index.max()) + 1
    high = torch.full((groups,), -torch.inf).scatter_reduce(0, index, reward, "amax")  # (P,)
    low = torch.full((groups,), torch.inf).scatter_reduce(0, index, reward, "amin")  # (P,)
    present = torch.bincount(index, minlength=groups) > 0  # (P,) prompts of this batch
    return (high[present] == low[present]).float().mean()


def zero_variance_notice(history: list[dict[str, float]], window: int = 5) -> str | None:
    """What to tell the user when no group of the last ``window`` steps had any reward
    variance (``reward/frac_zero_std`` = 1 throughout), else ``None``."""
    recent = history[-window:]
    if window < 1 or len(recent) < window:
        return None
    if any(row.get("reward/frac_zero_std") != 1.0 for row in recent):
        return None
    accuracy = {row.get("reward/accuracy") for row in recent}
    why = {
        0.0: "no sample was correct: the problems are too hard for the model",
        1.0: "every sample was correct: the problems are too easy for the model",
    }.get(accuracy.pop() if len(accuracy) == 1 else None, "each prompt's samples score alike")
    return (
        f"every group of the last {window} steps got one reward for all its samples "
        f"(reward/frac_zero_std = 1), so every advantage is zero and the policy does not learn; "
        f"{why} — raise rollout.group_size or rollout.temperature, or give problems nearer "
        "the model's level"
    )


def rollout_metrics(rollout: Rollout, old: TokenStats, advantages: Tensor) -> dict[str, Tensor]:
    """The rollout policy's statistics (``old``, ``(N, R)``), the advantages' size, the responses'
    length and truncation."""
    mask = rollout.response_mask  # (N, R)
    return {
        **old.metrics(mask),
        "advantage/abs_mean": masked_mean(advantages.abs(), mask),
        "response/length_mean": mask.sum(-1).float().mean(),
        "response/truncated_frac": rollout.truncated.float().mean(),
    }


def dynamics_positions(mask: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """The first ``limit`` valid response positions ``(rows, cols)``, ``(n,)`` each, of ``mask``
    ``(N, R)``."""
    rows, cols = mask.nonzero(as_tuple=True)
    return rows[:limit], cols[:limit]


@torch.no_grad()
def logits_at(
    forward: ResponseStats,
    rollout: Rollout,
    positions: tuple[Tensor, Tensor],
    micro_batch_tokens: int = 0,
) -> Tensor:
    """``(n, V)`` logits of the policy ``forward`` measures now at ``positions`` (``(rows,
    cols)``, ``(n,)`` each), from a no-grad forward of the rows that hold one — only those, each
    micro-batch run up to its rows' longest response; with ``micro_batch_tokens`` the rows packed
    by length into micro-batches of at most that many padded tokens, as the update packs them
    (:func:`~entropy_dynamics.training.update.rollout_micro_batches`): long, uneven answers are
    not run to the batch's longest."""
    after = None
    for chunk in rollout_micro_batches(rollout, torch.unique(positions[0]), 0, micro_batch_tokens):
        after = position_logits(after, forward, forward.features(rollout, chunk), chunk, positions)
    return after


@torch.no_grad()
def dynamics_metrics(
    forward: ResponseStats,
    rollout: Rollout,
    positions: tuple[Tensor, Tensor],
    before: Tensor,
    advantages: Tensor,
    keep: Tensor,
    temperature: float,
    micro_batch_tokens: int = 0,
) -> dict[str, Tensor]:
    """Actual vs predicted ΔH at ``positions``, from their ``(n, V)`` logits ``before`` the step
    and those of the policy ``forward`` measures now (:func:`logits_at`); ``advantages`` and
    ``keep`` ``(N, R)``."""
    after = logits_at(forward, rollout, positions, micro_batch_tokens)  # (n, V)
    return entropy_dynamics_metrics(
        before,
        after,
        rollout.response_ids[positions],  # (n,)
        advantages[positions],  # (n,)
        keep[positions].float(),  # (n,)
        temperature,
    )
