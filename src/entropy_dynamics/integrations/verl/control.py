"""Closed-loop entropy control and the dynamics monitor on verl's driver (the v1 trainer).

The controller is our trainer's (:class:`~entropy_dynamics.integrations.control_loop.EngineControl`
builds it with :func:`entropy_dynamics.methods.build_controller`), one per trainer, kept on the
trainer object; its step is verl's ``global_steps - 1`` (verl counts from 1), and its schedule
spans verl's ``total_training_steps``. Per step (:mod:`~entropy_dynamics.integrations.verl.trainer`
calls these):

- :func:`decide_step`: after verl's advantages, on the whole batch — the controller's ``begin`` (the
  target, ``κ`` and integral term of ``entropy_target``; the coefficient of
  ``adaptive_entropy``), then the keep-mask;
- :func:`actor_extra_info`: ``adaptive_entropy``'s coefficient travels to the workers as the
  non-tensor flag :data:`ENTROPY_COEFF_FLAG` of the actor update, where the plug-in's wrap of
  verl's ``ppo_loss`` uses it in place of ``actor.entropy_coeff``;
- :func:`finish_step`: after the actor update, on the monitored steps, one more old-log-prob pass of
  the same batch (the new weights; our fused statistics, no logits kept) gives the per-token
  entropy after the update — verl's own ``entropy`` and our statistics fields in TransferQueue are
  put back as they were — then the monitor's metrics and the controller's ``end``;
- :func:`save_state` / :func:`load_state`: the state in the step's checkpoint directory
  (``global_step_N/``, beside ``actor/`` and ``data.pt``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from torch import Tensor

from entropy_dynamics.integrations.control_loop import EngineControl
from entropy_dynamics.integrations.verl.engine import STAT_KEYS, STATS_FLAG
from entropy_dynamics.integrations.verl.filtering import FilterSettings, batch_stats

__all__ = [
    "ENTROPY_COEFF_FLAG",
    "INFER_INFO",
    "actor_extra_info",
    "checkpoint_dir",
    "decide_step",
    "finish_step",
    "load_state",
    "save_state",
]

ENTROPY_COEFF_FLAG = "ed_entropy_coeff"
"""Non-tensor flag of the actor update: this step's entropy-bonus coefficient
(``adaptive_entropy``)."""
_ATTRIBUTE = "_entropy_dynamics_control"  # the EngineControl on the trainer
INFER_INFO = "_entropy_dynamics_infer_info"
"""Attribute of the trainer: the ``extra_info`` of the step's old-log-prob pass, which the
monitor's pass repeats."""


def _engine(trainer: Any, settings: FilterSettings) -> EngineControl:
    engine = getattr(trainer, _ATTRIBUTE, None)
    if engine is None:
        base = settings.loss_config()
        if settings.method == "adaptive_entropy":  # its first coefficient: verl's entropy_coeff
            actor = trainer.config.actor_rollout_ref.actor
            base = dataclasses.replace(base, entropy_coef=float(actor.get("entropy_coeff", 0.0)))
        engine = EngineControl(
            settings.method or "grpo", settings.control, base,
            steps=int(getattr(trainer, "total_training_steps", 1) or 1),
            monitor_every=settings.monitor_every,
        )  # fmt: skip
        resume = getattr(trainer, "_entropy_dynamics_resume", None)
        if resume is not None and settings.method is not None and not engine.load(resume):
            raise FileNotFoundError(
                f"{resume} has no controller state; it was saved by a run without "
                f"{settings.method}'s controller"
            )
        setattr(trainer, _ATTRIBUTE, engine)
    return engine


def decide_step(
    trainer: Any, settings: FilterSettings, padded: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The step's keep-mask ``(B, T)`` and metrics on the whole padded batch (``old_log_probs``,
    the statistics, ``advantages``, ``response_mask``)."""
    engine = _engine(trainer, settings)
    if engine.pending:  # the last step ended without an actor update: no measurement
        engine.finish()
    stats, advantages, mask = batch_stats(padded)
    config, keep, metrics = engine.decide(trainer.global_steps - 1, stats, advantages, mask)
    adaptive = settings.method == "adaptive_entropy"  # entropy_target leaves verl's bonus alone
    trainer._entropy_dynamics_coeff = config.entropy_coef if adaptive else None
    return keep & mask, {**stats.metrics(mask), **metrics}


def actor_extra_info(trainer: Any) -> dict[str, Any]:
    """Flags the actor update carries to the workers: ``adaptive_entropy``'s coefficient."""
    coeff = getattr(trainer, "_entropy_dynamics_coeff", None)
    return {} if coeff is None else {ENTROPY_COEFF_FLAG: float(coeff)}


def _entropy_after(trainer: Any, tq: Any, batch: Any) -> Tensor:
    """``(B, T)`` per-token entropy of the batch's responses under the updated weights: one
    old-log-prob pass with our statistics; TransferQueue's fields are put back afterwards."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_from_nested

    kept = ["entropy", *STAT_KEYS]
    saved = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=kept)
    info = dict(batch.extra_info)
    batch.extra_info.clear()  # the old-log-prob pass's flags, not the update's
    batch.extra_info.update(getattr(trainer, INFER_INFO, None) or {
        "calculate_entropy": True, "compute_loss": False,
        "temperature": trainer.config.actor_rollout_ref.rollout.temperature,
    })  # fmt: skip
    batch.extra_info[STATS_FLAG] = True
    try:
        trainer.actor_rollout_wg.compute_log_prob(batch)
    finally:
        batch.extra_info.clear()
        batch.extra_info.update(info)
    fields = ["ed_entropy", "response_mask"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    after = response_from_nested(data["ed_entropy"], data["response_mask"])  # jagged (B, j)
    restored = TensorDict({k: saved[k] for k in kept}, batch_size=len(batch))
    tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=restored)
    return after.to_padded_tensor(0.0)


def finish_step(trainer: Any, tq: Any, batch: Any, metrics: dict) -> None:
    """After the actor update: the monitor on its steps, then the controller's ``end``; the
    ``dynamics/*`` metrics go into verl's step ``metrics``."""
    engine = getattr(trainer, _ATTRIBUTE, None)
    if engine is None or not engine.pending:
        return
    entropy_after = _entropy_after(trainer, tq, batch) if engine.pending_monitor else None
    monitor = engine.finish(entropy_after)
    metrics.update({key: float(value) for key, value in monitor.items()})


def checkpoint_dir(trainer: Any) -> str:
    """verl's checkpoint directory of the current step, ``default_local_dir/global_step_N``."""
    local = trainer.config.trainer.default_local_dir
    return os.path.join(local, f"global_step_{trainer.global_steps}")


def save_state(trainer: Any) -> None:
    engine = getattr(trainer, _ATTRIBUTE, None)
    if engine is not None and engine.closed_loop:
        engine.save(checkpoint_dir(trainer))


def load_state(trainer: Any) -> None:
    """After verl's ``_load_checkpoint``: remember the step's directory when resuming (the
    controller, built at the first step, reads its state from there)."""
    if trainer.global_steps > 0:
        options = trainer.config.trainer
        folder = checkpoint_dir(trainer)
        if options.get("resume_mode", "auto") == "resume_path":
            folder = os.path.abspath(options.resume_from_path)
        trainer._entropy_dynamics_resume = folder
        setattr(trainer, _ATTRIBUTE, None)
