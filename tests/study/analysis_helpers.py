"""Helpers of the per-token analysis tests (``test_analysis.py``, ``test_one_step.py``): the prompts
of the rollout fixture (``conftest.py``) and float64 references computed from a plain forward."""

from __future__ import annotations

import torch

from entropy_dynamics.training.teacher_forcing import teacher_forcing_inputs

__all__ = ["PROMPTS", "entropy_by_hand", "reference_logits"]

PROMPTS = ["3 5 9 -> 7: ", "12 4 -> 3: "]


def reference_logits(model, rollout):
    """``(N, R, V)`` float64 logits of the float32 model from a plain forward pass."""
    with torch.no_grad():
        logits = model(**teacher_forcing_inputs(rollout)).logits
    return logits[:, rollout.prompt_length - 1 : -1].double()


def entropy_by_hand(logits):
    """``(p, H)`` of ``logits`` by hand: softmax after subtracting the max, then ``-Σ p log p``."""
    shifted = logits - logits.max(-1, keepdim=True).values
    p = shifted.exp() / shifted.exp().sum(-1, keepdim=True)
    return p, -(p * p.log()).sum(-1)
