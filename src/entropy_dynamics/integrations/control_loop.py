"""A closed-loop method inside an engine: the controller our trainer uses, fed once per
generation batch on the whole (gathered) batch, its state beside the engine's checkpoint, and the
dynamics monitor after the update.

One object per run, :class:`EngineControl`, holds the method's controller — built by
:func:`entropy_dynamics.methods.build_controller`, the call our trainer makes, so there is no
second copy of a rule — and runs our trainer's sequence for one batch:

1. :meth:`~EngineControl.decide`: ``controller.begin`` (the batch's loss config: the target, its
   schedule, ``κ`` and the integral term of ``entropy_target``; the coefficient of
   ``adaptive_entropy``) then :func:`entropy_dynamics.losses.select_tokens` (the keep-mask);
2. the engine's update(s) on the batch;
3. :meth:`~EngineControl.finish`: with the per-token entropies of the same batch after the update
   (one no-grad forward, fused statistics, on the monitored batches only), the monitor's metrics
   (:func:`entropy_dynamics.dynamics.entropy_monitor_metrics`); then ``controller.end`` with the
   batch's metrics, which refits ``κ`` from the measured ``ΔH`` as in our trainer.

Every rank decides the same when every rank passes the same gathered batch: the controller's
state is a function of the batches alone. The state is a small JSON file (:data:`STATE_FILE`) in
the engine's checkpoint directory (:meth:`~EngineControl.save` / :meth:`~EngineControl.load`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from entropy_dynamics.control import Controller
from entropy_dynamics.dynamics import entropy_monitor_metrics
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.methods import build_controller, check_control, get_method
from entropy_dynamics.stats import TokenStats

__all__ = ["STATE_FILE", "EngineControl", "check_engine_control"]

STATE_FILE = "entropy_dynamics_control.json"
"""The controller's state in an engine's checkpoint directory."""


def _schedule_steps(steps: int) -> int:
    return max(int(steps), 1)


_UNKNOWN_LENGTH = 10**6  # a run whose length is not known yet: any schedule fits it


def check_engine_control(
    method: str,
    control: Mapping[str, Any],
    base: PolicyLossConfig,
    steps: int | None,
    where: str,
) -> None:
    """Validate a run's control options when its config is built: ``ValueError`` naming the
    option and ``where`` they were set (``"entropy_control"``, ``"+entropy_dynamics.control"``).
    ``steps``: the run's batches, or ``None`` when not known yet (a schedule that does not fit
    the run then fails at its first batch)."""
    horizon = _UNKNOWN_LENGTH if steps is None or steps < 1 else steps
    try:
        check_control(method, control, base, horizon)
    except (TypeError, ValueError) as exc:
        message = str(exc).replace("algorithm.control", where)  # our trainer's name for it
        raise ValueError(f"{where}: {message}") from exc


class EngineControl:
    """The controller of ``method`` over the loss config ``base``, driven one batch at a time.

    Args:
        method: a name of :data:`entropy_dynamics.methods.METHODS` (open-loop methods get the
            do-nothing :class:`~entropy_dynamics.control.Controller`).
        control: the controller's options (``EntropyTargetOptions`` fields, ...).
        base: the loss config the controller starts from (filter and its options).
        steps: batches in the run (the schedule's length when ``schedule_steps`` is 0).
        monitor_every: run the monitor on every ``monitor_every``-th batch (0: never).
    """

    def __init__(
        self,
        method: str,
        control: Mapping[str, Any],
        base: PolicyLossConfig,
        steps: int,
        monitor_every: int = 0,
    ) -> None:
        if monitor_every < 0:
            raise ValueError(f"monitor_every must be >= 0, got {monitor_every}")
        self.method, self.monitor_every = method, monitor_every
        self.controller: Controller = build_controller(
            method, dict(control), base, _schedule_steps(steps)
        )
        self.closed_loop = get_method(method).closed_loop
        self._pending: dict[str, Any] | None = None

    def monitor_due(self, step: int) -> bool:
        """Whether batch ``step`` (0-based) is measured: ``(step + 1) % monitor_every == 0``, as
        our trainer's ``dynamics_every``."""
        return self.monitor_every > 0 and (step + 1) % self.monitor_every == 0

    def decide(
        self, step: int, stats: TokenStats, advantages: Tensor, mask: Tensor
    ) -> tuple[PolicyLossConfig, Tensor, dict[str, Tensor]]:
        """Batch ``step``'s loss config, keep-mask and metrics (the controller's and the
        filter's); the batch waits for :meth:`finish`.

        Args:
            step: the batch's index in the run (0-based; the controller's step).
            stats: ``TokenStats`` ``(B, T)`` of the rollout policy on the whole batch.
            advantages: ``(B, T)`` token advantages.
            mask: ``(B, T)`` bool, valid response tokens.
        """
        config, metrics = self.controller.begin(step, stats, mask)
        keep, filter_metrics = select_tokens(config, stats, advantages, mask)
        metrics = {**metrics, **filter_metrics}
        self._pending = {
            "step": step,
            "metrics": metrics,
            "entropy": stats.entropy.detach(),
            "deviation": stats.deviation.detach(),
            "advantages": advantages.detach(),
            "keep": keep,
            "mask": mask,
        }
        return config, keep, metrics

    @property
    def pending(self) -> bool:
        """Whether a decided batch waits for :meth:`finish`."""
        return self._pending is not None

    @property
    def pending_monitor(self) -> bool:
        """Whether the waiting batch is to be measured after its update."""
        return self._pending is not None and self.monitor_due(self._pending["step"])

    def finish(self, entropy_after: Tensor | None = None) -> dict[str, Tensor]:
        """Close the waiting batch: the monitor's metrics from ``entropy_after`` ``(B, T)`` (the
        per-token entropies at the batch's positions after its update; ``None``: not measured),
        then ``controller.end`` with the batch's metrics. Returns the monitor's metrics."""
        pending, self._pending = self._pending, None
        if pending is None:
            return {}
        monitor: dict[str, Tensor] = {}
        if entropy_after is not None:
            monitor = entropy_monitor_metrics(
                pending["entropy"], entropy_after, pending["advantages"], pending["deviation"],
                pending["keep"].to(pending["advantages"].dtype), pending["mask"],
            )  # fmt: skip
        self.controller.end({**pending["metrics"], **monitor})
        return monitor

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "controller": self.controller.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.method:
            raise ValueError(
                f"the checkpoint's controller is {state.get('method')!r}, this run's "
                f"{self.method!r}: resume with the method it was saved with"
            )
        self.controller.load_state_dict(state["controller"])

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the state to ``directory / STATE_FILE`` (atomically); returns the path."""
        path = Path(directory) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state_dict(), indent=1))  # inf as Infinity
        os.replace(temporary, path)
        return path

    def load(self, directory: str | os.PathLike) -> bool:
        """Restore the state from ``directory / STATE_FILE``; ``False`` if there is none (a
        checkpoint of a run without control)."""
        path = Path(directory) / STATE_FILE
        if not path.exists():
            return False
        self.load_state_dict(json.loads(path.read_text()))  # Infinity reads back as inf
        return True
