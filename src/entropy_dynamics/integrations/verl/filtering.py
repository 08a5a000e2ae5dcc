"""The keep-mask of a token filter (Clip_B, Clip_V, ... by name) on a verl batch.

One call, :func:`decide_keep`, shared by the whole-batch path (the v1 trainer, after advantages)
and the loss-time fallback (each micro-batch): it builds the rollout policy's
:class:`~entropy_dynamics.stats.TokenStats` from the engine's statistics and ``old_log_probs`` and
runs :func:`entropy_dynamics.losses.select_tokens` — the call our own trainer makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.integrations.verl.engine import STAT_KEYS
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.stats import TokenStats

__all__ = ["CONFIG_KEY", "FilterSettings", "decide_keep"]

CONFIG_KEY = "entropy_dynamics"
"""Node of verl's trainer config that holds :class:`FilterSettings`
(``+entropy_dynamics.filter=clip_b +entropy_dynamics.filter_options.mu=2.5``)."""


@dataclass(frozen=True)
class FilterSettings:
    """The token filter a verl run applies; validated on construction."""

    filter: str = "none"
    """Filter by name: ``none`` or any of ``entropy_dynamics.filters.available_filters()`` (an
    unknown name is refused with the list). Clip_B / Clip_V: arXiv 2602.03392 §5."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the filter (``{"mu": 2.5}`` for clip_b; ``{"mu": 8.5, "max_frac":
    1e-4}`` for clip_v, the paper's released run); unset options keep the filter's defaults."""

    def __post_init__(self) -> None:
        self.loss_config()  # an unknown filter or option fails here, naming what is allowed

    def loss_config(self) -> PolicyLossConfig:
        return PolicyLossConfig(filter=self.filter, filter_options=dict(self.filter_options))

    @classmethod
    def from_config(cls, config: Any) -> FilterSettings | None:
        """The settings under :data:`CONFIG_KEY` of verl's (OmegaConf) trainer config, or
        ``None`` when the node is absent or its filter is ``none``."""
        node = config.get(CONFIG_KEY) if hasattr(config, "get") else None
        if node is None:
            return None
        values = dict(node.items())
        unknown = sorted(set(values) - {"filter", "filter_options"})
        if unknown:
            raise ValueError(
                f"{CONFIG_KEY}: unknown key(s) {', '.join(unknown)}; the node takes 'filter' and "
                f"'filter_options' (e.g. +{CONFIG_KEY}.filter=clip_b "
                f"+{CONFIG_KEY}.filter_options.mu=2.5)"
            )
        options = values.get("filter_options") or {}
        settings = cls(
            filter=str(values.get("filter", "none")),
            filter_options={str(k): _plain(v) for k, v in dict(options.items()).items()},
        )
        return None if settings.filter == "none" else settings


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
    keep, filter_metrics = select_tokens(config, stats, advantages, mask)
    return keep & mask, {**stats.metrics(mask), **filter_metrics}
