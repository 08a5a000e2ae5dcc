"""The one-step check: one small SGD step of the GRPO loss, predicted vs actual entropy change.

:func:`one_step_check` takes one plain SGD step (no momentum) of the token-mean ``-A log p_k``
loss (the PPO surrogate at ratio 1) on a *copy* of the model and measures the entropy change at
the same positions, per sequence and overall, against the first-order prediction from the
measured logit change and Theorem 3.3's prediction with a fitted effective logit step. The
step's gradient is the trainer's (:func:`~entropy_dynamics.training.update.accumulate_gradients`:
the default loss config on the statistics of the policy before the step, micro-batches weighted
by their share of the batch's tokens). Used by :func:`entropy_dynamics.study.analysis.analyze`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics import theory
from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.dynamics import (
    entropy_change_terms,
    forecast_change,
    optimizer_update,
    quadrant_masks,
    row_chunks,
)
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.stats import TokenStats, default_chunk_size
from entropy_dynamics.study.summaries import pearson
from entropy_dynamics.training.forecast import EntropyForecast, Target
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import Rollout
from entropy_dynamics.training.update import UpdateBatch, accumulate_gradients

__all__ = ["DEFAULT_LR", "OneStepResult", "one_step_check", "sequence_values"]

DEFAULT_LR = 1e-4
"""SGD step of :func:`one_step_check`. On the embedded model (8 Countdown prompts × 4 samples,
seeds 0-5, GRPO and constant ±1 advantages) the per-sequence first-order r was ≥ 0.9998 at 1e-4
(relative error ≤ 3 %), ≥ 0.985 at 1e-3 and as low as 0.002 at 1e-2: the step must stay in the
first-order regime, which depends on the model — ``first_order_rel_error`` says whether it did."""


def sequence_values(value: float | Tensor, n: int, name: str) -> Tensor:
    """``(n,)`` float per-sequence values from a scalar or an ``(n,)`` tensor."""
    if isinstance(value, Tensor):
        if value.shape != (n,):
            raise ValueError(
                f"{name} must be a number or a ({n},) tensor, got {tuple(value.shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {value.tolist()}")
        return value.detach().float().cpu()
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return torch.full((n,), float(value))


@dataclass
class OneStepResult:
    """Actual versus predicted entropy change of one SGD step of the GRPO loss.

    Per-sequence values are means over the sequence's valid tokens, overall values means over
    all valid tokens of the batch. ``M`` is the number of valid tokens, in row-major order.

    Attributes:
        lr: SGD step size.
        temperature: ``T``.
        effective_logit_lr: fitted ``α̂`` of Theorem 3.3's prediction (see module docstring).
        advantages: ``(N,)`` sequence advantages of the step.
        num_tokens: ``(N,)`` valid tokens per sequence.
        actual: ``(N,)`` mean of ``H_after - H_before``.
        first_order: ``(N,)`` mean of ``⟨∂H/∂z, Δz⟩`` with the measured ``Δz``.
        thm33: ``(N,)`` mean of ``-α̂ A (S_k - E_p[S]) / T²``.
        token_actual, token_first_order, token_thm33: ``(M,)`` the same per token.
        forecast: ``(N,)`` parameter-space forecast of each sequence's ``actual``, taken before
            the step (``⟨∇θ H̄_seq, Δθ⟩``), or ``None`` when not asked for.
        forecast_overall: the forecast of the batch's token-mean ΔH (``None`` likewise).
        forecast_groups: its split by token group (advantage sign × sign of ``S_k - E_p[S]``),
            through the parameters every position shares.
    """

    lr: float
    temperature: float
    effective_logit_lr: float
    advantages: Tensor
    num_tokens: Tensor
    actual: Tensor
    first_order: Tensor
    thm33: Tensor
    token_actual: Tensor
    token_first_order: Tensor
    token_thm33: Tensor
    forecast: Tensor | None = None
    forecast_overall: float | None = None
    forecast_groups: dict[str, float] | None = None

    @property
    def overall(self) -> dict[str, float]:
        """Token means over the batch: ``actual``, ``first_order``, ``thm33``."""
        return {
            "actual": float(self.token_actual.mean()),
            "first_order": float(self.token_first_order.mean()),
            "thm33": float(self.token_thm33.mean()),
        }

    @property
    def r_first_order(self) -> float:
        """Pearson r across sequences, first-order prediction vs actual (nan if undefined)."""
        return pearson(self.first_order.tolist(), self.actual.tolist())

    @property
    def r_thm33(self) -> float:
        """Pearson r across sequences, Theorem 3.3's prediction vs actual (nan if undefined)."""
        return pearson(self.thm33.tolist(), self.actual.tolist())

    @property
    def r_forecast(self) -> float:
        """Pearson r across sequences, parameter-space forecast vs actual (nan if none)."""
        if self.forecast is None:
            return math.nan
        return pearson(self.forecast.tolist(), self.actual.tolist())

    @property
    def first_order_rel_error(self) -> float:
        """``‖first_order - actual‖₂ / ‖actual‖₂`` over sequences (nan if actual is all 0)."""
        norm = float(self.actual.norm())
        return float((self.first_order - self.actual).norm()) / norm if norm > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``nan`` becomes ``None``)."""

        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        per_sequence = {
            "advantage": self.advantages.tolist(),
            "num_tokens": self.num_tokens.tolist(),
            "delta_h_actual": self.actual.tolist(),
            "delta_h_first_order": self.first_order.tolist(),
            "delta_h_thm33": self.thm33.tolist(),
        }
        forecast = None
        if self.forecast is not None:
            per_sequence["delta_h_forecast"] = self.forecast.tolist()
            forecast = {
                "delta_h_forecast": self.forecast_overall,
                "delta_h_actual": clean(self.overall["actual"]),
                "pearson_r_per_sequence": clean(self.r_forecast),
                "groups": self.forecast_groups,
            }

        return {
            "lr": self.lr,
            "temperature": self.temperature,
            "effective_logit_lr": clean(self.effective_logit_lr),
            "overall": {f"delta_h_{k}": clean(v) for k, v in self.overall.items()},
            "pearson_r": {
                "first_order_vs_actual": clean(self.r_first_order),
                "thm33_vs_actual": clean(self.r_thm33),
            },
            "first_order_rel_error": clean(self.first_order_rel_error),
            "forecast": forecast,
            "per_sequence": [
                {"sample": i, **{key: column[i] for key, column in per_sequence.items()}}
                for i in range(len(self.actual))
            ],
        }


def _valid_features(
    response_stats: ResponseStats, rollout: Rollout, chunks: list[slice], with_stats: bool = False
) -> tuple[Tensor, TokenStats | None]:
    """``(M, d)`` hidden states (or ``(M, V)`` logits) at the valid positions, row-major; with
    ``with_stats`` also the ``(N, R)`` statistics of the current policy (else ``None``)."""
    parts, stats = [], []
    for chunk in chunks:
        features = response_stats.features(rollout, chunk)  # (n_c, R, ·)
        parts.append(features[rollout.response_mask[chunk]])  # (M_c, ·)
        if with_stats:
            stats.append(response_stats.stats(features, rollout.response_ids[chunk]))
    if not with_stats:
        return torch.cat(parts), None
    columns = (torch.cat([getattr(s, f.name) for s in stats]) for f in fields(TokenStats))
    return torch.cat(parts), TokenStats(*columns)  # (N, R) each


_LOSS = PolicyLossConfig()
"""The GRPO loss of the check: ppo, no filter, token-mean; at ratio 1 its gradient is that of
the token-mean of ``-A log p_k``."""


def _sgd_step(
    response_stats: ResponseStats,
    batch: UpdateBatch,
    lr: float,
    rows_per_chunk: int | None,
    forecast: bool = False,
) -> dict[str, Any]:
    """One SGD step of :data:`_LOSS` on the whole batch, its gradient accumulated as the
    trainer's (:func:`~entropy_dynamics.training.update.accumulate_gradients`: micro-batches of
    ``rows_per_chunk`` sequences, each weighted by its share of the batch's tokens). With
    ``forecast``, the step's parameter-space forecast is taken before it (:func:`_forecast`)."""
    optimizer = torch.optim.SGD(response_stats.model.parameters(), lr=lr, momentum=0.0)
    optimizer.zero_grad(set_to_none=True)
    mask = batch.rollout.response_mask  # (N, R)
    forecaster, groups = None, None
    if forecast:
        forecaster = EntropyForecast(response_stats, optimizer, groups=True)
        forecaster.begin({"all": Target(batch.rollout, mask)})
        groups = quadrant_masks(batch.advantages, batch.old.deviation)  # (N, R) each
    rows = torch.arange(mask.shape[0])
    # the unfused loss, with or without the forecast: the forecast must not change the step
    accumulate_gradients(response_stats, _LOSS, batch, rows, rows_per_chunk or 0,
                         forecaster=forecaster, groups=groups)  # fmt: skip
    predicted = {} if forecaster is None else _forecast(forecaster, optimizer, batch.rollout)
    optimizer.step()
    return predicted


def _forecast(forecaster: EntropyForecast, optimizer, rollout: Rollout) -> dict[str, Any]:
    """Before the step: the first-order forecast of the batch's token-mean ΔH, its split by
    token group, and each sequence's forecast (one forward + backward per sequence)."""
    overall = forecaster.finish(clip_coef=1.0)
    updates, _ = optimizer_update(optimizer)
    mask = rollout.response_mask
    per_sequence = []
    for row in range(mask.shape[0]):
        row_mask = torch.zeros_like(mask)
        row_mask[row] = mask[row]
        if not row_mask.any():
            per_sequence.append(0.0)
            continue
        _, gradients = forecaster.mean_entropy(Target(rollout, row_mask), grad=True)
        per_sequence.append(float(forecast_change(gradients, updates)))
    groups = {k.rsplit("/", 1)[-1]: float(v) for k, v in overall.items() if "/group/" in k}
    return {
        "forecast": float(overall["all/first_order"]),
        "groups": groups,
        "per_sequence": per_sequence,
    }


@torch.no_grad()
def _position_changes(
    before: Callable[[Tensor], Tensor],
    after: Callable[[Tensor], Tensor],
    features_before: Tensor,
    features_after: Tensor,
    tokens: Tensor,
    coef: Tensor,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Per valid position: actual, first-order and Theorem 3.3 ΔH, and the fitted ``α̂``.

    Logits are formed a bounded number of positions at a time and analysed in float64.
    """
    m = tokens.shape[0]
    actual, first, driver = (torch.empty(m, dtype=torch.float64) for _ in range(3))
    dot = norm = 0.0
    if m == 0:
        return actual, first, driver, 0.0
    vocab = before(features_before[:1]).shape[-1]
    rows = max(1, default_chunk_size(vocab) // 4)  # a few float64 (rows, V) blocks at a time
    for start in range(0, m, rows):
        part = slice(start, min(start + rows, m))
        z0, z1 = before(features_before[part]), after(features_after[part])  # (n, V)
        c = coef[part].double()
        terms = entropy_change_terms(z0, z1, tokens[part], c, temperature)
        actual[part], first[part] = terms[0].cpu(), terms[1].cpu()
        driver[part] = (c * terms[3]).cpu()  # A (S_k - E_p[S])
        dot += float(terms[4].sum())  # α̂ = Σ⟨Δz, u⟩ / Σ|u|² (Theorem 3.3's fitted step)
        norm += float(terms[5].sum())
    alpha = dot / norm if norm > 0 else 0.0
    thm33 = -alpha * driver / temperature**2
    return actual, first, thm33, alpha


def _frozen_logits(response_stats: ResponseStats) -> Callable[[Tensor], Tensor]:
    """Features → logits with the *current* ``lm_head`` (a copy survives the update)."""
    if not response_stats.fused:
        return lambda features: features  # already (valid-vocabulary) logits
    head, valid_vocab = copy.deepcopy(response_stats.head), response_stats.valid_vocab
    return lambda features: head(features)[..., :valid_vocab]


def one_step_check(
    model,
    rollout: Rollout,
    advantages: float | Tensor,
    *,
    lr: float = DEFAULT_LR,
    temperature: float = 1.0,
    valid_vocab: int | None = None,
    dtype: torch.dtype | None = torch.float32,
    rows_per_chunk: int | None = None,
    forecast: bool = True,
) -> OneStepResult:
    """Take one SGD step of the GRPO loss on a copy of ``model``; compare predicted and actual ΔH.

    The loss is the token-mean over valid tokens of ``-A log p_k`` (``losses.compute_policy_loss``
    with the default PPO config at ratio 1); the optimizer is ``torch.optim.SGD`` without
    momentum, weight decay or clipping. ``model`` is never modified: the copy (in eval mode, no
    dropout) is measured before and after the step at the rollout's own valid positions.
    Memory: the copy (in ``dtype``) with its gradients, and the ``(M, d)`` hidden states before
    and after at the ``M`` valid positions (``(M, V)`` logits when the model cannot be fused);
    logits are formed a few positions at a time.

    Args:
        model: the causal LM that sampled ``rollout``.
        rollout: ``N`` responses (:func:`~entropy_dynamics.training.rollout.generate`).
        advantages: one number for all responses or an ``(N,)`` tensor of sequence advantages.
        lr: SGD step size (:data:`DEFAULT_LR`).
        temperature: ``T`` of the policy ``softmax(z / T)``.
        valid_vocab: real tokens of a padded output layer
            (:func:`~entropy_dynamics.models.loading.valid_vocab_size`); ``None``: all rows.
        dtype: parameter dtype of the copy (``None`` keeps the model's); the ΔH arithmetic is
            float64 on the resulting logits either way.
        rows_per_chunk: responses per forward / backward pass (``None``: all at once).
        forecast: also forecast the step's entropy change in parameter space before taking it
            (:mod:`entropy_dynamics.training.forecast`): overall, by token group and per
            sequence; costs one forward + backward per sequence and four of the loss.

    Returns:
        :class:`OneStepResult`.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    theory.check_temperature(temperature)
    n = rollout.response_ids.shape[0]
    sequence_advantages = sequence_values(advantages, n, "advantages")  # (N,)
    policy = copy.deepcopy(model)
    if dtype is not None:
        policy.to(dtype)
    policy.eval()
    # one full forward per pass, as the reference an independent SGD step computes: a change of
    # ~1e-9 nats is measured here, below the rounding of a differently ordered forward
    response_stats = ResponseStats(policy, temperature, "auto", valid_vocab, shared_prompts=False)
    mask = rollout.response_mask
    token_advantages = broadcast_to_tokens(sequence_advantages.to(mask.device), mask)  # (N, R)
    chunks = row_chunks(n, rows_per_chunk)

    with torch.no_grad():
        features_before, old = _valid_features(response_stats, rollout, chunks, True)
    logits_before = _frozen_logits(response_stats)
    keep, _ = select_tokens(_LOSS, old, token_advantages, mask)  # every valid token
    batch = UpdateBatch(rollout, old, token_advantages.to(old.logprobs.dtype), keep)
    predicted = _sgd_step(response_stats, batch, lr, rows_per_chunk, forecast)
    with torch.no_grad():
        features_after, _ = _valid_features(response_stats, rollout, chunks)
    actual, first, thm33, alpha = _position_changes(
        logits_before,
        response_stats.logits,
        features_before,
        features_after,
        rollout.response_ids[mask],  # (M,)
        token_advantages[mask],
        temperature,
    )

    owner = mask.nonzero(as_tuple=True)[0].cpu()  # (M,) sequence of each valid token
    counts = mask.sum(-1).cpu().double()  # (N,)

    def per_sequence(values: Tensor) -> Tensor:
        sums = torch.zeros(n, dtype=torch.float64).index_add(0, owner, values)
        return sums / counts.clamp(min=1)

    return OneStepResult(
        lr=lr,
        temperature=temperature,
        effective_logit_lr=alpha,
        advantages=sequence_advantages,
        num_tokens=counts.long(),
        actual=per_sequence(actual),
        first_order=per_sequence(first),
        thm33=per_sequence(thm33),
        token_actual=actual,
        token_first_order=first,
        token_thm33=thm33,
        forecast=(
            torch.tensor(predicted["per_sequence"], dtype=torch.float64) if predicted else None
        ),
        forecast_overall=predicted.get("forecast"),
        forecast_groups=predicted.get("groups"),
    )


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------
