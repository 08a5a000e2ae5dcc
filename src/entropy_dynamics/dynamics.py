"""Predicted versus actual entropy change of a real update (the paper's §3 on a live model).

Given the logits of the same response positions before and after an optimizer step (teacher-forced
on the step's own samples), this module reports

- ``dynamics/delta_h_actual``: mean over positions of ``H(after) - H(before)``;
- ``dynamics/delta_h_kept`` / ``dynamics/delta_h_dropped``: mean actual ΔH over the positions
  that carried loss weight (the tokens the update trained) and over the others (zero advantage or
  dropped by the filter): Theorem 3.2 speaks of the trained positions; the rest move only through
  the parameters they share with them;
- ``dynamics/delta_h_first_order``: mean of ``⟨∂H/∂z, Δz⟩`` with the *measured* logit change
  ``Δz`` (Theorem 3.2's general first-order form) — exact up to O(|Δz|²);
- ``dynamics/delta_h_thm33``: Theorem 3.3's prediction ``-α̂ w_t A_t (S_t - E_p[S]_t) / T²``,
  where the network's logit change is modelled as the GRPO direction
  ``u_t = w_t A_t (e_k - p_t) / T`` times one scalar ``α̂``
  (the effective logit step, ``dynamics/effective_logit_lr``), fitted by
  least squares ``α̂ = Σ_t ⟨Δz_t, u_t⟩ / Σ_t |u_t|²``. The shape of the prediction is pure theory;
  only its scale is measured. A neural network couples positions, so this prediction is expected to
  be good in sign and correlation, not exact — which is what users want to measure;
- ``dynamics/quadrant/{pos,neg}_adv_{pos,neg}_dev``: the actual ΔH contributed (sum over the
  positions of that quadrant, divided by all positions) by each advantage sign × sign of
  ``S_k - E_p[S]``: which tokens drive the entropy change;
- ``dynamics/batch_deviation_mean`` and ``dynamics/batch_discriminator_abs_mean``: Corollary 3.5
  says the first is ~0 on an on-policy batch, orders of magnitude below the second.

Every entropy change here is computed in float64, row chunk by row chunk: a per-token ΔH of 4e-6
at ``V = 262,144`` carries ~10 % rounding error in float32.

**Forecast (parameter space).** Theorem 3.3 is a per-position law in logit space; positions share
parameters. Before an optimizer step, :func:`optimizer_update` gives the exact change ``Δθ`` that
``optimizer.step()`` will apply (SGD with momentum / Nesterov, Adam, AdamW: bias correction,
weight decay, AMSGrad), and the first-order forecast of any mean entropy ``H̄(θ)`` is
``⟨∇θ H̄, Δθ⟩`` (:func:`forecast_change`). Along the step, ``H̄(θ + sΔθ)`` has curvature
``Δθᵀ ∇²H̄ Δθ``; :func:`second_order_forecast` adds half of it, estimated from the directional
derivatives at ``θ ± hΔθ`` (a central difference of gradients, which needs no double backward).
``gain`` (the elementwise ``∂Δθ/∂g`` with the optimizer's state after this gradient held fixed)
makes ``Δθ`` linear in the loss gradient ``g``: the forecast then splits exactly into the share of
each token group's gradient plus the momentum and weight-decay terms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from entropy_dynamics import theory
from entropy_dynamics.aggregation import masked_mean

__all__ = [
    "QUADRANTS",
    "QUADRANT_LABELS",
    "entropy_change_terms",
    "entropy_dynamics_metrics",
    "entropy_monitor_metrics",
    "forecast_change",
    "optimizer_update",
    "quadrant_masks",
    "row_chunks",
    "second_order_forecast",
]

QUADRANTS = {
    "pos_adv_pos_dev": (1, 1),
    "pos_adv_neg_dev": (1, -1),
    "neg_adv_pos_dev": (-1, 1),
    "neg_adv_neg_dev": (-1, -1),
}
"""Token groups: advantage sign × sign of ``S_k - E_p[S]`` (Theorem 3.3's four cases)."""
QUADRANT_LABELS = {
    name: f"A {'>' if a > 0 else '<'} 0, S_k {'>' if d > 0 else '<'} E_p[S]"
    for name, (a, d) in QUADRANTS.items()
}
"""The :data:`QUADRANTS` as reports print them: ``pos_adv_neg_dev`` is ``A > 0, S_k < E_p[S]``."""


def quadrant_masks(advantages: Tensor, deviation: Tensor) -> dict[str, Tensor]:
    """Bool masks of the :data:`QUADRANTS` (same shape as the inputs); tokens with ``A = 0`` or
    ``S_k = E_p[S]`` exactly belong to none."""
    adv_sign, dev_sign = torch.sign(advantages), torch.sign(deviation)
    return {name: (adv_sign == a) & (dev_sign == d) for name, (a, d) in QUADRANTS.items()}


_CHUNK_ELEMENTS = 1 << 22  # float64 elements per row chunk (32 MiB)


def row_chunks(n: int, rows_per_chunk: int | None) -> list[slice]:
    """``n`` rows as consecutive slices of ``rows_per_chunk`` rows (``None``: one slice)."""
    if rows_per_chunk is not None and rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    step = n if rows_per_chunk is None else rows_per_chunk
    return [slice(start, min(start + step, n)) for start in range(0, n, max(step, 1))]


def entropy_change_terms(
    z0: Tensor, z1: Tensor, tokens: Tensor, coef: Tensor, temperature: float
) -> tuple[Tensor, ...]:
    """Per-position float64 terms of an entropy change, for a chunk of ``n`` positions.

    Args:
        z0: ``(n, V)`` logits before; z1: ``(n, V)`` logits after.
        tokens: ``(n,)`` sampled tokens; coef: ``(n,)`` loss weight × advantage.
        temperature: ``T``.

    Returns:
        ``(ΔH actual, ΔH first order, S_k, S_k - E_p[S], ⟨Δz, u⟩, |u|²)``, each ``(n,)``
        float64, with ``u = coef (e_k - p) / T`` Theorem 3.3's logit direction.
    """
    z0, z1 = z0.double(), z1.double()  # (n, V)
    delta = z1 - z0
    actual = theory.entropy(z1, temperature) - theory.entropy(z0, temperature)
    first_order = theory.first_order_entropy_change(z0, delta, temperature)
    s_k = theory.discriminator(z0, tokens, temperature)
    deviation = s_k - theory.expected_discriminator(z0, temperature)
    direction = theory.grpo_logit_update(z0, tokens, coef, 1.0, temperature)  # (n, V)
    return (
        actual,
        first_order,
        s_k,
        deviation,
        (delta * direction).sum(-1),
        (direction * direction).sum(-1),
    )


@torch.no_grad()
def entropy_dynamics_metrics(
    logits_before: Tensor,
    logits_after: Tensor,
    tokens: Tensor,
    advantages: Tensor,
    weights: Tensor,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """Predicted and actual entropy change at ``N`` response positions.

    Args:
        logits_before: ``(N, V)`` logits before the update.
        logits_after: ``(N, V)`` logits at the same positions after the update.
        tokens: ``(N,)`` sampled tokens ``k``.
        advantages: ``(N,)`` advantages ``A_t`` used in the update.
        weights: ``(N,)`` loss weight of each position (the filter's keep mask; 0 = dropped).
        temperature: sampling temperature ``T``.

    Returns:
        Dict of 0-d float64 tensors with the keys listed in the module docstring.
    """
    if logits_before.shape != logits_after.shape or logits_before.dim() != 2:
        raise ValueError(
            f"logits_before and logits_after must both be (N, V), got "
            f"{tuple(logits_before.shape)} and {tuple(logits_after.shape)}"
        )
    n = logits_before.shape[0]
    for name, value in (("tokens", tokens), ("advantages", advantages), ("weights", weights)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")
    coef = weights.double() * advantages.double()  # (N,) loss weight × advantage
    parts = [
        entropy_change_terms(logits_before[r], logits_after[r], tokens[r], coef[r], temperature)
        for r in row_chunks(n, max(1, _CHUNK_ELEMENTS // max(logits_before.shape[-1], 1)))
    ]
    actual, first_order, s_k, deviation, dz_u, u_u = (
        torch.cat([part[i] for part in parts]) if parts else coef.new_zeros(0) for i in range(6)
    )
    trained = coef != 0
    # α̂ = Σ ⟨Δz_t, u_t⟩ / Σ |u_t|², with u_t = coef_t (e_k - p_t) / T (grpo_logit_update, lr = 1)
    norm = u_u.sum()
    alpha = dz_u.sum() / norm if norm > 0 else norm.new_zeros(())
    thm33 = -alpha * coef * deviation / temperature**2  # (N,)

    metrics = {
        "dynamics/delta_h_actual": actual.mean(),
        "dynamics/delta_h_kept": masked_mean(actual, trained),
        "dynamics/delta_h_dropped": masked_mean(actual, ~trained),
        "dynamics/delta_h_first_order": first_order.mean(),
        "dynamics/delta_h_thm33": thm33.mean(),
        "dynamics/effective_logit_lr": alpha,
        "dynamics/batch_deviation_mean": deviation.mean(),
        "dynamics/batch_discriminator_abs_mean": s_k.abs().mean(),
    }
    for name, in_quadrant in quadrant_masks(advantages, deviation).items():
        metrics[f"dynamics/quadrant/{name}"] = (actual * in_quadrant).sum() / max(n, 1)
    return metrics


@torch.no_grad()
def entropy_monitor_metrics(
    entropy_before: Tensor,
    entropy_after: Tensor,
    advantages: Tensor,
    deviation: Tensor,
    weights: Tensor,
    response_mask: Tensor,
) -> dict[str, Tensor]:
    """The engines' dynamics monitor: the actual entropy change of a batch from the per-token
    entropies before and after an update (fused statistics, no logits), by quadrant, and how well
    Theorem 3.3's per-token predictor ``-w_t A_t (S_t - E_p[S]_t)`` tracks it.

    The same keys as :func:`entropy_dynamics_metrics` where they mean the same
    (``delta_h_actual``, ``delta_h_kept``, ``delta_h_dropped``, ``quadrant/*``,
    ``batch_deviation_mean``) plus ``dynamics/thm33_correlation``: the Pearson correlation, over
    the valid tokens, of the predictor with the actual change (0 when either is constant). The
    predictor's scale needs the logit change, which an engine never forms: only its shape is read.

    Args:
        entropy_before: ``(B, T)`` ``H`` of each position before the update.
        entropy_after: ``(B, T)`` ``H`` at the same positions after it.
        advantages: ``(B, T)`` token advantages ``A_t`` of the update.
        deviation: ``(B, T)`` ``S_k - E_p[S]`` before the update.
        weights: ``(B, T)`` loss weight of each position (the keep-mask; 0 = dropped).
        response_mask: ``(B, T)`` bool or 0/1, true on valid response tokens.

    Returns:
        0-d float64 tensors under ``dynamics/``.
    """
    valid = response_mask.bool()  # (B, T)
    actual = (entropy_after.double() - entropy_before.double())[valid]  # (n,)
    adv, dev = advantages.double()[valid], deviation.double()[valid]  # (n,)
    coef = weights.double()[valid] * adv  # (n,) loss weight × advantage
    predictor = -coef * dev  # (n,) Theorem 3.3 per unit step
    n = max(actual.numel(), 1)
    trained = coef != 0
    centred_a, centred_p = actual - actual.mean(), predictor - predictor.mean()
    scale = (centred_a.square().sum() * centred_p.square().sum()).sqrt()
    correlation = (centred_a * centred_p).sum() / scale if scale > 0 else scale.new_zeros(())
    metrics = {
        "dynamics/delta_h_actual": actual.sum() / n,
        "dynamics/delta_h_kept": masked_mean(actual, trained),
        "dynamics/delta_h_dropped": masked_mean(actual, ~trained),
        "dynamics/thm33_correlation": correlation,
        "dynamics/batch_deviation_mean": dev.sum() / n,
    }
    for name, in_quadrant in quadrant_masks(adv, dev).items():
        metrics[f"dynamics/quadrant/{name}"] = (actual * in_quadrant).sum() / n
    return metrics


# ---------------------------------------------------------------------------------------------
# Forecast of the next optimizer step (parameter space)
# ---------------------------------------------------------------------------------------------


def _adam_update(group: dict, state: dict, param: Tensor, grad: Tensor, decoupled: bool):
    """``(Δθ, gain)`` of torch's Adam / AdamW for one parameter (its ``_single_tensor_adam``)."""
    lr, (beta1, beta2) = float(group["lr"]), group["betas"]
    eps, weight_decay = group["eps"], group["weight_decay"]
    step = float(state.get("step", 0)) + 1
    if weight_decay and not decoupled:
        grad = grad + weight_decay * param  # L2 penalty inside the gradient (Adam)
    exp_avg = state.get("exp_avg", torch.zeros_like(param))
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(param))
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    if group.get("amsgrad", False):
        v = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(param)), v)
    step_size = lr / (1 - beta1**step)
    denom = v.sqrt() / math.sqrt(1 - beta2**step) + eps
    update = -step_size * m / denom
    if weight_decay and decoupled:
        update = update - lr * weight_decay * param  # AdamW: θ ← θ (1 - lr·λ) first
    return update, -step_size * (1 - beta1) / denom


def _sgd_update(group: dict, state: dict, param: Tensor, grad: Tensor):
    """``(Δθ, gain)`` of torch's SGD (momentum, dampening, Nesterov, L2 weight decay)."""
    lr, momentum = float(group["lr"]), group["momentum"]
    dampening, weight_decay = group["dampening"], group["weight_decay"]
    d_p = grad + weight_decay * param if weight_decay else grad
    gain = 1.0
    if momentum:
        buffer = state.get("momentum_buffer")
        if buffer is None:
            buffer, gain = d_p, 1.0  # the first step copies the gradient
        else:
            buffer, gain = momentum * buffer + (1 - dampening) * d_p, 1 - dampening
        if group["nesterov"]:
            d_p, gain = d_p + momentum * buffer, 1 + momentum * gain
        else:
            d_p = buffer
    return -lr * d_p, torch.full_like(param, -lr * gain)


@torch.no_grad()
def optimizer_update(
    optimizer: torch.optim.Optimizer,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """The change the next ``optimizer.step()`` will apply, from the current ``.grad``.

    Supports ``torch.optim.SGD``, ``Adam`` and ``AdamW`` with their options (momentum, dampening,
    Nesterov, weight decay, AMSGrad, ``maximize``); the optimizer is not modified.

    Returns:
        ``(updates, gains)``, one entry per parameter in ``optimizer.param_groups`` order
        (``None`` for a parameter without gradient, which the step skips): ``updates[i]`` is
        ``Δθ_i`` and ``gains[i]`` the elementwise ``∂Δθ_i / ∂g_i`` with the optimizer state after
        this gradient held fixed (Adam's second moment included), so that
        ``Δθ = gain ⊙ g + (terms that do not depend on g)``.
    """
    if isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    elif isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        kind = "adam"
    else:
        raise TypeError(
            f"forecast: cannot predict the step of {type(optimizer).__name__}; supported are "
            "torch.optim.SGD, Adam and AdamW"
        )
    updates: list[Tensor | None] = []
    gains: list[Tensor | None] = []
    for group in optimizer.param_groups:
        decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get(
            "decoupled_weight_decay", False
        )
        for param in group["params"]:
            if param.grad is None:
                updates.append(None)
                gains.append(None)
                continue
            grad = -param.grad if group.get("maximize", False) else param.grad
            state = optimizer.state.get(param, {})
            if kind == "sgd":
                update, gain = _sgd_update(group, state, param, grad)
            else:
                update, gain = _adam_update(group, state, param, grad, decoupled)
            if group.get("maximize", False):
                gain = -gain
            updates.append(update)
            gains.append(gain)
    return updates, gains


def forecast_change(gradients: list[Tensor | None], updates: list[Tensor | None]) -> Tensor:
    """First-order change ``⟨∇θ H̄, Δθ⟩`` of a quantity with gradients ``gradients`` under the
    step ``updates`` (aligned lists; ``None`` entries count 0), accumulated in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for grad, update in zip(gradients, updates, strict=True):
        if grad is not None and update is not None:
            total += (grad.double() * update.double()).sum().cpu()
    return total


def second_order_forecast(
    first_order: Tensor, slope_plus: Tensor, slope_minus: Tensor, h: float
) -> tuple[Tensor, Tensor]:
    """``(second-order forecast, curvature)`` along the step.

    With ``f(s) = H̄(θ + sΔθ)``: ``f(1) - f(0) ≈ f'(0) + f''(0) / 2``, where ``f'(0)`` is the
    first-order forecast and ``f''(0) = Δθᵀ ∇²H̄ Δθ ≈ (f'(h) - f'(-h)) / (2h)``, the central
    difference of the directional derivatives ``slope_plus = ⟨∇H̄(θ + hΔθ), Δθ⟩`` and
    ``slope_minus = ⟨∇H̄(θ - hΔθ), Δθ⟩`` (error ``O(h²)``).
    """
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    curvature = (slope_plus - slope_minus) / (2 * h)
    return first_order + 0.5 * curvature, curvature
