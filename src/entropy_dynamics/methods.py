"""The methods, one table: each method is one entry — its name, one line of what it does (with its
source), its overrides of the policy-loss options, and its controller if it is closed-loop.

Everything that lists or checks method names reads this table: the config's ``algorithm.method``,
the CLI's ``--method`` help, ``entropy-dynamics methods``, the dry run's effective options. A method
is a preset of :class:`~entropy_dynamics.losses.PolicyLossConfig` (whose fields hold the single
default of each option) plus, for the closed-loop ones, a
:class:`~entropy_dynamics.control.Controller` subclass whose ``options_type`` dataclass is the run's
``algorithm.control``. Adding a method is one entry of :data:`TABLE` (or one
:func:`register_method` call) and its test; a new loss is one ``@register_policy_loss`` function,
a new filter one ``@register_filter`` function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import torch

from entropy_dynamics.control import AdaptiveEntropy, Controller, Entropic, EntropyTarget
from entropy_dynamics.filters import filter_options
from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.stats import TokenStats

__all__ = [
    "METHODS",
    "TABLE",
    "Method",
    "available_methods",
    "build_controller",
    "check_control",
    "closed_loop_methods",
    "controlled_loss",
    "effective_options",
    "get_method",
    "register_method",
    "resolve_method",
]


@dataclass(frozen=True)
class Method:
    """One method: a preset of the policy loss and, for a closed-loop method, its controller."""

    name: str
    """The name ``algorithm.method`` and ``--method`` take."""
    summary: str
    """One line: what the method does, in the paper's terms, and its source."""
    loss: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of :class:`PolicyLossConfig` (every other option keeps its default)."""
    controller: type[Controller] = Controller
    """Sets each step's loss config (closed-loop methods; its ``options_type`` holds the options
    of ``algorithm.control``); :class:`Controller` changes nothing."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", MappingProxyType(dict(self.loss)))  # read-only

    @property
    def closed_loop(self) -> bool:
        return self.controller is not Controller


TABLE = (
    Method("grpo", "PPO-clip surrogate (ε 0.2), token-mean, no filter: the paper's GRPO baseline "
           "(arXiv 2402.03300)"),
    Method("clip_higher", "upper clip range 1 + 0.28 for low-probability positive updates (DAPO, "
           "arXiv 2503.14476)", {"eps_high": 0.28}),
    Method("clip_b", "drop negative-advantage tokens whose S_k lies far below the batch mean "
           "(Clip_B, arXiv 2602.03392 §5; μ 2.5 as released)", {"filter": "clip_b"}),
    Method("clip_v", "drop a capped few tokens whose S_k lies far from its centre E_p[S] (Clip_V, "
           "arXiv 2602.03392 §5; μ 8.5, max_frac 1e-4 as released)", {"filter": "clip_v"}),
    Method("high_entropy", "train only the top 20 % of tokens by entropy (the 80/20 rule, "
           "arXiv 2506.01939)", {"filter": "high_entropy"}),
    Method("entropy_bonus", "add the entropy bonus 0.001 · H (verl's former default "
           "entropy_coeff)", {"entropy_coef": 1e-3}),
    Method("clip_cov", "drop random tokens of large centred Cov(A, log p) (Clip-Cov, "
           "arXiv 2505.22617; verl defaults)", {"filter": "clip_cov"}),
    Method("kl_cov", "penalise |log p - log p_old| on the tokens of largest Cov(A, log p) "
           "(KL-Cov, arXiv 2505.22617; verl defaults)", {"loss": "kl_cov"}),
    Method("sign_intervention", "train one sign of S_k on the samples of one advantage sign (the "
           "validation of arXiv 2602.03392 §4)", {"filter": "sign_intervention"}),
    Method("entropy_target", "steer the entropy to a target by dropping the tokens whose forecast "
           "ΔH points away (this project, from Theorem 3.3)", {"filter": "entropy_target"},
           EntropyTarget),
    Method("adaptive_entropy", "entropy bonus whose coefficient grows while H <= target "
           "(Skywork-OR1, arXiv 2505.22312; TRL use_adaptive_entropy)", {}, AdaptiveEntropy),
    Method("entropic", "PI control of H - target reweighting high-probability tokens (EntroPIC, "
           "arXiv 2511.15248)", {"loss": "entropic"}, Entropic),
)  # fmt: skip
"""The built-in methods, one entry each."""

METHODS: dict[str, Method] = {}
"""Method name → its entry: :data:`TABLE` and every :func:`register_method` since."""


def _check_option_names(options: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(PolicyLossConfig)}
    for key in options:
        if key not in known:
            raise ValueError(f"unknown loss option {key!r}; options: {', '.join(sorted(known))}")


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS`, validated now (its loss options, its controller)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _check_option_names(method.loss)
    PolicyLossConfig(**method.loss)  # fail now, not at training time
    if not (isinstance(method.controller, type) and issubclass(method.controller, Controller)):
        raise ValueError(f"method {method.name!r}: controller must be a Controller subclass")
    METHODS[method.name] = method
    return method


for _entry in TABLE:
    register_method(_entry)


def available_methods() -> list[str]:
    return sorted(METHODS)


def closed_loop_methods() -> list[str]:
    """The methods with a controller."""
    return sorted(name for name, method in METHODS.items() if method.closed_loop)


def get_method(name: str) -> Method:
    """The entry of method ``name``; the error lists the methods."""
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r}; available: {', '.join(available_methods())}")
    return METHODS[name]


def resolve_method(name: str, **overrides: Any) -> PolicyLossConfig:
    """The :class:`PolicyLossConfig` of method ``name`` with the user's ``overrides`` on top (a
    user's ``eps_high`` wins over clip_higher's 0.28)."""
    method = get_method(name)
    _check_option_names(overrides)
    return PolicyLossConfig(**{**method.loss, **overrides})


def controlled_loss(loss: str) -> str | None:
    """The closed-loop method whose controller a policy loss needs, or ``None``: a loss that only
    closed-loop methods use does nothing of its own without their controller (``entropic`` is
    plain ``ppo`` while ``α`` stays 0)."""
    users = [m for m in METHODS.values() if m.loss.get("loss", "ppo") == loss]
    if users and all(m.closed_loop for m in users):
        return sorted(m.name for m in users)[0]
    return None


def build_controller(
    name: str, control: Mapping[str, Any], base: PolicyLossConfig, steps: int
) -> Controller:
    """The controller of method ``name`` with options ``control`` (the run's
    ``algorithm.control``) over the method's loss config ``base``, for a run of ``steps`` steps."""
    kind = get_method(name).controller
    if kind.options_type is None and control:
        closed = ", ".join(closed_loop_methods())
        raise ValueError(f"method {name!r} has no controller options (methods with: {closed})")
    return kind(base, kind.options_from(name, control), steps)


def check_control(name: str, control: Mapping[str, Any], base: PolicyLossConfig, steps: int):
    """Validate ``control`` for method ``name`` now (``ValueError`` naming the option), not
    mid-run: build the controller and run its first step on one token of entropy 1."""
    zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    build_controller(name, control, base, steps).begin(
        0, TokenStats(zero, one, zero, zero), one.bool()
    )


def effective_options(
    name: str, loss: PolicyLossConfig | None = None, control: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """What method ``name`` runs with: ``{"loss": ..., "filter": ..., "control": ...}``.

    ``loss``: the options that differ from :class:`PolicyLossConfig`'s defaults (the filter's own
    options aside); ``filter``: every option of its filter, defaults with the given ones on top;
    ``control``: every option of its controller, likewise. ``loss`` defaults to the method's preset,
    ``control`` to none given.
    """
    loss = resolve_method(name) if loss is None else loss
    defaults = PolicyLossConfig()
    changed = {
        f.name: getattr(loss, f.name)
        for f in fields(loss)
        if f.name != "filter_options" and getattr(loss, f.name) != getattr(defaults, f.name)
    }
    kind = get_method(name).controller
    options = kind.options_from(name, control or {})
    return {
        "loss": changed,
        "filter": filter_options(loss.filter, loss.filter_options),
        "control": {} if options is None else dataclasses.asdict(options),
    }
