"""Policy losses over per-token log-probabilities, and the methods built from them.

One loss, many methods. The registered policy loss ``ppo`` is the PPO-clip surrogate (Schulman
et al. 2017) of GRPO, per response token ``t`` with ratio ``r_t = exp(log p_t - log p_old_t)``:

    pg_loss1 = -A_t · r_t
    pg_loss2 = -A_t · clamp(r_t, 1 - eps_low, 1 + eps_high)       # clip-higher: eps_high > eps_low
    pg_loss  = max(pg_loss1, pg_loss2)                              # min of the surrogates
    pg_loss  = min(pg_loss, -A_t · c)  for A_t < 0                  # dual clip (optional)

then multiplied by a token filter's keep mask (Clip_B, Clip_V, ...: a dropped token's weight is 0,
so it also leaves the token-mean denominator, paper §5), aggregated, minus an optional entropy
bonus, plus an optional KL-Cov penalty. Each *method* (``grpo``, ``clip_b``, ``clip_v``,
``clip_higher``, ``entropy_bonus``, ``clip_cov``, ``kl_cov``, ``high_entropy``) is one row of
:data:`METHODS`: overrides of :class:`PolicyLossConfig`, whose fields hold the single default of
each option. A new method is a table row, or one ``@register_policy_loss`` function.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics._registry import Registry
from entropy_dynamics.filters import available_filters, get_filter, kl_cov_selection
from entropy_dynamics.stats import TokenStats

__all__ = [
    "AGG_MODES",
    "METHODS",
    "PolicyLossConfig",
    "PolicyLossInputs",
    "PolicyLossOutput",
    "aggregate",
    "available_methods",
    "available_policy_losses",
    "compute_policy_loss",
    "get_policy_loss",
    "register_policy_loss",
    "resolve_method",
    "select_tokens",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class PolicyLossConfig:
    """Options of the policy loss; one default each, with its source."""

    loss: str = "ppo"
    """Registered policy-loss function (see :func:`available_policy_losses`)."""
    eps_low: float = 0.2
    """Lower clip range: ratio floor ``1 - eps_low`` (PPO, Schulman et al. 2017; verl 0.2)."""
    eps_high: float = 0.2
    """Upper clip range: ratio ceiling ``1 + eps_high``; clip-higher (DAPO, arXiv 2503.14476)
    uses 0.28."""
    dual_clip_c: float | None = None
    """Dual-clip bound ``c > 1`` for negative advantages (Ye et al. 2020; verl uses 3.0);
    ``None`` disables it."""
    agg_mode: str = "token-mean"
    """Loss aggregation, as verl's ``agg_loss``: token-mean (DAPO), seq-mean-token-mean (GRPO
    paper), seq-mean-token-sum, seq-mean-token-sum-norm (Dr. GRPO)."""
    agg_norm: float | None = None
    """Divisor of seq-mean-token-sum-norm; ``None``: the response length ``T`` (verl)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient: ``loss -= coef · agg(H)`` (verl's ``entropy_coeff``)."""
    filter: str = "none"
    """Token filter by name (none, clip_b, clip_v, high_entropy, clip_cov, sign_intervention...)."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the filter (e.g. ``{"mu": 2.5}`` for clip_b)."""
    kl_cov_ratio: float = 0.0
    """KL-Cov: fraction of tokens with the largest Cov(A, log p) that get the KL penalty
    (arXiv 2505.22617; verl 2e-4); 0 disables it."""
    kl_cov_coef: float = 1.0
    """KL-Cov penalty coefficient on ``|log p - log p_old|`` (verl's ``ppo_kl_coef``: 1.0)."""

    def __post_init__(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        require(
            self.loss in _POLICY_LOSSES,
            f"loss: unknown {self.loss!r}; registered: {', '.join(available_policy_losses())}",
        )
        require(self.eps_low >= 0 and self.eps_high >= 0, "eps_low and eps_high must be >= 0")
        require(
            self.dual_clip_c is None or self.dual_clip_c > 1,
            f"dual_clip_c must be > 1 (or null to disable), got {self.dual_clip_c}",
        )
        require(
            self.agg_mode in AGG_MODES,
            f"agg_mode: unknown {self.agg_mode!r}; use one of {', '.join(AGG_MODES)}",
        )
        require(self.agg_norm is None or self.agg_norm > 0, "agg_norm must be > 0 or null")
        require(math.isfinite(self.entropy_coef), "entropy_coef must be finite")
        require(
            self.filter in available_filters(),
            f"filter: unknown {self.filter!r}; "
            f"registered filters: {', '.join(available_filters())}",
        )
        require(0 <= self.kl_cov_ratio <= 1, "kl_cov_ratio must be in [0, 1]")
        require(self.kl_cov_coef >= 0, "kl_cov_coef must be >= 0")
        self._check_filter_options()

    def _check_filter_options(self) -> None:
        params = inspect.signature(get_filter(self.filter)).parameters
        accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        for key in self.filter_options:
            if key not in accepted:
                raise ValueError(
                    f"filter_options: {self.filter!r} has no option {key!r}; "
                    f"its options: {', '.join(accepted) or 'none'}"
                )


@dataclass
class PolicyLossInputs:
    """Per-token inputs of a policy loss; every tensor has shape ``(B, T)``.

    Attributes:
        logprobs: ``log p_t`` of the sampled tokens under the current policy (differentiable).
        old_logprobs: ``log p_old_t`` under the rollout policy (constant).
        advantages: token-level advantages ``A_t`` (0 on padding).
        response_mask: 1 / True on valid response tokens.
        stats: statistics the filters read (``discriminator``, ``expected_discriminator``,
            ``entropy``, ``logprobs``); ``stats.entropy`` must be differentiable for an entropy
            bonus.
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
    """``loss`` (0-d), ``metrics`` (0-d tensors, slash-namespaced) and the filter's ``keep_mask``
    ``(B, T)`` bool (the tokens that carried gradient)."""

    loss: Tensor
    metrics: dict[str, Tensor]
    keep_mask: Tensor


PolicyLossFn = Callable[[PolicyLossConfig, PolicyLossInputs], PolicyLossOutput]
_POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")
register_policy_loss = _POLICY_LOSSES.register
"""Decorator registering ``fn(config, inputs) -> PolicyLossOutput`` under a name."""
get_policy_loss = _POLICY_LOSSES.get
"""The policy loss registered under a name; the error lists the registered names."""
available_policy_losses = _POLICY_LOSSES.names


def aggregate(loss_mat: Tensor, mask: Tensor, agg_mode: str, norm: float | None = None) -> Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar over ``mask`` (verl's ``agg_loss``).

    - ``token-mean``: ``Σ_{b,t} m·l / Σ_{b,t} m`` (each token counts once);
    - ``seq-mean-token-mean``: mean over sequences of each sequence's token mean;
    - ``seq-mean-token-sum``: mean over sequences of each sequence's token sum;
    - ``seq-mean-token-sum-norm``: ``Σ_{b,t} m·l / norm``, ``norm`` defaulting to ``T``.

    Sequence means run over sequences with at least one masked-in token; an empty mask gives 0.
    """
    m = mask.to(loss_mat.dtype)
    token_sum = (loss_mat * m).sum(-1)  # (B,)
    token_count = m.sum(-1)  # (B,)
    has_tokens = (token_count > 0).to(loss_mat.dtype)
    num_seqs = has_tokens.sum().clamp(min=1)
    if agg_mode == "token-mean":
        return token_sum.sum() / token_count.sum().clamp(min=1)
    if agg_mode == "seq-mean-token-mean":
        return (token_sum / token_count.clamp(min=1)).sum() / num_seqs
    if agg_mode == "seq-mean-token-sum":
        return token_sum.sum() / num_seqs
    if agg_mode == "seq-mean-token-sum-norm":
        return token_sum.sum() / (norm if norm is not None else loss_mat.shape[-1])
    raise ValueError(f"agg_mode: unknown {agg_mode!r}; use one of {', '.join(AGG_MODES)}")


def select_tokens(
    config: PolicyLossConfig,
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    ratio_clipped: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``config.filter`` with its options: ``(keep_mask (B, T) bool, metrics)``.

    Filters that take an ``exclude_mask`` (Clip-Cov) receive ``ratio_clipped``, the tokens whose
    PPO ratio is already clipped, as verl does.
    """
    filter_fn = get_filter(config.filter)
    options = dict(config.filter_options)
    if ratio_clipped is not None and "exclude_mask" in inspect.signature(filter_fn).parameters:
        options.setdefault("exclude_mask", ratio_clipped)
    return filter_fn(stats, advantages, response_mask, **options)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


@register_policy_loss("ppo")
def ppo_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """PPO-clip surrogate with optional dual clip, token filter, entropy bonus and KL-Cov.

    At ratio 1 with token-mean aggregation, the descent direction on one position's logits is
    ``A (e_k - p) / n_tokens`` — the logit update Theorem 3.3 analyses.
    """
    valid = inputs.response_mask.bool()
    adv = inputs.advantages.to(inputs.logprobs.dtype)
    log_ratio = (inputs.logprobs - inputs.old_logprobs).clamp(-20.0, 20.0)  # overflow guard
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1.0 - config.eps_low, 1.0 + config.eps_high)
    pg_loss = torch.maximum(pg_loss1, pg_loss2)
    clipped = valid & (pg_loss2 > pg_loss1)
    dual_clipped = torch.zeros_like(valid)
    if config.dual_clip_c is not None:
        pg_loss3 = -adv * config.dual_clip_c
        dual_clipped = valid & (adv < 0) & (pg_loss > pg_loss3)
        pg_loss = torch.where(adv < 0, torch.minimum(pg_loss, pg_loss3), pg_loss)

    if inputs.keep_mask is None:
        keep, metrics = select_tokens(
            config, inputs.stats, inputs.advantages, inputs.response_mask, clipped
        )
    else:
        keep, metrics = inputs.keep_mask.bool(), {}
    keep = keep & valid

    if config.kl_cov_ratio > 0:
        selected, kl_metrics = kl_cov_selection(
            inputs.stats, inputs.advantages, inputs.response_mask, kl_cov_ratio=config.kl_cov_ratio
        )
        metrics.update(kl_metrics)
        penalty = config.kl_cov_coef * (inputs.logprobs - inputs.old_logprobs).abs()
        pg_loss = torch.where(selected, pg_loss + penalty, pg_loss)

    loss = aggregate(pg_loss, keep, config.agg_mode, config.agg_norm)
    entropy = aggregate(inputs.stats.entropy, valid, config.agg_mode, config.agg_norm)
    if config.entropy_coef != 0:
        loss = loss - config.entropy_coef * entropy
    metrics.update(
        {
            "actor/pg_loss": loss.detach(),
            "actor/pg_clipfrac": _masked_mean(clipped.float(), valid),
            "actor/pg_clipfrac_lower": _masked_mean(dual_clipped.float(), valid),
            "actor/ppo_kl": _masked_mean((inputs.old_logprobs - inputs.logprobs).detach(), valid),
            "actor/entropy": entropy.detach(),
            "actor/frac_kept": _masked_mean(keep.float(), valid),
        }
    )
    return PolicyLossOutput(loss, metrics, keep)


METHODS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "clip_higher": {"eps_high": 0.28},  # DAPO
    "clip_b": {"filter": "clip_b"},  # paper §5, μ = 2.5
    "clip_v": {"filter": "clip_v"},  # paper §5, μ = 8.5, max_frac = 1e-4
    "high_entropy": {"filter": "high_entropy"},  # arXiv 2506.01939, top 20 % entropy tokens
    "entropy_bonus": {"entropy_coef": 1e-3},  # verl's former default entropy_coeff
    "clip_cov": {"filter": "clip_cov"},  # arXiv 2505.22617, verl defaults
    # KL-Cov as in verl: vanilla policy gradient (no ratio clipping) + |Δ log p| penalty on the
    # top-covariance tokens.
    "kl_cov": {"kl_cov_ratio": 2e-4, "eps_low": math.inf, "eps_high": math.inf},
    "sign_intervention": {"filter": "sign_intervention"},  # paper §4 validation
}
"""Method name → overrides of :class:`PolicyLossConfig` (everything else keeps its default)."""


def available_methods() -> list[str]:
    return sorted(METHODS)


def resolve_method(method: str, **overrides: Any) -> PolicyLossConfig:
    """The :class:`PolicyLossConfig` of ``method`` with the user's ``overrides`` applied."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; available: {', '.join(available_methods())}")
    known = {f.name for f in fields(PolicyLossConfig)}
    for key in overrides:
        if key not in known:
            raise ValueError(f"unknown loss option {key!r}; options: {', '.join(sorted(known))}")
    return PolicyLossConfig(**{**METHODS[method], **overrides})


def compute_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """Run the configured policy loss; validates that all inputs share one ``(B, T)`` shape."""
    shape = inputs.response_mask.shape
    for name in ("logprobs", "old_logprobs", "advantages"):
        value = getattr(inputs, name)
        if value.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but response_mask has {tuple(shape)}"
            )
    return get_policy_loss(config.loss)(config, inputs)
