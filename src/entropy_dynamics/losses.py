"""Policy losses over per-token log-probabilities, and the methods built from them.

Two registered losses, many methods. Per response token ``t``, with the importance ratio
``r_t = exp(log p_t - log p_old_t)`` and token-level advantage ``A_t``:

- ``ppo`` — the PPO-clip surrogate of GRPO (Schulman et al. 2017, arXiv 1707.06347):
  ``pg_loss1 = -A·r``, ``pg_loss2 = -A·clamp(r, 1 - eps_low, 1 + eps_high)``,
  ``pg_loss = max(pg_loss1, pg_loss2)``; for ``A < 0`` optionally ``min(pg_loss, -A·c)`` (dual
  clip, Ye et al. 2020, arXiv 1912.09729). Clipped tokens get zero gradient, as the paper's
  analysis assumes (§3).
- ``kl_cov`` — KL-Cov (Cui et al., arXiv 2505.22617, as in verl): the unclipped surrogate
  ``-A·r`` plus ``coef·|log p - log p_old|`` on the few tokens with the largest centred covariance
  ``(A - mean A)(log p - mean log p)``.

Both then share one tail (:func:`_assemble`):

- a token filter by name (Clip_B, Clip_V, ...; :mod:`entropy_dynamics.filters`) zeroes the loss
  weight of dropped tokens, so under token-mean they also leave the denominator (paper §5);
- aggregation as verl's ``agg_loss`` (:func:`aggregate`; default token-mean, DAPO);
- an optional entropy bonus ``loss -= entropy_coef · agg(H)`` over all valid tokens;
- no KL-to-reference term, no ``.item()``: metrics are 0-d tensors under ``actor/`` plus the
  filter's own namespace.

A *method* (``grpo``, ``clip_b``, ``clip_v``, ``clip_higher``, ``entropy_bonus``, ``clip_cov``,
``kl_cov``, ``high_entropy``, ``sign_intervention``, and the closed-loop ``entropy_target``,
``adaptive_entropy``, ``entropic`` of :mod:`entropy_dynamics.entropy_control`) is one row of
:data:`METHODS`: overrides of :class:`PolicyLossConfig`, whose fields hold the single default of
each option. A new method is a table row (or :func:`register_method`), or one
``@register_policy_loss`` function. The per-token formulas live in
:mod:`entropy_dynamics.token_losses`.
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
from entropy_dynamics.aggregation import AGG_MODES, aggregate, aggregation_share, masked_mean
from entropy_dynamics.entropy_control import check_entropic_options  # + the entropy_target filter
from entropy_dynamics.filters import available_filters, get_filter, kl_cov_selection
from entropy_dynamics.stats import TokenStats
from entropy_dynamics.token_losses import (
    entropic_adjustment,
    kl_cov_token_loss,
    ppo_clip_token_loss,
)

__all__ = [
    "AGG_MODES",
    "METHODS",
    "PolicyLossConfig",
    "PolicyLossInputs",
    "PolicyLossOutput",
    "aggregate",
    "aggregation_share",
    "available_methods",
    "available_policy_losses",
    "compute_policy_loss",
    "get_policy_loss",
    "kl_cov_token_loss",
    "ppo_clip_token_loss",
    "register_method",
    "register_policy_loss",
    "resolve_method",
    "select_tokens",
]

_LOG_RATIO_BOUND = 20.0  # exp(±20) keeps the ratio finite in float32 (verl clamps the same way)


@dataclass(frozen=True)
class PolicyLossConfig:
    """Options of the policy loss; one default each, with its source."""

    loss: str = "ppo"
    """Registered policy-loss function: ``ppo`` (PPO-clip) or ``kl_cov`` (see
    :func:`available_policy_losses`)."""
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
    """Token filter by name (none, clip_b, clip_v, high_entropy, clip_cov, sign_intervention,
    ...; see ``filters.available_filters()``)."""
    filter_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the filter (e.g. ``{"mu": 2.5}`` for clip_b); unset options keep the
    filter's own documented defaults."""
    kl_cov_ratio: float = 2e-4
    """``kl_cov`` loss: fraction of valid tokens, those with the largest covariance, that get the
    penalty (arXiv 2505.22617; verl ``kl_cov_ratio`` 2e-4)."""
    kl_cov_coef: float = 1.0
    """``kl_cov`` loss: coefficient of ``|log p - log p_old|`` on the selected tokens (verl
    ``ppo_kl_coef`` 1.0)."""
    entropic_alpha: float = 0.0
    """``entropic`` loss: EntroPIC's weight ``α`` in [-1, 1] (arXiv 2511.15248), set each step by
    its PI controller (``training.controllers``); 0 is plain ``ppo``."""
    entropic_prob_threshold: float = 0.95
    """``entropic`` loss: tokens with ``p`` above it get EntroPIC's term (its released code's
    ``high_prob_thresh``)."""

    def __post_init__(self) -> None:
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
        filter_fn = get_filter(self.filter)
        params = inspect.signature(filter_fn).parameters
        accepted = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        for key in self.filter_options:
            if key not in accepted:
                raise ValueError(
                    f"filter_options: filter {self.filter!r} has no option {key!r}; "
                    f"its options: {', '.join(accepted) or 'none'}"
                )
        # Each filter checks its own option values (mu >= 0, max_frac in [0, 1], ...): run it on
        # an empty batch now, so a bad value fails here and not at the first loss of a run.
        empty = torch.zeros(0, 0)
        values = {k: v for k, v in self.filter_options.items() if not isinstance(v, Tensor)}
        filter_fn(TokenStats(empty, empty, empty, empty), empty, empty.bool(), **values)


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
            weights each by its own share (:func:`aggregation_share`).
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


# ---------------------------------------------------------------------------------------------
# Registered losses and their shared tail
# ---------------------------------------------------------------------------------------------


def select_tokens(
    config: PolicyLossConfig,
    stats: TokenStats,
    advantages: Tensor,
    response_mask: Tensor,
    ratio_clipped: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run ``config.filter`` with ``config.filter_options``: ``(keep_mask (B, T) bool, metrics)``.

    Filters that take an ``exclude_mask`` (Clip-Cov) receive ``ratio_clipped`` ``(B, T)``, the
    tokens whose PPO ratio is already clipped, as verl does (unless the options set one).
    """
    filter_fn = get_filter(config.filter)
    options = dict(config.filter_options)
    if ratio_clipped is not None and "exclude_mask" in inspect.signature(filter_fn).parameters:
        options.setdefault("exclude_mask", ratio_clipped)
    return filter_fn(stats, advantages, response_mask, **options)


def _log_ratio(inputs: PolicyLossInputs) -> Tensor:
    """``log p - log p_old`` ``(B, T)``, 0 on padding. ``torch.where`` rather than a product, so
    whatever padding holds (NaN, ``-inf - -inf``) reaches no loss, metric or gradient."""
    return torch.where(inputs.response_mask != 0, inputs.logprobs - inputs.old_logprobs, 0.0)


def _advantages(inputs: PolicyLossInputs, dtype: torch.dtype) -> Tensor:
    """``A`` ``(B, T)`` in ``dtype``, 0 on padding (as :func:`_log_ratio`)."""
    return torch.where(inputs.response_mask != 0, inputs.advantages, 0.0).to(dtype)


def _assemble(
    config: PolicyLossConfig,
    inputs: PolicyLossInputs,
    pg_losses: Tensor,
    clipped: Tensor,
    dual_clipped: Tensor,
    metrics: dict[str, Tensor],
) -> PolicyLossOutput:
    """Filter, aggregate, add the entropy bonus and the ``actor/`` metrics (shared tail)."""
    valid = inputs.response_mask != 0  # (B, T)
    clipped, dual_clipped = clipped & valid, dual_clipped & valid
    if inputs.keep_mask is None:
        keep, filter_metrics = select_tokens(
            config, inputs.stats, inputs.advantages, inputs.response_mask, clipped
        )
        metrics = {**metrics, **filter_metrics}
    else:
        keep = inputs.keep_mask.bool()
    keep = keep & valid  # dropped tokens: weight 0, out of the token-mean denominator

    pg_loss = aggregate(pg_losses, keep, config.agg_mode, config.loss_agg_norm)
    # The bonus covers every valid token (filters select policy-gradient tokens only), as verl.
    entropy = aggregate(inputs.stats.entropy, valid, config.agg_mode, config.loss_agg_norm)
    loss = pg_loss - config.entropy_coef * entropy if config.entropy_coef != 0 else pg_loss
    with torch.no_grad():  # diagnostics, as verl's actor metrics
        metrics.update(
            {
                "actor/pg_loss": pg_loss.detach(),
                "actor/pg_clipfrac": masked_mean(clipped.float(), valid),
                "actor/pg_clipfrac_lower": masked_mean(dual_clipped.float(), valid),
                "actor/ppo_kl": masked_mean(-_log_ratio(inputs).detach(), valid),
                "actor/entropy": entropy.detach(),
                "actor/frac_kept": masked_mean(keep.float(), valid),
            }
        )
    return PolicyLossOutput(loss, metrics, keep, pg_loss, entropy)


@register_policy_loss("ppo")
def ppo_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """GRPO's PPO-clip surrogate (symmetric, clip-higher or dual-clip) with a token filter.

    At ratio 1 with token-mean aggregation, the descent direction on one position's logits is
    ``A (e_k - p) / n_tokens``: the GRPO logit update Theorem 3.3 analyses, with step
    ``η = 1 / n_tokens`` per unit learning rate.
    """
    log_ratio = _log_ratio(inputs).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    ratio = torch.exp(log_ratio)  # (B, T)
    pg_losses, clipped, dual_clipped = ppo_clip_token_loss(
        ratio,
        _advantages(inputs, ratio.dtype),
        eps_low=config.eps_low,
        eps_high=config.eps_high,
        dual_clip_c=config.dual_clip_c,
    )
    return _assemble(config, inputs, pg_losses, clipped, dual_clipped, {})


@register_policy_loss("kl_cov")
def kl_cov_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """KL-Cov (Cui et al., arXiv 2505.22617, as verl's ``kl_cov`` loss mode).

    Vanilla policy gradient ``-A·r`` (no ratio clipping) on every token, plus
    ``kl_cov_coef·|log p - log p_old|`` on the ``kl_cov_ratio`` fraction of valid tokens with the
    largest ``(A - mean A)(log p - mean log p)`` (:func:`filters.kl_cov_selection`, computed on
    ``stats.logprobs`` of this batch): it restrains exactly the updates that drive
    ``Cov(log p, A)``, hence entropy, down.
    """
    log_ratio = _log_ratio(inputs)  # (B, T)
    ratio = torch.exp(log_ratio.clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))
    selected, metrics = kl_cov_selection(
        inputs.stats, inputs.advantages, inputs.response_mask, kl_cov_ratio=config.kl_cov_ratio
    )
    advantages = _advantages(inputs, ratio.dtype)
    pg_losses = kl_cov_token_loss(ratio, log_ratio, advantages, selected, coef=config.kl_cov_coef)
    never = torch.zeros_like(selected)
    return _assemble(config, inputs, pg_losses, never, never, metrics)


@register_policy_loss("entropic")
def entropic_policy_loss(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
    """EntroPIC (arXiv 2511.15248, its released ``entropic`` loss mode): ``ppo`` plus
    ``entropic_alpha · agg(-r·|A|)`` over the kept tokens with ``p > entropic_prob_threshold``
    (:func:`~entropy_dynamics.token_losses.entropic_adjustment`): positive high-probability tokens
    weigh more and negative ones less when ``α > 0``, which lowers the entropy (Theorem 3.2)."""
    out = ppo_policy_loss(config, inputs)
    ratio = torch.exp(_log_ratio(inputs).clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND))
    term, high = entropic_adjustment(
        ratio, _advantages(inputs, ratio.dtype), inputs.logprobs, out.keep_mask,
        alpha=config.entropic_alpha, prob_threshold=config.entropic_prob_threshold,
        agg_mode=config.agg_mode, norm=config.loss_agg_norm,
    )  # fmt: skip
    out.metrics["entropic/frac_high_prob"] = masked_mean(high.float(), inputs.response_mask != 0)
    out.loss, out.pg_loss = out.loss + term, out.pg_loss + term
    return out


# ---------------------------------------------------------------------------------------------
# Methods: presets of PolicyLossConfig
# ---------------------------------------------------------------------------------------------

METHODS: dict[str, dict[str, Any]] = {
    "grpo": {},  # PPO-clip, eps 0.2, token-mean, no filter (the paper's baseline)
    "clip_higher": {"eps_high": 0.28},  # DAPO, arXiv 2503.14476
    "clip_b": {"filter": "clip_b"},  # paper §5, released code: μ = 2.5
    "clip_v": {"filter": "clip_v"},  # paper §5, released run: μ = 8.5, max_frac = 1e-4
    "high_entropy": {"filter": "high_entropy"},  # arXiv 2506.01939: top 20 % entropy tokens
    "entropy_bonus": {"entropy_coef": 1e-3},  # verl's former default entropy_coeff (0.001)
    "clip_cov": {"filter": "clip_cov"},  # arXiv 2505.22617, verl defaults
    "kl_cov": {"loss": "kl_cov"},  # arXiv 2505.22617, verl defaults
    "sign_intervention": {"filter": "sign_intervention"},  # paper §4 sign validation
    # Closed loop (issue 18): each has a controller in training.controllers that sets, per step,
    "entropy_target": {"filter": "entropy_target"},  # the target (forecast-driven drops)
    "adaptive_entropy": {},  # entropy_coef (Skywork-OR1 / TRL use_adaptive_entropy)
    "entropic": {"loss": "entropic"},  # entropic_alpha (EntroPIC's PI rule)
}
"""Method name → overrides of :class:`PolicyLossConfig` (everything else keeps its default)."""


def available_methods() -> list[str]:
    return sorted(METHODS)


def _check_option_names(options: dict[str, Any]) -> None:
    known = {f.name for f in fields(PolicyLossConfig)}
    for key in options:
        if key not in known:
            raise ValueError(f"unknown loss option {key!r}; options: {', '.join(sorted(known))}")


def register_method(name: str, **overrides: Any) -> None:
    """Add a method preset: ``name`` → ``overrides`` of :class:`PolicyLossConfig` (validated)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    _check_option_names(overrides)
    PolicyLossConfig(**overrides)  # fail now, not at training time
    METHODS[name] = dict(overrides)


def resolve_method(method: str, **overrides: Any) -> PolicyLossConfig:
    """The :class:`PolicyLossConfig` of ``method`` with the user's ``overrides`` on top (a user's
    ``eps_high`` wins over clip_higher's 0.28)."""
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; available: {', '.join(available_methods())}")
    _check_option_names(overrides)
    return PolicyLossConfig(**{**METHODS[method], **overrides})


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
