"""The policy losses' contract: their options, inputs and output, the registry, and the one entry
that runs a registered loss.

Per response token ``t``, with the importance ratio ``r_t = exp(log p_t - log p_old_t)`` and the
token-level advantage ``A_t``, a policy loss is ``fn(config, inputs) -> PolicyLossOutput``:
:class:`PolicyLossConfig` holds the single default of every option (with its source),
:class:`PolicyLossInputs` the ``(B, T)`` tensors, :class:`PolicyLossOutput` the loss, its 0-d
metrics and the keep-mask. Losses are registered by name with :func:`register_policy_loss` and
run through :func:`compute_policy_loss`, which checks the inputs first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics._registry import Registry
from entropy_dynamics.aggregation import AGG_MODES
from entropy_dynamics.filters import available_filters, filter_options, get_filter
from entropy_dynamics.filters.base import check_finite
from entropy_dynamics.finite import check_finite_fields
from entropy_dynamics.stats import TokenStats

__all__ = [
    "PolicyLossConfig",
    "PolicyLossFn",
    "PolicyLossInputs",
    "PolicyLossOutput",
    "available_policy_losses",
    "check_entropic_options",
    "compute_policy_loss",
    "get_policy_loss",
    "register_policy_loss",
]


@dataclass(frozen=True)
class PolicyLossConfig:
    """Options of the policy loss; one default each, with its source."""

    loss: str = "ppo"
    """Registered policy-loss function by name (:func:`available_policy_losses`: ``ppo``,
    PPO-clip; ``kl_cov``; ``entropic``)."""
    eps_low: float = 0.2
    """Lower clip range of ``ppo``: ratio floor ``1 - eps_low`` (PPO, arXiv 1707.06347; verl
    ``clip_ratio_low`` 0.2)."""
    eps_high: float = 0.2
    """Upper clip range of ``ppo``: ratio ceiling ``1 + eps_high``; clip-higher (DAPO, arXiv
    2503.14476) uses 0.28."""
    dual_clip_c: float | None = None
    """Dual-clip bound ``c > 1`` of ``ppo`` for ``A < 0`` (arXiv 1912.09729; verl
    ``clip_ratio_c`` 3.0); ``None`` disables it (the paper's runs use plain PPO-clip)."""
    agg_mode: str = "token-mean"
    """Loss aggregation, as verl's ``agg_loss``: token-mean (DAPO, verl default, the paper's
    runs), seq-mean-token-mean (GRPO paper), seq-mean-token-sum, seq-mean-token-sum-norm
    (Dr. GRPO, arXiv 2503.20783)."""
    loss_agg_norm: float | None = None
    """Constant divisor of seq-mean-token-sum-norm (verl's ``loss_scale_factor``). ``None``: the
    padded response width ``T`` of the batch, verl's default; Dr. GRPO divides by the generation
    budget (max new tokens), which is constant across batches — set it to that."""
    entropy_coef: float = 0.0
    """Entropy bonus ``loss -= entropy_coef · agg(H)`` over valid tokens (verl
    ``entropy_coeff``, default 0); needs a differentiable ``stats.entropy``. Negative values
    penalise entropy."""
    filter: str = "none"
    """Token filter by name: ``none`` or a registered filter (``filters.available_filters()``;
    ``entropy-dynamics methods`` shows each method's, with its options)."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the filter (e.g. ``{"mu": 2.5}`` for clip_b); unset options keep the
    filter's own documented defaults (``filters.filter_options(filter)``)."""
    kl_cov_ratio: float = 2e-4
    """``kl_cov`` loss: fraction of valid tokens, those with the largest covariance, that get the
    penalty (arXiv 2505.22617; verl ``kl_cov_ratio`` 2e-4)."""
    kl_cov_coef: float = 1.0
    """``kl_cov`` loss: coefficient of ``|log p - log p_old|`` on the selected tokens (verl
    ``ppo_kl_coef`` 1.0)."""
    entropic_alpha: float = 0.0
    """``entropic`` loss: EntroPIC's weight ``α`` in [-1, 1] (arXiv 2511.15248), set each step by
    its PI controller (``control.Entropic``); 0 is plain ``ppo``."""
    entropic_prob_threshold: float = 0.95
    """``entropic`` loss: tokens with ``p`` above it get EntroPIC's term (its released code's
    ``high_prob_thresh``)."""

    def __post_init__(self) -> None:
        check_finite_fields(self)

        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        require(
            self.loss in _POLICY_LOSSES,
            f"loss: unknown {self.loss!r}; registered: {', '.join(available_policy_losses())}",
        )
        for name in ("eps_low", "eps_high"):
            value = getattr(self, name)
            require(value >= 0, f"{name} must be >= 0 (e.g. 0.2), got {value}")
        require(
            self.dual_clip_c is None or self.dual_clip_c > 1,
            f"dual_clip_c must be > 1 (e.g. 3.0) or null to disable, got {self.dual_clip_c}",
        )
        require(
            self.agg_mode in AGG_MODES,
            f"agg_mode: unknown {self.agg_mode!r}; use one of {', '.join(AGG_MODES)}",
        )
        if self.loss_agg_norm is not None:
            require(self.loss_agg_norm > 0, f"loss_agg_norm must be > 0, got {self.loss_agg_norm}")
            require(
                self.agg_mode == "seq-mean-token-sum-norm",
                f"loss_agg_norm only applies to agg_mode 'seq-mean-token-sum-norm' (agg_mode is "
                f"{self.agg_mode!r}); remove it or change agg_mode",
            )
        require(
            math.isfinite(self.entropy_coef),
            f"entropy_coef must be finite, got {self.entropy_coef}",
        )
        require(
            self.filter in available_filters(),
            f"filter: unknown {self.filter!r}; "
            f"registered filters: {', '.join(available_filters())}",
        )
        require(
            0 < self.kl_cov_ratio <= 1,
            f"kl_cov_ratio must be in (0, 1] (e.g. 2e-4), got {self.kl_cov_ratio}",
        )
        require(self.kl_cov_coef >= 0, f"kl_cov_coef must be >= 0, got {self.kl_cov_coef}")
        check_entropic_options(self.entropic_alpha, self.entropic_prob_threshold)
        self._check_filter_options()

    def _check_filter_options(self) -> None:
        filter_options(self.filter, self.filter_options)  # unknown names, listing the known
        # Each filter checks its own option values (mu >= 0, max_frac in [0, 1], ...): run it on
        # an empty batch now, so a bad value fails here and not at the first loss of a run.
        empty = torch.zeros(0, 0)
        values = {k: v for k, v in self.filter_options.items() if not isinstance(v, Tensor)}
        stats = TokenStats(empty, empty, empty, empty)
        get_filter(self.filter)(stats, empty, empty.bool(), **values)


@dataclass
class PolicyLossInputs:
    """Per-token inputs of a policy loss; every tensor has shape ``(B, T)`` (B responses,
    T padded response positions).

    Attributes:
        logprobs: ``log p_t`` of the sampled tokens under the current policy (differentiable).
        old_logprobs: ``log p_old_t`` under the rollout policy (constant).
        advantages: token-level advantages ``A_t`` (sequence advantage broadcast; 0 on padding).
        response_mask: bool or 0/1, true on valid response tokens.
        stats: :class:`TokenStats` of the same positions. Filters read its detached fields
            (``discriminator``, ``expected_discriminator``, ``entropy``, ``logprobs``);
            ``stats.entropy`` must be differentiable when ``entropy_coef != 0``.
        keep_mask: optional precomputed filter mask (e.g. over the whole rollout batch, as the
            reference code does before mini-batching); ``None`` runs ``config.filter`` here.
    """

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    response_mask: Tensor
    stats: TokenStats
    keep_mask: Tensor | None = None


@dataclass
class PolicyLossOutput:
    """Result of a policy loss.

    Attributes:
        loss: 0-d tensor to minimise.
        metrics: 0-d tensors, slash-namespaced (``actor/...`` and the filter's own keys).
        keep_mask: ``(B, T)`` bool, the tokens that carried policy-gradient weight.
        pg_loss, entropy: the two differentiable terms, ``loss = pg_loss - entropy_coef·entropy``
            (aggregated over ``keep_mask`` and over the valid tokens): gradient accumulation
            weights each by its own share
            (:func:`~entropy_dynamics.aggregation.aggregation_share`).
    """

    loss: Tensor
    metrics: dict[str, Tensor]
    keep_mask: Tensor
    pg_loss: Tensor | None = None
    entropy: Tensor | None = None


PolicyLossFn = Callable[[PolicyLossConfig, PolicyLossInputs], PolicyLossOutput]
_POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
register_policy_loss = _POLICY_LOSSES.register
"""Decorator registering ``fn(config, inputs) -> PolicyLossOutput`` under a name."""
get_policy_loss = _POLICY_LOSSES.get
"""The policy loss registered under a name; the error lists the registered names."""
available_policy_losses = _POLICY_LOSSES.names


def check_entropic_options(alpha: float, prob_threshold: float) -> None:
    """Refuse an EntroPIC weight outside ``[-1, 1]`` or a threshold outside ``(0, 1)``."""
    check_finite("entropic_alpha", alpha)
    if not -1 <= alpha <= 1:
        raise ValueError(f"entropic_alpha must lie in [-1, 1] (EntroPIC clips it), got {alpha}")
    if not 0 < prob_threshold < 1:
        raise ValueError(f"entropic_prob_threshold must lie in (0, 1), got {prob_threshold}")


def compute_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """Run the configured policy loss after checking that the inputs share one ``(B, T)`` shape
    and that an entropy bonus has a differentiable entropy."""
    shape = inputs.response_mask.shape
    if inputs.response_mask.dim() != 2:
        raise ValueError(f"response_mask must be (B, T), got shape {tuple(shape)}")
    tensors = {
        "logprobs": inputs.logprobs,
        "old_logprobs": inputs.old_logprobs,
        "advantages": inputs.advantages,
        "stats.entropy": inputs.stats.entropy,
        "keep_mask": inputs.keep_mask,
    }
    for name, value in tensors.items():
        if value is not None and value.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but response_mask has {tuple(shape)}; "
                "all policy-loss inputs are token-level (B, T)"
            )
    if (
        config.entropy_coef != 0
        and inputs.logprobs.requires_grad
        and not inputs.stats.entropy.requires_grad
    ):
        raise ValueError(
            "entropy_coef != 0 but stats.entropy is not differentiable, so the bonus would have "
            "no gradient: compute stats with token_stats(..., entropy_grad=True)"
        )
    return get_policy_loss(config.loss)(config, inputs)
