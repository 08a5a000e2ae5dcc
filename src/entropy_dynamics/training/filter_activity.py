"""Is the token filter doing anything? The effective options of a method's filter, and a notice
when it has dropped almost no tokens lately.

At the paper's thresholds Clip_B drops ~0.4 % of negative tokens and Clip_V almost none on small
batches (docs/results.md): Clip_V's cap ``max(floor(max_frac · n), 1)`` is one token in a batch of
~800, and the one-sided threshold ``S − m < −μσ`` is rarely passed when ``S_k`` is right-skewed.
A run whose filter is idle is plain GRPO; the user should be told, with the threshold in force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from entropy_dynamics.filters import filter_options
from entropy_dynamics.losses import PolicyLossConfig

__all__ = ["IDLE_SHARE", "IDLE_WINDOW", "effective_filter_options", "idle_filter_notice"]

IDLE_WINDOW = 20
"""Steps over which the dropped share is averaged."""
IDLE_SHARE = 1e-3
"""A filter that drops less than this share of valid tokens over the window is called idle."""


def effective_filter_options(loss: PolicyLossConfig) -> dict[str, Any]:
    """The options ``loss.filter`` runs with: its keyword defaults with the user's on top
    (``{}`` for ``filter="none"``)."""
    return filter_options(loss.filter, loss.filter_options)


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in options.items()) or "defaults"


def idle_filter_notice(
    history: Sequence[dict[str, float]],
    loss: PolicyLossConfig,
    window: int = IDLE_WINDOW,
    share: float = IDLE_SHARE,
) -> str | None:
    """A one-line notice when the filter dropped less than ``share`` of valid tokens, on
    average, over the last ``window`` steps of ``history`` (rows of ``metrics.jsonl``, which
    carry ``actor/frac_kept``); ``None`` when there is no filter, fewer than ``window`` steps
    with that metric, or the filter is active."""
    if loss.filter == "none":
        return None
    kept = [row["actor/frac_kept"] for row in history if "actor/frac_kept" in row]
    kept = [k for k in kept[-window:] if math.isfinite(k)]
    if len(kept) < window:
        return None
    dropped = 1.0 - sum(kept) / len(kept)
    if dropped >= share:
        return None
    options = effective_filter_options(loss)
    hint = ""
    if "mu" in options:
        hint = "; a lower mu acts on more tokens, e.g. algorithm.loss.filter_options.mu=1.0"
        if "max_frac" in options:
            hint += f" (at most max_frac={options['max_frac']} of them are dropped)"
    return (
        f"{loss.filter} is idle: it dropped {dropped:.3%} of tokens over the last {window} "
        f"steps ({_options_text(options)}), so this run is close to plain GRPO{hint}"
    )
