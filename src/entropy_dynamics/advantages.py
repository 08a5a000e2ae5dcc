"""Group-relative outcome advantages: one scalar per sampled response, from its reward.

Every estimator is a pure function ``fn(rewards, group_ids, *, eps) -> advantages`` over a flat
batch of ``N`` responses; responses to the same prompt share a ``group_id``. For the usual
contiguous layout (``rewards.view(num_prompts, group_size)``) build the ids with
:func:`contiguous_group_ids`. Token-level advantages come from :func:`broadcast_to_tokens`.

- ``grpo`` (DeepSeekMath; the paper's released code): ``A = (R - mean_g) / (std_g + eps)`` with
  the unbiased group std; a group of one response gets mean 0 and std 1, so ``A = R / (1 + eps)``.
- ``dr_grpo`` (Dr. GRPO, arXiv 2503.20783): ``A = R - mean_g`` (no division by the std).
- ``batch``: ``A = (R - mean_B) / (std_B + eps)`` over the whole batch (unbiased std; a batch of
  one response gets mean 0 and std 1, as for a group of one).

A group whose rewards are all equal carries no signal and gets ``A = 0`` exactly, whatever
``eps`` (``eps = 0`` included): group sums are taken relative to the group's smallest reward, so
equal rewards centre to exact zeros instead of ±1-ulp residues that ``/ std`` would amplify.

All computations are in float32 (float64 for float64 rewards); integer or bool rewards are cast;
NaN or infinite rewards are refused.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from entropy_dynamics._registry import Registry

__all__ = [
    "AdvantageFn",
    "available_advantages",
    "batch_advantages",
    "broadcast_to_tokens",
    "contiguous_group_ids",
    "dr_grpo_advantages",
    "get_advantage_fn",
    "grpo_advantages",
    "register_advantage",
]


class AdvantageFn(Protocol):
    def __call__(self, rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor: ...


_ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")
register_advantage = _ADVANTAGES.register
"""Decorator registering an advantage estimator under a name."""
get_advantage_fn = _ADVANTAGES.get
"""The estimator registered under a name; the error lists the registered names."""
available_advantages = _ADVANTAGES.names


def contiguous_group_ids(
    num_prompts: int, group_size: int, device: torch.device | str | None = None
) -> Tensor:
    """Group ids ``(num_prompts * group_size,)`` for rewards laid out prompt by prompt.

    Response ``i`` belongs to prompt ``i // group_size``, i.e. ``rewards.view(num_prompts,
    group_size)`` has one prompt per row.
    """
    if num_prompts < 0 or group_size < 1:
        raise ValueError(
            f"need num_prompts >= 0 and group_size >= 1, got {num_prompts} and {group_size}"
        )
    ids = torch.arange(num_prompts, device=device)  # (P,)
    return ids.repeat_interleave(group_size)  # (P * G,)


def _prepare(rewards: Tensor, group_ids: Tensor, eps: float) -> Tensor:
    """Validate the inputs; return ``rewards`` in the compute dtype."""
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must be 1-D (N,) with one reward per response, got shape "
            f"{tuple(rewards.shape)}; flatten (num_prompts, group_size) rewards with .reshape(-1)"
        )
    if group_ids.shape != rewards.shape:
        raise ValueError(
            f"group_ids must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    finite = torch.isfinite(rewards)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0])
        raise ValueError(f"rewards must be finite, got {rewards[index].item()} at index {index}")
    return rewards.to(dtype)


def _group_mean_std(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-response mean and unbiased std of its group, ``(N,)`` each; mean 0, std 1 for groups
    of one response (the reference implementation's convention). Sums are shifted by the group's
    smallest reward, so a group of equal rewards has exactly its reward as mean and std 0."""
    unique_ids, inverse = torch.unique(group_ids, return_inverse=True)  # (G,), (N,) in [0, G)
    zeros = rewards.new_zeros(unique_ids.numel())
    count = zeros.index_add(0, inverse, torch.ones_like(rewards))  # (G,)
    shift = zeros.scatter_reduce(0, inverse, rewards, "amin", include_self=False)  # (G,)
    mean = shift + zeros.index_add(0, inverse, rewards - shift[inverse]) / count  # (G,)
    centred = rewards - mean[inverse]  # (N,)
    sq = zeros.index_add(0, inverse, centred * centred)  # (G,)
    std = (sq / (count - 1).clamp_min(1)).sqrt()  # unbiased, torch.std(correction=1)
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return mean[inverse], std[inverse]


@register_advantage("grpo")
def grpo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantage ``A = (R - mean_g) / (std_g + eps)``, unbiased group std.

    Args:
        rewards: ``(N,)`` one scalar reward per response.
        group_ids: ``(N,)`` integer prompt id of each response.
        eps: added to the std (1e-6 in the paper's released code).

    Returns:
        ``(N,)`` advantages; a group of one response gets ``R / (1 + eps)``, a group of equal
        rewards 0.
    """
    r = _prepare(rewards, group_ids, eps)
    return _standardise(r, *_group_mean_std(r, group_ids), eps)


def _standardise(rewards: Tensor, mean: Tensor, std: Tensor, eps: float) -> Tensor:
    """``(R - mean) / (std + eps)``, and 0 where ``std = 0`` (no variance: no signal, no 0 / 0)."""
    return torch.where(std > 0, (rewards - mean) / (std + eps), 0.0)


@register_advantage("dr_grpo")
def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Dr. GRPO advantage ``A = R - mean_g`` (arXiv 2503.20783: no std normalisation).

    ``eps`` is accepted for the registry's uniform signature and unused (nothing is divided).
    A group of one response gets mean 0, so ``A = R``. Shapes as in :func:`grpo_advantages`.
    """
    r = _prepare(rewards, group_ids, eps)
    mean, _ = _group_mean_std(r, group_ids)
    return r - mean


@register_advantage("batch")
def batch_advantages(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Batch-normalised advantage ``A = (R - mean_B) / (std_B + eps)`` over all ``N`` responses.

    ``group_ids`` is validated and otherwise unused. Unbiased std; a batch of one response gets
    mean 0 and std 1. Shapes as in :func:`grpo_advantages`.
    """
    r = _prepare(rewards, group_ids, eps)
    return _standardise(r, *_group_mean_std(r, torch.zeros_like(group_ids)), eps)


def broadcast_to_tokens(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """Token-level advantages ``(B, T)``: each response's advantage on its valid tokens, 0 on
    padding.

    Args:
        advantages: ``(B,)`` one advantage per response.
        response_mask: ``(B, T)`` bool or 0/1, true on valid response tokens.
    """
    if advantages.dim() != 1 or response_mask.dim() != 2:
        raise ValueError(
            f"advantages must be (B,) and response_mask (B, T), got shapes "
            f"{tuple(advantages.shape)} and {tuple(response_mask.shape)}"
        )
    if advantages.shape[0] != response_mask.shape[0]:
        raise ValueError(
            f"advantages has {advantages.shape[0]} responses but response_mask has "
            f"{response_mask.shape[0]} rows"
        )
    tokens = advantages.unsqueeze(-1).expand(response_mask.shape)  # (B, 1) -> (B, T)
    return torch.where(response_mask != 0, tokens, torch.zeros_like(tokens))
