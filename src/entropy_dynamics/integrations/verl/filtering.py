"""The settings of a verl run (``+entropy_dynamics.*``: the filter, the closed-loop method and
its controller's options, the dynamics monitor) and the keep-mask of a token filter (Clip_B,
Clip_V, ... by name) on a verl batch.

One call, :func:`decide_keep`, shared by the whole-batch path (the v1 trainer, after advantages)
and the loss-time fallback (each micro-batch): it builds the rollout policy's
:class:`~entropy_dynamics.stats.TokenStats` from the engine's statistics and ``old_log_probs``
(:func:`batch_stats`) and runs :func:`entropy_dynamics.losses.select_tokens` — the call our own
trainer makes. A closed-loop method runs the same through its controller
(:mod:`~entropy_dynamics.integrations.verl.control`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.integrations.control_loop import check_engine_control
from entropy_dynamics.integrations.verl.engine import STAT_KEYS
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.stats import TokenStats

__all__ = ["CONFIG_KEY", "VERL_METHODS", "FilterSettings", "batch_stats", "decide_keep"]

CONFIG_KEY = "entropy_dynamics"
"""Node of verl's trainer config that holds :class:`FilterSettings`
(``+entropy_dynamics.filter=clip_b +entropy_dynamics.filter_options.mu=2.5``)."""
VERL_METHODS = ("entropy_target", "adaptive_entropy")
"""The closed-loop methods the plug-in runs in verl (``entropic`` needs its own loss term)."""
_KEYS = ("filter", "filter_options", "method", "control", "monitor_every")


@dataclass(frozen=True)
class FilterSettings:
    """The token filter a verl run applies; validated on construction."""

    filter: str = "none"
    """Filter by name: ``none`` or any of ``entropy_dynamics.filters.available_filters()`` (an
    unknown name is refused with the list). Clip_B / Clip_V: arXiv 2602.03392 §5."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the filter (``{"mu": 2.5}`` for clip_b; ``{"mu": 8.5, "max_frac":
    1e-4}`` for clip_v, the paper's released run); unset options keep the filter's defaults."""

    method: str | None = None
    """The closed-loop method: ``entropy_target`` (implied by ``filter: entropy_target``) or
    ``adaptive_entropy`` (Skywork-OR1's coefficient, which verl lacks; needs
    ``actor_rollout_ref.actor.calculate_entropy=True``); ``None``: no controller."""
    control: dict[str, Any] = field(default_factory=dict)
    """The controller's options (our trainer's ``algorithm.control``), e.g.
    ``+entropy_dynamics.control.target=0.3 +entropy_dynamics.control.ki=0.1``."""
    monitor_every: int = 0
    """Every N-th step, after the actor update, one no-grad forward of the batch measures the
    actual entropy change (``dynamics/*``); ``entropy_target`` refits its step scale from it.
    0: off."""

    def __post_init__(self) -> None:
        config = self.loss_config()  # an unknown filter or option fails here
        if self.method is None and self.filter == "entropy_target":
            object.__setattr__(self, "method", "entropy_target")
        if self.method is not None and self.method not in VERL_METHODS:
            raise ValueError(
                f"{CONFIG_KEY}.method: {self.method!r} does not run in verl; use one of "
                f"{', '.join(VERL_METHODS)}"
            )
        if (self.method == "entropy_target") != (self.filter == "entropy_target"):
            raise ValueError(
                f"{CONFIG_KEY}.method=entropy_target steers filter entropy_target: set "
                f"+{CONFIG_KEY}.filter=entropy_target (and no other method)"
            )
        if self.method is None and self.control:
            raise ValueError(
                f"{CONFIG_KEY}.control sets a controller's options, but no closed-loop method is "
                f"set: +{CONFIG_KEY}.filter=entropy_target or +{CONFIG_KEY}.method=adaptive_entropy"
            )
        if not (isinstance(self.monitor_every, int) and self.monitor_every >= 0):
            raise ValueError(
                f"{CONFIG_KEY}.monitor_every must be an integer >= 0, got {self.monitor_every!r}"
            )
        if self.method is not None:  # a controller option fails here, not at the first step
            check_engine_control(  # the run's length: verl's, known at the first step
                self.method, self.control, config, None, f"{CONFIG_KEY}.control"
            )

    @property
    def active(self) -> bool:
        """Whether the run asks for anything: a filter, a controller or the monitor."""
        return self.filter != "none" or self.method is not None or self.monitor_every > 0

    def loss_config(self) -> PolicyLossConfig:
        return PolicyLossConfig(filter=self.filter, filter_options=dict(self.filter_options))

    @classmethod
    def from_config(cls, config: Any) -> FilterSettings | None:
        """The settings under :data:`CONFIG_KEY` of verl's (OmegaConf) trainer config, or
        ``None`` when the node is absent or asks for nothing (filter ``none``, no method, no
        monitor)."""
        node = config.get(CONFIG_KEY) if hasattr(config, "get") else None
        if node is None:
            return None
        values = dict(node.items())
        unknown = sorted(set(values) - set(_KEYS))
        if unknown:
            raise ValueError(
                f"{CONFIG_KEY}: unknown key(s) {', '.join(unknown)}; the node takes "
                f"{', '.join(_KEYS)} (e.g. +{CONFIG_KEY}.filter=clip_b "
                f"+{CONFIG_KEY}.filter_options.mu=2.5)"
            )
        options, control = values.get("filter_options") or {}, values.get("control") or {}
        method = values.get("method")
        settings = cls(
            filter=str(values.get("filter", "none")),
            filter_options={str(k): _plain(v) for k, v in dict(options.items()).items()},
            method=None if method in (None, "none") else str(method),
            control={str(k): _plain(v) for k, v in dict(control.items()).items()},
            monitor_every=int(values.get("monitor_every", 0)),
        )
        return settings if settings.active else None


def _plain(value: Any) -> Any:
    """OmegaConf scalars and containers as Python values."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return value


def decide_keep(
    config: PolicyLossConfig, batch: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The filter's keep-mask on a padded batch, and its metrics.

    Args:
        config: the filter (``config.filter``, ``config.filter_options``).
        batch: ``(B, T)`` padded response tensors: ``old_log_probs`` (``log p_k`` under the
            rollout policy), the engine's :data:`~entropy_dynamics.integrations.verl.engine.
            STAT_KEYS`, ``advantages`` and ``response_mask``.

    Returns:
        ``keep`` ``(B, T)`` bool (false on padding and on dropped tokens) and the metrics:
        ``entropy/mean``, ``discriminator/*`` (:meth:`TokenStats.metrics`) and the filter's own.
    """
    stats, advantages, mask = batch_stats(batch)
    keep, filter_metrics = select_tokens(config, stats, advantages, mask)
    return keep & mask, {**stats.metrics(mask), **filter_metrics}


def batch_stats(batch: Mapping[str, Tensor]) -> tuple[TokenStats, Tensor, Tensor]:
    """``(stats, advantages, mask)`` ``(B, T)`` of a padded verl batch (:func:`decide_keep`'s
    ``batch``): the rollout policy's statistics, advantages 0 off the mask, the bool mask."""
    missing = [k for k in ("old_log_probs", *STAT_KEYS) if k not in batch]
    if missing:
        raise KeyError(
            f"entropy_dynamics: the batch lacks {', '.join(missing)}; the engine adds the "
            f"statistics only when the old-log-prob pass runs with the non-tensor flag "
            f"calculate_ed_stats (the plug-in's trainer patch sets it)"
        )
    mask = batch["response_mask"].bool()  # (B, T)
    stats = TokenStats(
        logprobs=batch["old_log_probs"].float(),
        entropy=batch["ed_entropy"].float(),
        discriminator=batch["ed_discriminator"].float(),
        expected_discriminator=batch["ed_expected_discriminator"].float(),
    )
    advantages = torch.where(mask, batch["advantages"].float(), 0.0)  # (B, T)
    return stats, advantages, mask
