"""The ``entropy_target`` filter: drop the tokens whose forecast entropy change points away from a
target (this project, issue 18).

Theorem 3.3 forecasts each trained token's share of the step's entropy change,
``ΔH_t ∝ -A_t (S_t - E_p[S]_t)`` (:func:`forecast_contributions`). With the batch's mean entropy
``H`` against a target band, the filter drops the tokens that push the *forecast* the wrong way —
the entropy-lowering ones (``A (S - E_p[S]) > 0``) while ``H`` is too low, the entropy-raising ones
while it is too high — largest contribution first, until the forecast change meets the needed
correction or a cap on the share of dropped tokens is reached. Unlike Clip_B / Clip_V its threshold
is not fixed: it is chosen each step from the forecast. The target over time, the forecast's scale
and the integral term are set each step by its controller
(:class:`entropy_dynamics.control.EntropyTarget`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.filters.base import (
    check_finite,
    descending_rank,
    fraction,
    prepare,
    register_filter,
)
from entropy_dynamics.stats import TokenStats

__all__ = ["entropy_target", "forecast_contributions"]


def forecast_contributions(stats: TokenStats, advantages: Tensor, valid: Tensor) -> Tensor:
    """Each token's first-order share of the step's entropy change, per unit step (Theorem 3.3):
    ``c_t = -A_t (S_t - E_p[S]_t)`` on valid tokens, 0 elsewhere (NaN padding included).

    Args:
        stats: fields ``(B, T)``; reads ``discriminator`` and ``expected_discriminator``.
        advantages: ``(B, T)``, in the compute dtype.
        valid: ``(B, T)`` bool.

    Returns:
        ``(B, T)`` in ``advantages``' dtype. ``> 0``: training the token raises the entropy.
    """
    deviation = stats.deviation.detach().to(advantages.dtype)  # (B, T)
    return torch.where(valid, -advantages * deviation, 0.0)


def _drop_largest_until(gain: Tensor, candidate: Tensor, need: Tensor, cap: Tensor) -> Tensor:
    """The fewest candidates, largest ``gain`` first (ties: lower flat index), whose gains add up
    to ``need``; at most ``cap`` of them. ``(B, T)`` bool; none when ``need <= 0``."""
    rank = descending_rank(torch.where(candidate, gain, -torch.inf))  # (B, T)
    ordered = torch.zeros(gain.numel(), dtype=gain.dtype, device=gain.device)
    ordered.scatter_(0, rank.reshape(-1), torch.where(candidate, gain, 0.0).reshape(-1))
    before = torch.cumsum(ordered, 0) - ordered  # gain reached before each token in the order
    count = ((before < need) & (ordered > 0)).sum()
    return candidate & (rank < torch.minimum(count, cap))


def _check_target_options(
    target: float | None, band: float, gain: float, max_share: float, step_scale: float
) -> None:
    if target is not None:
        check_finite("target", target)
        if target <= 0:
            raise ValueError(f"entropy_target: target must be > 0 nats, got {target}")
    check_finite("band", band)
    if band < 0:
        raise ValueError(f"entropy_target: band must be >= 0 (a relative half-width), got {band}")
    if not 0 < gain <= 1:
        raise ValueError(f"entropy_target: gain must lie in (0, 1], got {gain}")
    if not 0 <= max_share <= 1:
        raise ValueError(f"entropy_target: max_share must lie in [0, 1], got {max_share}")
    check_finite("step_scale", step_scale)
    if step_scale <= 0:
        raise ValueError(f"entropy_target: step_scale must be > 0, got {step_scale}")


@register_filter("entropy_target")
@torch.no_grad()
def entropy_target(
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    target: float | None = None,
    band: float = 0.05,
    gain: float = 0.5,
    max_share: float = 0.1,
    step_scale: float = 0.5,
    entropy: float | None = None,
    offset: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Drop the tokens whose forecast entropy change points away from the target.

    Forecast of the step (first order, Theorem 3.3): ``F(keep) = κ · Σ_t keep_t c_t / n`` with
    ``c_t`` from :func:`forecast_contributions`, ``n`` the valid tokens and ``κ = step_scale``
    the nats of actual ΔH per unit of mean ``c`` (the trainer's controller fits it to the
    measured ΔH). ``H`` = ``entropy`` if given, else the mean of ``stats.entropy`` over valid
    tokens. With the band ``[L, U] = target · (1 ∓ band)``, the forecast must reach

    - ``F ≥ gain · (target - H)`` when ``H < L`` (too low: back toward the target),
      ``F ≤ gain · (target - H)`` when ``H > U``;
    - ``L - H ≤ F ≤ U - H`` inside the band (do not leave it);
    - both bounds shifted by ``offset`` (nats; the controller's integral term, which removes the
      steady error that a constant drift leaves a proportional rule:
      :func:`entropy_dynamics.control.integral_action`).

    If plain GRPO's ``F(all)`` is below the lower bound, the entropy-lowering tokens
    (``c_t < 0``) are dropped, largest ``|c_t|`` first, until it is met; above the upper bound,
    the entropy-raising ones (``c_t > 0``). Never more than ``floor(max_share · n)`` tokens;
    ``entropy_target/saturated`` is 1 when the bound is still not met (cap reached, or no
    candidate left). Drops are whole tokens, so the forecast may overshoot the bound.
    ``target=None`` keeps every token (no target: the trainer's controller sets one each step;
    likewise in the TRL and verl plug-ins).

    Args:
        stats: fields ``(B, T)``; reads ``entropy``, ``discriminator``,
            ``expected_discriminator``.
        advantages: ``(B, T)`` token-level advantages.
        response_mask: ``(B, T)`` bool or 0/1, true on valid response tokens.
        target: the entropy to steer to (nats per token), ``> 0``, or ``None``.
        band: relative half-width of the dead band around ``target``.
        gain: share of the gap ``target - H`` to close in one step, in ``(0, 1]``.
        max_share: most tokens dropped, as a share of the valid tokens.
        step_scale: ``κ > 0`` above.
        entropy: the entropy compared with the target (e.g. a smoothed one); ``None``: the batch's.
        offset: added to both bounds on ``F`` (nats); 0: the proportional rule alone.

    Returns:
        ``keep_mask (B, T)`` and metrics under ``entropy_target/``: ``target``, ``entropy``
        (``H``), ``error`` (``H - target``), ``frac_clipped`` (share dropped), ``direction``
        (+1 dropped lowering tokens, -1 raising ones, 0 none), ``forecast_grpo`` and
        ``forecast`` (``F`` without and with the drops, nats), ``forecast_unit`` (``F / κ``
        with the drops), ``required_min`` / ``required_max`` (the bounds) and ``saturated``.
    """
    _check_target_options(target, band, gain, max_share, step_scale)
    if entropy is not None:
        check_finite("entropy", entropy)
    check_finite("offset", offset)
    valid, adv, dtype = prepare(stats, advantages, response_mask)
    h_batch = masked_mean(stats.entropy.detach().to(dtype), valid)
    h = h_batch if entropy is None else h_batch.new_tensor(entropy)
    if target is None:
        return valid, {
            "entropy_target/entropy": h,
            "entropy_target/frac_clipped": h.new_zeros(()),
        }
    contribution = forecast_contributions(stats, adv, valid)  # (B, T), unit step
    n = valid.sum().clamp_min(1).to(dtype)
    unit_grpo = contribution.sum() / n
    lower, upper = target * (1 - band), target * (1 + band)
    correction = gain * (target - h)
    required_min = torch.where(h < lower, correction, lower - h) + offset
    required_max = torch.where(h > upper, correction, upper - h) + offset
    forecast_grpo = step_scale * unit_grpo
    raise_h, lower_h = forecast_grpo < required_min, forecast_grpo > required_max
    # Work in units of Σ c (the forecast times n / κ): each dropped token moves it by -c_t.
    need = torch.where(raise_h, required_min - forecast_grpo, forecast_grpo - required_max)
    need = need * n / step_scale
    side = torch.where(raise_h, contribution < 0, lower_h & (contribution > 0))
    cap = torch.floor(max_share * valid.sum().to(torch.float64)).to(torch.long)
    dropped = _drop_largest_until(contribution.abs(), valid & side, need, cap)
    keep = valid & ~dropped
    unit = torch.where(keep, contribution, 0.0).sum() / n
    forecast = step_scale * unit
    # Short of the bound it was dropping toward: the cap, or no candidate left.
    short = (raise_h & (forecast < required_min)) | (lower_h & (forecast > required_max))
    direction = raise_h.to(dtype) - lower_h.to(dtype)
    return keep, {
        "entropy_target/target": h.new_tensor(target),
        "entropy_target/entropy": h,
        "entropy_target/error": h - target,
        "entropy_target/frac_clipped": fraction(dropped, valid, dtype),
        "entropy_target/direction": direction,
        "entropy_target/forecast_grpo": forecast_grpo,
        "entropy_target/forecast": forecast,
        "entropy_target/forecast_unit": unit,
        "entropy_target/required_min": required_min,
        "entropy_target/required_max": required_max,
        "entropy_target/saturated": short.to(dtype),
    }
