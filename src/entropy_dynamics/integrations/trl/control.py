"""``entropy_target``'s controller and the dynamics monitor in TRL's ``GRPOTrainer``.

TRL trains on one generation batch for ``steps_per_generation × num_iterations`` micro-steps; the
controller's step is one generation batch, as our trainer's is one rollout batch:

- at generation (:meth:`TrlControl.decide`), on the batch gathered from every process — so every
  rank decides the same — the controller sets the batch's filter options and the keep-mask
  follows (:class:`~entropy_dynamics.integrations.control_loop.EngineControl`); its index is
  ``global_step · gradient_accumulation_steps // (steps_per_generation · num_iterations)``,
  which a resumed run recomputes exactly;
- after the optimizer step that finishes the batch (a ``TrainerCallback``'s ``on_step_end``,
  before TRL logs and saves), :meth:`TrlControl.finish` runs the monitor on the monitored batches
  (one no-grad pass of the local batch through the plug-in's statistics, gathered) and feeds the
  batch's metrics to the controller; the ``dynamics/*`` metrics go to TRL's ``_metrics``, so into
  the row of that optimizer step in ``log_history``. When a generation batch ends between
  optimizer steps (``steps_per_generation × num_iterations`` not a multiple of
  ``gradient_accumulation_steps``), the next batch's decision closes it unmeasured;
- the state is :data:`~entropy_dynamics.integrations.control_loop.STATE_FILE` in each
  ``checkpoint-N`` folder beside ``trainer_state.json``, read back by
  ``train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor
from transformers import TrainerCallback

from entropy_dynamics.integrations.control_loop import EngineControl
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.stats import TokenStats

__all__ = ["FinishBatch", "TrlControl"]

_MONITOR_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")


class TrlControl:
    """The controller and monitor of one ``EntropyGRPOTrainer`` (built at its first batch, when
    TRL knows the run's length)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer, args = trainer, trainer.args
        self.method = args.control_method()
        self.base: PolicyLossConfig = args.filter_config()
        self.config = self.base  # the last decided batch's (eval batches use it)
        self.engine: EngineControl | None = None
        self.resume_from: str | None = None  # a checkpoint whose state the engine loads
        self.batch: dict[str, Tensor] | None = None  # the local batch the monitor re-reads
        self.decided_at = 0  # TRL's micro-step counter at the decision

    @property
    def active(self) -> bool:
        """Whether there is anything to drive: a controller or the monitor."""
        return self.method is not None or self.trainer.args.entropy_dynamics_monitor_every > 0

    def _micro_steps_per_batch(self) -> int:
        return self.trainer.args.steps_per_generation * self.trainer.num_iterations

    def _engine(self) -> EngineControl:
        if self.engine is None:
            trainer = self.trainer
            accumulation = trainer.args.gradient_accumulation_steps
            batches = math.ceil(
                max(trainer.state.max_steps, 1) * accumulation / self._micro_steps_per_batch()
            )
            self.engine = EngineControl(
                self.method or "grpo", trainer.args.entropy_control or {}, self.base, batches,
                monitor_every=trainer.args.entropy_dynamics_monitor_every,
            )  # fmt: skip
            resuming = self.resume_from is not None and self.method is not None
            if resuming and not self.engine.load(self.resume_from):
                raise FileNotFoundError(
                    f"{self.resume_from} has no controller state; it was saved by a run "
                    "without entropy_target's controller"
                )
        return self.engine

    def step(self) -> int:
        """The generation batch's index in the run (0-based)."""
        trainer = self.trainer
        micro_steps = trainer.state.global_step * trainer.args.gradient_accumulation_steps
        return micro_steps // self._micro_steps_per_batch()

    def decide(
        self, output: dict[str, Any], stats: TokenStats, advantages: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The keep-mask ``(P·B, C)`` of the gathered batch and its metrics (the controller's,
        the filter's); a training batch waits for :meth:`finish`, an eval batch only reads the
        last decided options."""
        if not (self.active and self.trainer.model.training):
            return select_tokens(self.config, stats, advantages, mask)
        engine = self._engine()
        if engine.pending:  # the last batch ended between optimizer steps: no measurement
            engine.finish()
        self.config, keep, metrics = engine.decide(self.step(), stats, advantages, mask)
        self.batch = {k: output[k] for k in _MONITOR_KEYS} if engine.pending_monitor else None
        self.decided_at = self.trainer._step
        return keep, metrics

    def finish(self) -> None:
        """After an optimizer step: close the batch if its last micro-step is done."""
        engine, trainer = self.engine, self.trainer
        if engine is None or not engine.pending:
            return
        if trainer._step - self.decided_at < self._micro_steps_per_batch():
            return
        entropy_after = None
        if self.batch is not None:  # the monitor: H of the same batch under the new weights
            after = trainer.rollout_stats(self.batch)  # (B, C) local, no grad, fused
            entropy_after = trainer._gather(after.entropy.float())  # (P·B, C) as decided
        self.batch = None
        for key, value in engine.finish(entropy_after).items():
            trainer._metrics["train"][key].append(float(value))

    def save(self, checkpoint_dir: str) -> None:
        if self.method is not None and self.engine is not None:
            self.engine.save(checkpoint_dir)


class FinishBatch(TrainerCallback):
    """``on_step_end``: after the optimizer step, before TRL logs and saves."""

    def __init__(self, control: TrlControl) -> None:
        self.control = control

    def on_step_end(self, args, state, control, **kwargs):
        self.control.finish()
