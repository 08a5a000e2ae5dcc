"""Numerical guards: an update whose loss or gradient is NaN / inf is never applied."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteError", "nonfinite_update"]


class NonFiniteError(RuntimeError):
    """Updates kept producing NaN / inf; the message names the tensor, step and checkpoint."""


def nonfinite_update(model: nn.Module, loss: Tensor, grad_norm: Tensor) -> str | None:
    """What is not finite in an update — the loss, or the first parameter whose gradient is
    not — or ``None`` when all is finite (``grad_norm``: the total norm before clipping)."""
    if not torch.isfinite(loss):
        return f"loss ({float(loss)})"
    if torch.isfinite(grad_norm):
        return None
    for name, param in model.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return f"gradient of {name}"
    return f"gradient norm ({float(grad_norm)})"
