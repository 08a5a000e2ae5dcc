"""The gradient of one optimizer step, accumulated over micro-batches, and the trainer's optimizer;
the trainer's update and the one-step check (:mod:`entropy_dynamics.study.one_step`) both take
the gradient from here.

- the rows of a mini-batch are split into micro-batches of ``micro_batch_size`` sequences (0: the
  whole mini-batch at once), or packed by length into micro-batches of at most
  ``micro_batch_tokens`` padded tokens, one forward + backward each, run up to the micro-batch's
  longest response;
- each micro-batch's two loss terms, the policy-gradient term and the entropy bonus, are weighted
  by the micro-batch's share of the mini-batch's aggregate
  (:func:`~entropy_dynamics.aggregation.aggregation_share`, in the statistics' precision, at
  least float32), so the accumulated gradient is the one-shot gradient of the mini-batch for
  every aggregation mode;
- rows that add nothing to the gradient (no kept token of nonzero advantage: a group of equal
  rewards) are left out of the forward + backward where the loss makes that exact
  (:func:`skips_idle_rows`, ``algorithm.skip_idle_rows``), their tokens still counted in the
  shares' denominators (issue 30);
- the loss is the configured one (:func:`~entropy_dynamics.losses.compute_policy_loss`) on the
  current policy's statistics, with the filter's ``S_k`` and ``E_p[S]`` those of the rollout
  policy; on the fused path PPO-clip and its gradient come from one pass over the hidden states
  (:meth:`~entropy_dynamics.training.forward.ResponseStats.policy_loss`, issue 16) unless a
  forecast needs the loss's dependence on ``log p_k``;
- with a KL penalty (``algorithm.kl.coef > 0``), ``β · agg(KL_k)`` to the reference's
  ``log π_ref`` (:func:`~entropy_dynamics.training.reference.kl_penalty`) joins the loss,
  weighted as the entropy term (both over every valid token); the fused PPO-clip loss forms its
  gradient inside the forward and has no ``log π_θ`` with gradient to add it to, so the trainer
  takes the unfused loss then;
- the loss pass is a forward of the policy *before* the step: :class:`PreUpdate` keeps what the
  trainer would otherwise need a second, teacher-forced pass for (``log p_k`` of the policy at
  every response position, the logits at the dynamics positions), when its statistics come from
  the sampling pass (an on-policy update, issue 30);
- the trainer's optimizer (:func:`adamw`): AdamW; its learning rate after an optional linear
  warm-up constant (the default), or decaying linearly or on a cosine to ``min_lr_ratio · lr``
  (:func:`lr_multiplier`).

Shapes: ``N`` sequences of the rollout batch, ``R`` response positions, ``n`` rows of a micro-batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from entropy_dynamics.aggregation import aggregation_share, masked_mean
from entropy_dynamics.losses import PolicyLossConfig, PolicyLossInputs, compute_policy_loss
from entropy_dynamics.stats import TokenStats
from entropy_dynamics.training.config import OptimConfig
from entropy_dynamics.training.forecast import EntropyForecast
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.reference import KLConfig, kl_penalty
from entropy_dynamics.training.rollout import Rollout

__all__ = [
    "PreUpdate",
    "UpdateBatch",
    "accumulate_gradients",
    "adamw",
    "idle_rows",
    "loss_inputs",
    "lr_multiplier",
    "micro_batches",
    "position_logits",
    "rollout_micro_batches",
    "skips_idle_rows",
]


@dataclass
class UpdateBatch:
    """What every update of one rollout batch learns from."""

    rollout: Rollout
    """The ``N`` sampled responses, ``R`` positions each."""
    old: TokenStats
    """``(N, R)`` statistics of the rollout policy (no gradient)."""
    advantages: Tensor
    """``(N, R)`` token advantages (the sequence's, 0 on padding)."""
    keep: Tensor
    """``(N, R)`` bool: the filter's tokens, chosen over the whole batch."""
    ref_logprobs: Tensor | None = None
    """``(N, R)`` ``log π_ref`` of the KL penalty's reference (``None``: no penalty)."""


class PreUpdate:
    """The policy before the step, as the loss pass sees it, chunk by chunk.

    Args:
        rollout: the batch (``N`` rows, ``R`` positions).
        positions: ``(rows, cols)``, each ``(n,)``: the dynamics positions whose logits to keep
            (``None``: none).

    Attributes:
        logprobs: ``(N, R)`` detached ``log p_k`` of the current policy (0 on padding, and on the
            rows no chunk has covered yet).
        logits: ``(n, V)`` raw logits at ``positions`` (``None`` until a chunk holds one), formed
            with the lm_head of the moment: before the optimizer step.
        skipped: ``(N,)`` bool, the rows the loss pass left out (no gradient, :func:`idle_rows`)
            and nothing else ran: their ``logprobs`` are not known.
    """

    def __init__(self, rollout: Rollout, positions: tuple[Tensor, Tensor] | None) -> None:
        self.rollout, self.positions = rollout, positions
        self.logprobs = torch.zeros(rollout.response_ids.shape, device=rollout.response_ids.device)
        self.logits: Tensor | None = None
        self.skipped = torch.zeros(rollout.response_ids.shape[0], dtype=torch.bool)

    def fill(self, stats: ResponseStats, rows: Tensor, micro_batch_tokens: int = 0) -> None:
        """The loss pass leaves ``rows`` (``(n,)``) out: those that hold a dynamics position run
        without gradient (a forward, no backward) for their logits, packed by length as the
        update's micro-batches (:func:`micro_batches`); the others are marked :attr:`skipped`."""
        held = torch.zeros_like(rows, dtype=torch.bool)
        if self.positions is not None:
            held = torch.isin(rows, self.positions[0])  # (n,)
        self.skipped[rows[~held].cpu()] = True
        if not bool(held.any()):
            return
        for chunk in rollout_micro_batches(self.rollout, rows[held], 0, micro_batch_tokens):
            with torch.no_grad():
                features = stats.features(self.rollout, chunk)  # (c, R, ·)
                logprobs = stats.stats(features, self.rollout.response_ids[chunk]).logprobs
            self.add(stats, chunk, features, logprobs)

    def add(self, stats: ResponseStats, rows: Tensor, features: Tensor, logprobs: Tensor) -> None:
        """Keep what chunk ``rows`` (``(n,)``) shows: its ``(n, R)`` ``logprobs`` and, at the
        dynamics positions among its rows, the logits of its ``(n, R, ·)`` ``features``."""
        self.logprobs[rows] = logprobs.detach().to(self.logprobs.dtype)
        if self.positions is not None:
            self.logits = position_logits(self.logits, stats, features, rows, self.positions)


@torch.no_grad()
def position_logits(
    out: Tensor | None,
    stats: ResponseStats,
    features: Tensor,
    rows: Tensor,
    positions: tuple[Tensor, Tensor],
) -> Tensor:
    """Write the raw logits at those of ``positions`` (``(rows, cols)`` of the batch, ``(n_pos,)``
    each) that lie in chunk ``rows`` (``(n,)``) into ``out`` (``(n_pos, V)``, allocated on the
    first call when ``None``), from the chunk's ``(n, R, ·)`` ``features``; return ``out``.
    Called chunk by chunk, ``out`` ends holding every position's logits."""
    pos_rows, pos_cols = positions
    size = int(torch.cat([rows, pos_rows]).max()) + 1
    local = torch.full((size,), -1, dtype=torch.long, device=rows.device)
    local[rows] = torch.arange(len(rows), device=rows.device)  # batch row → chunk row
    inside = local[pos_rows] >= 0  # (n_pos,) positions this chunk holds
    logits = stats.logits(features[local[pos_rows[inside]], pos_cols[inside]].detach())
    if out is None:
        out = logits.new_empty((len(pos_rows), logits.shape[-1]))
    out[inside] = logits
    return out


def rollout_micro_batches(
    rollout: Rollout, rows: Tensor, size: int = 0, max_tokens: int = 0
) -> list[Tensor]:
    """:func:`micro_batches` of ``rows`` with the rollout's response lengths (packed by them
    when ``max_tokens``)."""
    lengths = rollout.response_mask.sum(1) if max_tokens else None  # (N,)
    return micro_batches(rows, size, lengths, max_tokens)


def micro_batches(
    rows: Tensor, size: int, lengths: Tensor | None = None, max_tokens: int = 0
) -> list[Tensor]:
    """``rows`` in consecutive micro-batches of ``size`` (0 or ``size >= len(rows)``: one); with
    ``max_tokens`` (and ``lengths``, ``(N,)`` response lengths), sorted by length and packed so
    that each holds at most ``max_tokens`` padded tokens (its rows × its longest; a longer row
    alone) and at most ``size`` rows."""
    if not max_tokens or lengths is None:
        return list(rows.split(size)) if size and size < len(rows) else [rows]
    ordered = rows[torch.argsort(lengths[rows], stable=True)]
    chunks, start = [], 0
    for i, length in enumerate(lengths[ordered].tolist()):  # ascending: row i is the longest
        n = i - start + 1
        if n > 1 and (n * length > max_tokens or (size and n > size)):
            chunks.append(ordered[start:i])
            start = i
    return [*chunks, ordered[start:]]


def loss_inputs(
    stats: ResponseStats,
    config: PolicyLossConfig,
    batch: UpdateBatch,
    rows: Tensor,
    features: Tensor | None = None,
) -> PolicyLossInputs:
    """The policy-loss inputs of ``rows``: the current policy's ``log p_k`` (and entropy, with
    gradient when there is a bonus), the rollout policy's ``S_k`` and ``E_p[S]`` for the filters,
    as in the reference code. ``features``: ``rows``' features already formed with gradient."""
    rollout, old = batch.rollout, batch.old
    tokens = rollout.response_ids[rows]  # (n, R)
    if features is None:
        features = stats.features(rollout, rows)  # (n, R, d) hidden states, or (n, R, V) logits
    new = stats.stats(features, tokens, entropy_grad=config.entropy_coef != 0)
    return PolicyLossInputs(
        logprobs=new.logprobs,  # (n, R)
        old_logprobs=old.logprobs[rows],
        advantages=batch.advantages[rows],
        response_mask=rollout.response_mask[rows],
        stats=TokenStats(
            new.logprobs, new.entropy, old.discriminator[rows], old.expected_discriminator[rows]
        ),
        keep_mask=batch.keep[rows],
    )


def accumulate_gradients(
    stats: ResponseStats,
    config: PolicyLossConfig,
    batch: UpdateBatch,
    rows: Tensor,
    micro_batch_size: int = 0,
    *,
    micro_batch_tokens: int = 0,
    fused: bool = False,
    forecaster: EntropyForecast | None = None,
    groups: dict[str, Tensor] | None = None,
    pre_update: PreUpdate | None = None,
    kl: KLConfig | None = None,
    skip_idle: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Backpropagate the loss of ``rows`` into ``.grad``, micro-batch by micro-batch.

    Args:
        stats: the statistics of the policy being trained.
        config: the step's loss config.
        batch: the rollout batch.
        rows: ``(B,)`` indices of the mini-batch's sequences.
        micro_batch_size: sequences per forward + backward (0: all ``B`` at once).
        micro_batch_tokens: padded response tokens per forward + backward, rows packed by
            length (0: off; :func:`micro_batches`).
        fused: use the fused PPO-clip loss (``stats.fuses_loss(config)`` must hold); ignored
            under a forecast.
        forecaster: also accumulate each token group's share of the gradient
            (:meth:`~entropy_dynamics.training.forecast.EntropyForecast.add_group_gradients`).
        groups: group name → ``(N, R)`` bool mask, the forecaster's token groups.
        pre_update: keeps the policy's ``log p_k`` and dynamics logits seen by the loss pass.
        kl: the KL penalty to ``batch.ref_logprobs`` (``None`` or ``coef == 0``: none); not on
            the fused loss.
        skip_idle: leave out of the forward + backward the rows whose loss has no gradient
            (:func:`idle_rows`), when the loss allows it (:func:`skips_idle_rows`).

    Returns:
        ``(loss, metrics)``: the 0-d CPU sum of the micro-batches' weighted losses and the loss
        metrics averaged over the micro-batches.
    """
    mask, keep = batch.rollout.response_mask, batch.keep  # (N, R) each
    trained, valid = keep[rows] & mask[rows], mask[rows]  # (B, R) each
    penalized = kl is not None and kl.coef > 0
    if penalized and (fused or batch.ref_logprobs is None):
        raise ValueError("the KL penalty needs batch.ref_logprobs and the unfused loss")
    live = rows
    if skip_idle and not penalized and forecaster is None and skips_idle_rows(config):
        idle = idle_rows(batch, rows)  # (B,) bool
        if bool(idle.any()) and not bool(idle.all()):
            live = rows[~idle]
            if pre_update is not None:
                pre_update.fill(stats, rows[idle], micro_batch_tokens)
    chunks = rollout_micro_batches(batch.rollout, live, micro_batch_size, micro_batch_tokens)
    partial = len(chunks) > 1 or len(live) < len(rows)  # each chunk weighed by its share
    dtype = torch.promote_types(batch.old.logprobs.dtype, torch.get_default_dtype())
    total, metrics = torch.zeros(()), []
    for chunk in chunks:
        shares = (1.0, 1.0)  # 0-d weights of the pg and entropy terms in the mini-batch's loss
        if partial:
            mode = config.agg_mode
            share_pg = aggregation_share(mode, keep[chunk] & mask[chunk], trained, dtype)
            shares = (share_pg, aggregation_share(mode, mask[chunk], valid, dtype))
        features = stats.features(batch.rollout, chunk)  # (n, R, ·), with gradient
        if fused and forecaster is None:  # the gradient is formed in this forward
            out, current = stats.policy_loss(config, batch.rollout, chunk, batch.old.logprobs,
                                             batch.advantages, keep, shares, features)  # fmt: skip
            loss, logprobs = out.loss, current.logprobs
        else:
            inputs = loss_inputs(stats, config, batch, chunk, features)
            logprobs = inputs.logprobs
            out = compute_policy_loss(config, inputs)  # over (n, R) tokens
            loss = out.loss  # 0-d
            if partial:
                loss = shares[0] * out.pg_loss
                if config.entropy_coef != 0:
                    loss = loss - config.entropy_coef * shares[1] * out.entropy
            if penalized:  # over every valid token, as the entropy term
                chunk_mask, ref = batch.rollout.response_mask[chunk], batch.ref_logprobs[chunk]
                penalty, kl_mean = kl_penalty(
                    kl, logprobs, ref, chunk_mask, config.agg_mode, config.loss_agg_norm
                )  # (n, R) each in, 0-d each out
                loss = loss + shares[1] * penalty
                kl_metrics = {"actor/kl_ref": kl_mean, "actor/kl_loss": penalty.detach()}
        if pre_update is not None:
            pre_update.add(stats, chunk, features, logprobs)
        if forecaster is not None:
            chunk_groups = {name: m[chunk] for name, m in (groups or {}).items()}  # (n, R) each
            forecaster.add_group_gradients(loss, inputs.logprobs, chunk_groups)
        loss.backward()
        total += loss.detach().cpu()
        metrics.append({**out.metrics, **kl_metrics} if penalized else out.metrics)
    averaged = {k: torch.stack([m[k].float() for m in metrics]).mean() for k in metrics[0]}
    averaged["actor/frac_rows_skipped"] = torch.tensor(1.0 - len(live) / max(len(rows), 1))
    if len(live) < len(rows):  # the skipped rows' tokens count: kept or not, over the mini-batch
        averaged["actor/frac_kept"] = masked_mean(trained.float(), valid)
    return total, averaged


def skips_idle_rows(config: PolicyLossConfig) -> bool:
    """Whether a row without a trained token of nonzero advantage adds nothing to the loss's
    gradient: the PPO-clip surrogate (each token's term a multiple of its ``A``), no entropy
    bonus, and an aggregation whose divisor does not depend on the forward's width
    (``seq-mean-token-sum-norm`` without ``loss_agg_norm`` divides by it). Not KL-Cov (it
    penalizes tokens it selects among the micro-batch's, whatever their advantage), nor EntroPIC
    (its term's mean runs over the high-probability tokens of the rows that run)."""
    if config.loss != "ppo" or config.entropy_coef != 0:
        return False
    return config.agg_mode != "seq-mean-token-sum-norm" or config.loss_agg_norm is not None


def idle_rows(batch: UpdateBatch, rows: Tensor) -> Tensor:
    """``(B,)`` bool: the ``rows`` with no valid, kept token of nonzero advantage — a group whose
    rewards are all equal (GRPO's advantage 0), or a row the filter dropped whole."""
    mask = batch.rollout.response_mask[rows].bool() & batch.keep[rows].bool()
    return ~(mask & (batch.advantages[rows] != 0)).any(1)


def lr_multiplier(
    step: int, *, schedule: str, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> float:
    """The learning rate of optimizer step ``step + 1`` as a fraction of the peak: ``step``
    scheduler steps taken (0-based), ``total_steps`` optimizer steps in the run.

    Warm-up ``(step + 1) / warmup_steps`` while ``step < warmup_steps``; then, with the decay's
    progress ``q = (step - warmup_steps) / (total_steps - warmup_steps)`` (at most 1):
    ``constant`` 1; ``linear`` ``m + (1 - m)(1 - q)``; ``cosine`` ``m + (1 - m)(1 + cos(π q)) / 2``,
    with ``m = min_lr_ratio`` (the forms of Hugging Face's ``get_linear_schedule_with_warmup``
    and ``get_cosine_schedule_with_warmup``, verl's ``min_lr_ratio`` floor)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be constant, linear or cosine, got {schedule!r}")


def adamw(
    model: torch.nn.Module, optim: OptimConfig, total_steps: int = 1
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """``(optimizer, scheduler)``: AdamW on ``model``'s parameters as ``optim`` says, its learning
    rate ramped linearly over ``optim.warmup_steps`` steps, then ``optim.schedule`` over the
    run's ``total_steps`` optimizer steps (:func:`lr_multiplier`). The scheduler's state is its
    step count: a resumed run continues the same curve."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    shape = functools.partial(
        lr_multiplier,
        schedule=optim.schedule,
        total_steps=total_steps,
        warmup_steps=max(optim.warmup_steps, 0),
        min_lr_ratio=optim.min_lr_ratio,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
