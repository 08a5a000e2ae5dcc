"""The parameter-space forecast (dynamics.optimizer_update, forecast_change,
second_order_forecast) against real optimizer steps and exact entropy changes, in float64."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.dynamics import (
    forecast_change,
    optimizer_update,
    second_order_forecast,
)

OPTIMIZERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "sgd_momentum_wd": lambda p, lr: torch.optim.SGD(
        p, lr=lr, momentum=0.9, dampening=0.1, weight_decay=0.01
    ),
    "sgd_nesterov_maximize": lambda p, lr: torch.optim.SGD(
        p, lr=lr, momentum=0.8, nesterov=True, maximize=True
    ),
    "adam_l2_amsgrad": lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.1, amsgrad=True),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr, betas=(0.9, 0.99), weight_decay=0.1),
}


class TinyLM(torch.nn.Module):
    """Logits ``W2 tanh(W1 x + b)`` of fixed inputs: positions share every parameter."""

    def __init__(self, dim: int = 6, hidden: int = 8, vocab: int = 11, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, dim, generator=gen, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.randn(hidden, generator=gen, dtype=torch.float64))
        self.w2 = torch.nn.Parameter(torch.randn(vocab, hidden, generator=gen, dtype=torch.float64))
        self.x = torch.randn(20, dim, generator=gen, dtype=torch.float64)  # (N, d) positions
        self.tokens = torch.randint(0, vocab, (20,), generator=gen)
        self.advantages = torch.randn(20, generator=gen, dtype=torch.float64)

    def forward(self) -> torch.Tensor:
        return torch.tanh(self.x @ self.w1.T + self.b) @ self.w2.T  # (N, V)

    def mean_entropy(self) -> torch.Tensor:
        return theory.entropy(self(), 0.9).mean()

    def loss(self) -> torch.Tensor:
        log_p = torch.log_softmax(self() / 0.9, -1).gather(-1, self.tokens[:, None]).squeeze(-1)
        return -(self.advantages * log_p).mean()  # the GRPO surrogate at ratio 1


def _warm(name: str, lr: float, steps: int = 3) -> tuple[TinyLM, torch.optim.Optimizer]:
    """A model and optimizer with ``steps`` real steps (at lr 1e-3) behind them, a non-trivial
    state, then the gradient of the next step at learning rate ``lr``."""
    model = TinyLM()
    optimizer = OPTIMIZERS[name](list(model.parameters()), 1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss().backward()
        optimizer.step()
    optimizer.param_groups[0]["lr"] = lr
    optimizer.zero_grad()
    model.loss().backward()
    return model, optimizer


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("warm_steps", [0, 3])
def test_predicted_update_is_the_step_the_optimizer_takes(name: str, warm_steps: int) -> None:
    model, optimizer = _warm(name, lr=0.05, steps=warm_steps)
    before = [p.detach().clone() for p in model.parameters()]
    updates, _ = optimizer_update(optimizer)
    optimizer.step()
    for p, b, update in zip(model.parameters(), before, updates, strict=True):
        torch.testing.assert_close(p.detach() - b, update, rtol=1e-10, atol=1e-14)


def test_parameters_without_gradient_are_skipped_and_other_optimizers_refused() -> None:
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.loss().backward()
    model.b.grad = None
    updates, gains = optimizer_update(optimizer)
    assert updates[1] is None and gains[1] is None and updates[0] is not None
    with pytest.raises(TypeError, match="SGD, Adam and AdamW"):
        optimizer_update(torch.optim.RMSprop(model.parameters(), lr=0.1))


@pytest.mark.parametrize("name", ["sgd", "sgd_momentum_wd", "adamw"])
def test_gain_is_the_derivative_of_the_step_with_the_state_held(name: str) -> None:
    # SGD's step is linear in g: Δθ(g + δ) - Δθ(g) = gain ⊙ δ exactly. Adam's first step with no
    # weight decay is m̂ / (√v̂ + ε) = gain ⊙ g exactly (its state holds no earlier gradient).
    model, optimizer = _warm(name, lr=0.05, steps=0 if name == "adamw" else 2)
    if name == "adamw":
        optimizer.param_groups[0]["weight_decay"] = 0.0
        updates, gains = optimizer_update(optimizer)
        for update, gain, p in zip(updates, gains, model.parameters(), strict=True):
            torch.testing.assert_close(update, gain * p.grad, rtol=1e-12, atol=1e-15)
        return
    updates, gains = optimizer_update(optimizer)
    deltas = [torch.randn_like(p) for p in model.parameters()]
    for p, d in zip(model.parameters(), deltas, strict=True):
        p.grad += d
    shifted, _ = optimizer_update(optimizer)
    for a, b, gain, d in zip(updates, shifted, gains, deltas, strict=True):
        torch.testing.assert_close(b - a, gain * d, rtol=1e-10, atol=1e-14)


def _forecast_errors(name: str, lrs: list[float]) -> list[tuple[float, float, float]]:
    """``(actual ΔH, first-order error, second-order error)`` of one step at each ``lr``."""
    out = []
    for lr in lrs:
        model, optimizer = _warm(name, lr, steps=2)
        params = list(model.parameters())
        grad_h = list(torch.autograd.grad(model.mean_entropy(), params))
        updates, _ = optimizer_update(optimizer)
        first = forecast_change(grad_h, updates)
        slopes = []
        for sign in (1, -1):  # directional derivatives at θ ± hΔθ, on a copy
            shifted = copy.deepcopy(model)
            with torch.no_grad():
                for p, u in zip(shifted.parameters(), updates, strict=True):
                    p.add_(u, alpha=0.5 * sign)
            grads = torch.autograd.grad(shifted.mean_entropy(), list(shifted.parameters()))
            slopes.append(forecast_change(list(grads), updates))
        second, _ = second_order_forecast(first, *slopes, 0.5)
        h0 = model.mean_entropy().item()
        optimizer.step()
        actual = model.mean_entropy().item() - h0
        out.append((actual, abs(first.item() - actual), abs(second.item() - actual)))
    return out


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_forecast_error_falls_as_lr_squared_and_second_order_as_lr_cubed(name: str) -> None:
    lrs = [1e-2, 1e-3, 1e-4] if name == "sgd" else [1e-3, 1e-4, 1e-5]
    rows = _forecast_errors(name, lrs)
    for (a0, e1_0, e2_0), (_, e1_1, e2_1) in itertools.pairwise(rows):
        # lr / 10 → first-order error / 100 (log10 ratio 2), second-order error / 1000 (3)
        assert math.log10(e1_0 / e1_1) == pytest.approx(2.0, abs=0.25), rows
        assert math.log10(e2_0 / e2_1) == pytest.approx(3.0, abs=0.35), rows
        assert e2_0 < e1_0 and abs(a0) > 10 * e1_0, rows  # the forecast is the bulk of ΔH
    assert rows[-1][1] < 1e-3 * abs(rows[-1][0])  # first order: 0.1 % of ΔH at the smallest lr


def test_second_order_needs_a_positive_offset() -> None:
    zero = torch.zeros((), dtype=torch.float64)
    with pytest.raises(ValueError, match="h must be > 0"):
        second_order_forecast(zero, zero, zero, 0.0)
