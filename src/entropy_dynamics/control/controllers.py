"""The state of the closed-loop methods: each step, a controller turns the method's loss config into
that step's config; its state goes into every checkpoint.

One controller per closed-loop method, each with its options dataclass (``options_type``, the
run's ``algorithm.control``); the rules themselves are pure functions of
:mod:`entropy_dynamics.control.rules`, and the method table
(:data:`entropy_dynamics.methods.METHODS`) names each method's controller. Every other method gets
:class:`Controller`, which changes nothing. The entropy ``H`` a controller reads is the mean
entropy of the step's rollout over its valid response tokens, measured before the update (the
statistics every filter sees).

- ``entropy_target``: sets the filter's ``target`` from the schedule (a constant, linear,
  increase-then-decrease, or — ``target`` unset — the first step's entropy, held), its ``entropy``
  (smoothed, when asked) and its ``step_scale`` ``κ``, refitted after each step to the measured
  ΔH: ``κ = Σ_s d^(t-s) a_s u_s / Σ_s d^(t-s) u_s²`` (a least-squares slope through the origin,
  decay ``d = 0.9``) of the actual change ``a_s`` (``dynamics/delta_h_actual``) on the unit
  forecast ``u_s`` of the kept tokens (``entropy_target/forecast_unit``), kept within
  ``[κ₀ / 10, 10 κ₀]`` of the filter's initial ``step_scale`` ``κ₀``. Without ``dynamics`` ``κ``
  stays ``κ₀``. With ``ki > 0`` it also sets the filter's ``offset`` to the integral term
  ``ki · Σ_s (target_s - H_s)`` over the steps so far, this one included, clamped to
  ``± integral_limit · target`` (:func:`~entropy_dynamics.control.rules.integral_action`).
- ``adaptive_entropy``: TRL's ``use_adaptive_entropy`` in order — the bonus of step ``t`` is the
  coefficient of the end of step ``t - 1``, applied only if the entropy then was ``≤ target``
  (none at the first step); the coefficient is then updated with step ``t``'s entropy.
  The initial coefficient is ``algorithm.loss.entropy_coef`` (TRL: ``entropy_coef``, default 0).
- ``entropic``: ``α`` from EntroPIC's PI rule on this step's ``H - target``, once per rollout
  batch (the released code updates it per micro-batch; the same with one update per step).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.control.rules import (
    adaptive_entropy_coef,
    integral_action,
    pi_control,
    target_schedule,
)
from entropy_dynamics.filters import filter_options
from entropy_dynamics.finite import check_finite_fields
from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.stats import TokenStats

__all__ = [
    "AdaptiveEntropy",
    "AdaptiveEntropyOptions",
    "Controller",
    "Entropic",
    "EntropicOptions",
    "EntropyTarget",
    "EntropyTargetOptions",
]

_CALIBRATION_DECAY = 0.9  # weight of the past in the fit of κ (≈ the last 10 steps)
_SCALE_RANGE = 10.0  # κ stays within [κ₀ / 10, 10 κ₀]


@dataclass(frozen=True)
class EntropyTargetOptions:
    """``algorithm.control`` of ``entropy_target``: the target over time (this project)."""

    target: float | None = None
    """Target entropy in nats at the start of the schedule; ``None``: the first step's mean
    rollout entropy (with ``schedule=constant``: hold the initial entropy)."""
    schedule: str = "constant"
    """``constant``, ``linear`` (to ``target_final``) or ``rise_fall`` (up to ``target_peak`` at
    ``peak_step``, then down to ``target_final``)."""
    target_final: float | None = None
    """Target at the end of the schedule (``linear``: required; ``rise_fall``: default the
    start)."""
    target_peak: float | None = None
    """Top of ``rise_fall``."""
    peak_step: int | None = None
    """Step of the top of ``rise_fall``; ``None``: half of ``schedule_steps``."""
    schedule_steps: int = 0
    """Length of the schedule in steps; 0: the run's ``steps``."""
    smoothing: float = 0.0
    """Weight of the past in an exponential average of the rollout entropy compared with the
    target (0: this step's batch alone; small batches are noisy, e.g. 0.5)."""
    ki: float = 0.0
    """Integral gain: nats of required forecast change per nat of summed error ``target - H``
    (0: proportional only, the filter's ``gain``; 0.1 removes the steady error below target)."""
    integral_limit: float = 0.1
    """Anti-windup: the integral term stays within ``± integral_limit · target`` nats."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not (self.ki >= 0 and self.integral_limit >= 0):
            raise ValueError(
                f"ki and integral_limit must be >= 0, got {self.ki}, {self.integral_limit}"
            )
        for name in ("target", "target_final", "target_peak"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a number of nats > 0 (or unset), got {value!r}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        if self.schedule_steps < 0:
            raise ValueError(f"schedule_steps must be >= 0, got {self.schedule_steps}")


@dataclass(frozen=True)
class AdaptiveEntropyOptions:
    """``algorithm.control`` of ``adaptive_entropy`` (Skywork-OR1, arXiv 2505.22312; defaults of
    TRL's ``GRPOConfig``)."""

    target: float = 0.2
    """Entropy at or below which the bonus applies and its coefficient grows (TRL
    ``entropy_target`` 0.2)."""
    delta: float = 0.005
    """Step of the coefficient per optimizer step (TRL ``entropy_coef_delta`` 0.005)."""
    coef_min: float = 0.0
    """Lower clamp of the coefficient (TRL ``entropy_coef_min`` 0)."""
    coef_max: float = 1.0
    """Upper clamp of the coefficient (TRL ``entropy_coef_max`` 1)."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not (self.delta >= 0 and 0 <= self.coef_min <= self.coef_max):
            raise ValueError(
                f"need delta >= 0 and 0 <= coef_min <= coef_max, got delta={self.delta}, "
                f"coef_min={self.coef_min}, coef_max={self.coef_max}"
            )


@dataclass(frozen=True)
class EntropicOptions:
    """``algorithm.control`` of ``entropic`` (EntroPIC, arXiv 2511.15248; gains of its released
    ``config/entropic.yaml``)."""

    target: float | None = None
    """Target entropy in nats; ``None``: the first step's mean rollout entropy. (EntroPIC's run
    script sets 0.1 for Qwen3-8B-Base at temperature 0.6; its config has no default.)"""
    kp: float = 1.0
    """Proportional gain (``entropy_control_p`` 1)."""
    ki: float = 0.01
    """Integral gain (``entropy_control_i`` 0.01)."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if not (self.kp >= 0 and self.ki >= 0):
            raise ValueError(f"kp and ki must be >= 0, got kp={self.kp}, ki={self.ki}")


def _entropy(stats: TokenStats, mask: Tensor) -> float:
    """Mean rollout entropy over valid tokens: the one host sync of a controller per step."""
    return float(masked_mean(stats.entropy.detach().double(), mask != 0))


class Controller:
    """No control: the method's loss config every step (grpo, clip_b, ... any open-loop method).

    Subclasses override :meth:`begin` (this step's config and metrics, before the filter),
    :meth:`end` (the step's metrics, after the update) and :attr:`state` (plain values only, so
    that a checkpoint loads with ``weights_only``).
    """

    options_type: type | None = None

    def __init__(self, base: PolicyLossConfig, options: Any = None, steps: int = 1) -> None:
        self.base, self.options, self.steps = base, options, steps
        self.state: dict[str, Any] = {}

    @classmethod
    def options_from(cls, method: str, control: Mapping[str, Any]) -> Any:
        """``control`` (a run's ``algorithm.control``) as an :attr:`options_type` instance,
        validated; ``None`` for a controller without options. An unknown key is refused, naming
        the options."""
        if cls.options_type is None:
            return None
        known = [f.name for f in fields(cls.options_type)]
        unknown = sorted(set(control) - set(known))
        if unknown:
            raise ValueError(
                f"{method} has no option {unknown[0]!r}; its options: {', '.join(known)}"
            )
        return cls.options_type(**control)

    def begin(
        self, step: int, stats: TokenStats, mask: Tensor
    ) -> tuple[PolicyLossConfig, dict[str, Tensor]]:
        """The loss config of step ``step`` (0-based) and the controller's metrics."""
        return self.base, {}

    def end(self, metrics: Mapping[str, Any]) -> None:
        """Read the finished step's metrics (tensors or floats)."""

    def _entropy_and_target(self, stats: TokenStats, mask: Tensor) -> tuple[float, float]:
        """This step's mean rollout entropy, and the ``target`` option or, when it is unset, the
        first step's entropy (kept in the state)."""
        entropy = _entropy(stats, mask)
        if self.state.get("initial") is None:
            self.state["initial"] = entropy
        target = self.options.target
        return entropy, self.state["initial"] if target is None else target

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state.update(state)


class EntropyTarget(Controller):
    options_type = EntropyTargetOptions

    def __init__(self, base: PolicyLossConfig, options: EntropyTargetOptions, steps: int) -> None:
        taken = sorted({"target", "entropy", "offset"} & set(base.filter_options))
        if taken:
            raise ValueError(
                f"entropy_target's controller sets filter_options.{taken[0]} each step; set "
                "algorithm.control.target (and its schedule, or ki) instead"
            )
        super().__init__(base, options, steps)
        default = filter_options("entropy_target")["step_scale"]
        self.initial_scale = base.filter_options.get("step_scale", default)
        self.state = {"initial": None, "smoothed": None, "scale": self.initial_scale}
        self.state |= {"num": 0.0, "den": 0.0, "integral": 0.0}

    def begin(self, step, stats, mask):
        opts, state = self.options, self.state
        entropy, start = self._entropy_and_target(stats, mask)
        target = target_schedule(
            step, start, steps=opts.schedule_steps or self.steps, schedule=opts.schedule,
            final=opts.target_final, peak=opts.target_peak, peak_step=opts.peak_step,
        )  # fmt: skip
        chosen = {"target": target, "step_scale": state["scale"]}
        if opts.smoothing > 0:
            previous = entropy if state["smoothed"] is None else state["smoothed"]
            state["smoothed"] = opts.smoothing * previous + (1 - opts.smoothing) * entropy
            chosen["entropy"] = entropy = state["smoothed"]
        metrics = {"entropy_target/step_scale": torch.tensor(state["scale"])}
        if opts.ki > 0:
            chosen["offset"], state["integral"] = integral_action(
                state["integral"], target - entropy, ki=opts.ki, limit=opts.integral_limit * target
            )
            metrics["entropy_target/offset"] = torch.tensor(chosen["offset"])
        config = dataclasses.replace(
            self.base, filter_options={**self.base.filter_options, **chosen}
        )
        return config, metrics

    def end(self, metrics):
        actual = metrics.get("dynamics/delta_h_actual")
        unit = metrics.get("entropy_target/forecast_unit")
        if actual is None or unit is None:
            return
        actual, unit, state = float(actual), float(unit), self.state
        state["num"] = _CALIBRATION_DECAY * state["num"] + actual * unit
        state["den"] = _CALIBRATION_DECAY * state["den"] + unit * unit
        if state["den"] > 0 and state["num"] > 0:
            fitted, initial = state["num"] / state["den"], self.initial_scale
            state["scale"] = min(max(fitted, initial / _SCALE_RANGE), initial * _SCALE_RANGE)


class AdaptiveEntropy(Controller):
    options_type = AdaptiveEntropyOptions

    def __init__(self, base, options: AdaptiveEntropyOptions, steps: int) -> None:
        super().__init__(base, options, steps)
        self.state = {"coef": base.entropy_coef, "last_entropy": math.inf}

    def begin(self, step, stats, mask):
        opts, state = self.options, self.state
        applied = state["coef"] if state["last_entropy"] <= opts.target else 0.0
        entropy = _entropy(stats, mask)
        state["coef"] = adaptive_entropy_coef(
            state["coef"], entropy, target=opts.target, delta=opts.delta,
            coef_min=opts.coef_min, coef_max=opts.coef_max,
        )  # fmt: skip
        state["last_entropy"] = entropy
        return dataclasses.replace(self.base, entropy_coef=applied), {
            "adaptive_entropy/coef": torch.tensor(applied),
            "adaptive_entropy/coef_next": torch.tensor(state["coef"]),
            "adaptive_entropy/target": torch.tensor(opts.target),
            "adaptive_entropy/error": torch.tensor(entropy - opts.target),
        }


class Entropic(Controller):
    options_type = EntropicOptions

    def __init__(self, base, options: EntropicOptions, steps: int) -> None:
        super().__init__(base, options, steps)
        self.state = {"initial": None, "integral": 0.0}

    def begin(self, step, stats, mask):
        opts, state = self.options, self.state
        entropy, target = self._entropy_and_target(stats, mask)
        alpha, state["integral"] = pi_control(
            entropy - target, state["integral"], kp=opts.kp, ki=opts.ki
        )
        return dataclasses.replace(self.base, entropic_alpha=alpha), {
            "entropic/alpha": torch.tensor(alpha),
            "entropic/target": torch.tensor(target),
            "entropic/error": torch.tensor(entropy - target),
            "entropic/integral": torch.tensor(state["integral"]),
        }
