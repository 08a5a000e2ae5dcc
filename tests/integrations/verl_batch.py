"""A small padded batch for the verl plug-in's tests: six responses of different lengths after
left-padded prompts, with advantages of both signs."""

from __future__ import annotations

import torch

__all__ = ["B", "C", "P", "small_batch"]

B, P, C = 6, 5, 8


def small_batch():
    """``(prompts (B, P), prompt_mask, responses (B, C), response_mask, advantages (B, C))``."""
    gen = torch.Generator().manual_seed(3)
    prompt_mask = torch.arange(P) >= torch.tensor([0, 2, 1, 0, 3, 0]).unsqueeze(1)
    prompts = torch.randint(2, 40, (B, P), generator=gen) * prompt_mask
    response_mask = torch.arange(C) < torch.tensor([8, 5, 3, 8, 6, 7]).unsqueeze(1)
    responses = torch.randint(2, 40, (B, C), generator=gen) * response_mask
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.5, -1.5]).unsqueeze(1) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages
