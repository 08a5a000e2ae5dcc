"""The TRL plug-in's options: ``GRPOConfig`` plus the token filter, and TRL's ``loss_type`` as one
of our aggregation modes.

Every TRL option keeps its meaning and default; the filter and its options are checked when the
config is built (an unknown filter or option fails there, not at the first step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from entropy_dynamics.filters import available_filters
from entropy_dynamics.losses import PolicyLossConfig

__all__ = ["EntropyGRPOConfig", "trl_aggregation"]


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the token filter; every TRL option keeps its meaning and default."""

    entropy_filter: str = field(
        default="none",
        metadata={
            "help": "Token filter by name (entropy_dynamics.filters): "
            f"{', '.join(available_filters())}. Clip_B / Clip_V: arXiv 2602.03392."
        },
    )
    entropy_filter_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword options of the filter, a dict or a JSON string, e.g. "
            '\'{"mu": 2.5}\' for clip_b, \'{"mu": 8.5, "max_frac": 1e-4}\' for clip_v; unset '
            "options keep the filter's documented defaults."
        },
    )
    entropy_valid_vocab: int | None = field(
        default=None,
        metadata={
            "help": "Rows of the lm_head that are real tokens (Qwen2.5 pads 151,665 to 151,936); "
            "later rows get p = 0 in the statistics. None: every row, as TRL's log-probs."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.entropy_filter_options, str):
            try:
                self.entropy_filter_options = json.loads(self.entropy_filter_options)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"entropy_filter_options must be a JSON object such as '{{\"mu\": 2.5}}', "
                    f"got {self.entropy_filter_options!r} ({exc})"
                ) from exc
        if not isinstance(self.entropy_filter_options, dict | None):
            raise ValueError(
                "entropy_filter_options must be a dict or a JSON object string, got "
                f"{type(self.entropy_filter_options).__name__}"
            )
        self.filter_config()  # an unknown filter or option fails here, not at the first step

    def filter_config(self) -> PolicyLossConfig:
        """The :class:`PolicyLossConfig` whose ``filter`` the plug-in runs (validated)."""
        return PolicyLossConfig(
            filter=self.entropy_filter, filter_options=dict(self.entropy_filter_options or {})
        )


def trl_aggregation(
    loss_type: str, batch_size: int, max_completion_length: int
) -> tuple[str, float | None]:
    """The ``(agg_mode, loss_agg_norm)`` of :class:`PolicyLossConfig` that TRL's ``loss_type``
    computes on one batch of ``batch_size`` sequences (no gradient accumulation, one process).

    - ``dapo`` (TRL's default), ``bnpo`` → ``token-mean`` (``dapo`` over the generation batch,
      gathered across processes; ``bnpo`` over each micro-batch);
    - ``grpo`` → ``seq-mean-token-mean``; equal as long as every sequence keeps a token (TRL
      still counts a sequence whose tokens were all dropped, with loss 0, in its mean);
    - ``dr_grpo`` → ``seq-mean-token-sum-norm`` with the constant ``B · max_completion_length``.
    """
    if loss_type in ("dapo", "bnpo"):
        return "token-mean", None
    if loss_type == "grpo":
        return "seq-mean-token-mean", None
    if loss_type == "dr_grpo":
        return "seq-mean-token-sum-norm", float(batch_size * max_completion_length)
    raise ValueError(
        f"loss_type {loss_type!r} has no aggregation mode of ours (it changes the per-token "
        "loss itself); mapped: dapo, bnpo, grpo, dr_grpo"
    )
