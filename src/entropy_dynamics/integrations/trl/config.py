"""The TRL plug-in's options: ``GRPOConfig`` plus the token filter, the controller of
``entropy_target`` and the dynamics monitor; and TRL's ``loss_type`` as one of our aggregation
modes.

Every TRL option keeps its meaning and default; the filter, its options and the controller's
options are checked when the config is built (an unknown filter or option fails there, not at the
first step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from trl import GRPOConfig

from entropy_dynamics.control import EntropyTargetOptions
from entropy_dynamics.filters import available_filters
from entropy_dynamics.integrations.control_loop import check_engine_control
from entropy_dynamics.losses import PolicyLossConfig

__all__ = ["EntropyGRPOConfig", "trl_aggregation"]


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the token filter, ``entropy_target``'s controller and the dynamics
    monitor; every TRL option keeps its meaning and default."""

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

    entropy_control: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Options of entropy_target's controller (our trainer's algorithm.control), a "
            "dict or a JSON string: "
            + ", ".join(f.name for f in fields(EntropyTargetOptions))
            + '. E.g. \'{"target": 0.3, "ki": 0.1}\'; unset: hold the first batch\'s entropy. '
            "Its step is one generation batch; the schedule spans the run's generation batches."
        },
    )
    entropy_dynamics_monitor_every: int = field(
        default=0,
        metadata={
            "help": "Every N-th generation batch, after its last optimizer step, one no-grad "
            "forward of the batch measures the actual entropy change (dynamics/*: ΔH, by "
            "quadrant, correlation with Theorem 3.3's -A(S_k - E_p[S])); entropy_target refits "
            "its step scale from it. 0: off."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("entropy_filter_options", "entropy_control"):
            setattr(self, name, _json_object(name, getattr(self, name)))
        if self.entropy_dynamics_monitor_every < 0:
            raise ValueError(
                "entropy_dynamics_monitor_every must be >= 0 (0: no monitor), got "
                f"{self.entropy_dynamics_monitor_every}"
            )
        config = self.filter_config()  # an unknown filter or option fails here
        method = self.control_method()
        if method is None and self.entropy_control:
            raise ValueError(
                f"entropy_control sets a controller, which entropy_filter={self.entropy_filter!r} "
                "has not; use entropy_filter='entropy_target' (or drop entropy_control)"
            )
        if method is not None:  # a controller option fails here, not at the first step
            check_engine_control(
                method, self.entropy_control or {}, config, self.generation_batches(),
                "entropy_control",
            )  # fmt: skip

    def generation_batches(self) -> int | None:
        """Generation batches in the run (the controller's steps), or ``None`` when
        ``max_steps`` is unset (TRL knows the length only once training starts)."""
        if self.max_steps <= 0:
            return None
        per_batch = (self.steps_per_generation or self.gradient_accumulation_steps) * (
            self.num_iterations
        )
        return -(-self.max_steps * self.gradient_accumulation_steps // per_batch)

    def control_method(self) -> str | None:
        """The closed-loop method the plug-in runs (``entropy_target``), or ``None``."""
        return "entropy_target" if self.entropy_filter == "entropy_target" else None

    def filter_config(self) -> PolicyLossConfig:
        """The :class:`PolicyLossConfig` whose ``filter`` the plug-in runs (validated)."""
        return PolicyLossConfig(
            filter=self.entropy_filter, filter_options=dict(self.entropy_filter_options or {})
        )


def _json_object(name: str, value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{name} must be a JSON object such as '{{\"mu\": 2.5}}', got {value!r} ({exc})"
            ) from exc
    if not isinstance(value, dict | None):
        raise ValueError(
            f"{name} must be a dict or a JSON object string, got {type(value).__name__}"
        )
    return value


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
