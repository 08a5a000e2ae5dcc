"""Closed-loop entropy control: steer the mean entropy to a target (issue 18).

What lives here: the pure rules — the target over time, the integral term of ``entropy_target``,
Skywork-OR1's adaptive entropy coefficient, EntroPIC's PI rule (``rules``) — and the controllers
that feed them one step at a time and carry their state across checkpoints, each with its options
dataclass (``controllers``). This package re-exports the public names. The ``entropy_target``
filter the first method steers is :func:`entropy_dynamics.filters.entropy_target`; which method
uses which controller is :data:`entropy_dynamics.methods.METHODS`.

Imports: torch and the mathematics below it (``stats``, ``aggregation``, ``filters``, ``losses``).
"""

from entropy_dynamics.control.controllers import (
    AdaptiveEntropy,
    AdaptiveEntropyOptions,
    Controller,
    Entropic,
    EntropicOptions,
    EntropyTarget,
    EntropyTargetOptions,
)
from entropy_dynamics.control.rules import (
    SCHEDULES,
    adaptive_entropy_coef,
    integral_action,
    pi_control,
    target_schedule,
)

__all__ = [
    "SCHEDULES",
    "AdaptiveEntropy",
    "AdaptiveEntropyOptions",
    "Controller",
    "Entropic",
    "EntropicOptions",
    "EntropyTarget",
    "EntropyTargetOptions",
    "adaptive_entropy_coef",
    "integral_action",
    "pi_control",
    "target_schedule",
]
