"""The closed-loop rules: the target over time and the peers' update rules, pure functions of
scalars (one value per optimizer step; issue 18).

- :func:`target_schedule`: the entropy target after ``step`` steps (constant — with the first
  step's entropy, hold the initial entropy —, linear, increase-then-decrease);
- :func:`integral_action`: the integral term of the ``entropy_target`` method, with anti-windup
  (the filter itself is :func:`entropy_dynamics.filters.entropy_target`);
- :func:`adaptive_entropy_coef` (Skywork-OR1, arXiv 2505.22312, as TRL's
  ``use_adaptive_entropy``): an entropy-bonus coefficient raised by ``δ`` while ``H ≤ target``,
  lowered otherwise, clamped to ``[min, max]``, and applied only while ``H ≤ target``;
- :func:`pi_control` (EntroPIC, arXiv 2511.15248): a proportional-integral controller on
  ``H - target`` sets ``α``, the weight of an extra term on high-probability tokens that
  reweights positive samples by ``1 + α`` and negative ones by ``1 - α``
  (:func:`entropy_dynamics.losses.entropic_adjustment`, the paper's simplified
  high-probability-token form).

The controllers that feed them one step at a time are in
:mod:`entropy_dynamics.control.controllers`.
"""

from __future__ import annotations

from entropy_dynamics.filters.base import check_finite

__all__ = [
    "SCHEDULES",
    "adaptive_entropy_coef",
    "integral_action",
    "pi_control",
    "target_schedule",
]

SCHEDULES = ("constant", "linear", "rise_fall")
"""Target schedules of :func:`target_schedule`."""


# ---------------------------------------------------------------------------------------------
# The target over time
# ---------------------------------------------------------------------------------------------


def target_schedule(
    step: int,
    start: float,
    *,
    steps: int,
    schedule: str = "constant",
    final: float | None = None,
    peak: float | None = None,
    peak_step: int | None = None,
) -> float:
    """The entropy target after ``step`` completed steps of a ``steps``-step schedule.

    - ``constant``: ``start`` (with ``start`` = the first step's entropy: hold the initial
      entropy);
    - ``linear``: from ``start`` to ``final`` in a straight line over ``steps`` steps, then
      ``final`` (a linear decay when ``final < start``);
    - ``rise_fall``: from ``start`` up to ``peak`` at ``peak_step`` (default ``steps // 2``), then
      down to ``final`` (default ``start``) at ``steps``, then ``final``.

    Example: ``target_schedule(5, 0.3, steps=10, schedule="linear", final=0.2) == 0.25``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown {schedule!r}; use one of {', '.join(SCHEDULES)}")
    check_finite("target", start)
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"schedule steps must be an integer >= 1, got {steps!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule == "constant":
        return float(start)
    if schedule == "linear":
        if final is None:
            raise ValueError("schedule 'linear' needs target_final (the entropy at its end)")
        check_finite("target_final", final)
        return start + (final - start) * min(step / steps, 1.0)
    if peak is None:
        raise ValueError("schedule 'rise_fall' needs target_peak (the entropy at its top)")
    check_finite("target_peak", peak)
    final = start if final is None else final
    check_finite("target_final", final)
    top = steps // 2 if peak_step is None else peak_step
    if not 0 < top < steps:
        raise ValueError(f"peak_step must lie strictly between 0 and {steps}, got {top}")
    if step <= top:
        return start + (peak - start) * step / top
    return peak + (final - peak) * min((step - top) / (steps - top), 1.0)


# ---------------------------------------------------------------------------------------------
# The update rules (scalars: one value per optimizer step)
# ---------------------------------------------------------------------------------------------


def adaptive_entropy_coef(
    coef: float,
    entropy: float,
    *,
    target: float = 0.2,
    delta: float = 0.005,
    coef_min: float = 0.0,
    coef_max: float = 1.0,
) -> float:
    """Skywork-OR1's adaptive entropy coefficient (arXiv 2505.22312), TRL's rule exactly
    (``GRPOTrainer`` with ``use_adaptive_entropy``; defaults ``entropy_target`` 0.2,
    ``entropy_coef_delta`` 0.005, ``entropy_coef_min`` 0, ``entropy_coef_max`` 1):
    ``min(coef + delta, coef_max)`` when ``entropy ≤ target``, else ``max(coef - delta,
    coef_min)``. The bonus is applied only while the entropy is at or below the target.

    Example: ``adaptive_entropy_coef(0.0, 0.1) == 0.005``; ``adaptive_entropy_coef(0.0, 0.3) == 0``.
    """
    if entropy <= target:
        return min(coef + delta, coef_max)
    return max(coef - delta, coef_min)


def pi_control(
    error: float, integral: float, *, kp: float = 1.0, ki: float = 0.01, limit: float = 1.0
) -> tuple[float, float]:
    """EntroPIC's proportional-integral rule (arXiv 2511.15248; released code's defaults
    ``entropy_control_p`` 1, ``entropy_control_i`` 0.01, ``α`` clipped to ``[-1, 1]``).

    ``α = clip(kp · e + ki · I, -limit, limit)`` with ``e = H - target`` and ``I`` the sum of the
    errors of the *previous* steps; returns ``(α, I + e)``.

    Example: ``pi_control(0.05, 0.2) == (0.052, 0.25)`` (up to rounding).
    """
    alpha = min(max(kp * error + ki * integral, -limit), limit)
    return alpha, integral + error


def integral_action(
    integral: float, error: float, *, ki: float, limit: float
) -> tuple[float, float]:
    """The integral term of ``entropy_target``'s controller, with anti-windup clamping.

    ``I' = clip(I + e, -limit / ki, limit / ki)`` with ``e = target - H`` this step's error (nats)
    and ``I`` the clamped sum of the previous ones; returns ``(ki · I', I')``: the offset (nats)
    added to the filter's required forecast change, at most ``limit`` in size, and the new sum.
    ``ki = 0``: no integral action, ``(0, 0)``.

    Example: ``integral_action(0.2, 0.05, ki=0.1, limit=0.02) == (0.02, 0.2)`` (the sum 0.25 is
    clamped to 0.02 / 0.1 = 0.2).
    """
    if ki == 0:
        return 0.0, 0.0
    bound = limit / ki
    integral = min(max(integral + error, -bound), bound)
    return ki * integral, integral
