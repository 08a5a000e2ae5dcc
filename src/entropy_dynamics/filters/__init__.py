"""Token masks for entropy control: each filter decides which response tokens keep their gradient.

What lives here: the contract every filter follows, its registry and the helpers the filters share
(``base``; the registry sits there, not in this ``__init__``, so that the filters' modules import
it without an import circle through the package), the paper's filters Clip_B, Clip_V and the sign
intervention (``paper``), the baselines the paper's lens explains — plain GRPO, high-entropy
tokens, Clip-Cov, KL-Cov (``baselines``) — and the forecast-driven ``entropy_target`` filter of the
closed-loop method (``entropy_target``). This package re-exports the public names.

    filter_fn(stats, advantages, response_mask, **options) -> (keep_mask, metrics)

Filters are registered by name with :func:`register_filter`, looked up with :func:`get_filter`;
:func:`filter_options` gives the options a filter runs with.

Imports: torch and the top-level mathematics (``stats``, ``aggregation``) only.
"""

from entropy_dynamics.filters.base import (
    FilterFn,
    available_filters,
    filter_options,
    get_filter,
    register_filter,
)
from entropy_dynamics.filters.baselines import (
    clip_cov,
    high_entropy,
    keep_all,
    kl_cov,
    kl_cov_selection,
)
from entropy_dynamics.filters.entropy_target import entropy_target, forecast_contributions
from entropy_dynamics.filters.paper import clip_b, clip_v, sign_intervention

__all__ = [
    "FilterFn",
    "available_filters",
    "clip_b",
    "clip_cov",
    "clip_v",
    "entropy_target",
    "filter_options",
    "forecast_contributions",
    "get_filter",
    "high_entropy",
    "keep_all",
    "kl_cov",
    "kl_cov_selection",
    "register_filter",
    "sign_intervention",
]
