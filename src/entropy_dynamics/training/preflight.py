"""Every check a run's start makes before any work, in one function: ``train`` runs it before it
starts and ``train --dry-run`` runs the same one, so a dry run that says ok is a start that
works.

:func:`preflight` refuses, in this order: a metric back-end whose package is missing
(:func:`~entropy_dynamics.training.metrics.check_backends`); a ``model.device`` this machine does
not have (``cuda`` without a GPU); a run directory another live process holds
(:func:`~entropy_dynamics.training.run_lock.check_unlocked`); and everything the run directory
itself would refuse (:func:`~entropy_dynamics.training.run_dir.check_run_dir`: an ``output_dir``
that cannot be created, an existing run without ``--resume`` / ``--overwrite``, a resume without
a checkpoint or with another config). It writes nothing; the trainer makes the same run-directory
checks again under the directory's lock (:func:`~entropy_dynamics.training.run_dir.claim_run_dir`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from entropy_dynamics.models.loading import resolve_device
from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.metrics import check_backends
from entropy_dynamics.training.resume_from import resolve_checkpoint
from entropy_dynamics.training.run_dir import check_run_dir
from entropy_dynamics.training.run_lock import check_unlocked

__all__ = ["Preflight", "checkpoint_step", "preflight"]


def checkpoint_step(checkpoint: str | Path) -> int:
    """The step of a checkpoint directory (``checkpoints/step_000200`` → 200)."""
    return int(Path(checkpoint).name.rsplit("_", 1)[-1])


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found."""

    checkpoint: Path | None = None
    """The checkpoint a resume continues from; ``None`` for a fresh start."""
    step: int = 0
    """That checkpoint's step (0 for a fresh start)."""
    complete: bool = False
    """A resume of a run that already reached ``steps``: there is nothing to train."""
    notes: list[str] = field(default_factory=list)
    """Checkpoints passed over as damaged, with why."""


def preflight(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    resume_from: str | Path | None = None,
    command: str = "entropy-dynamics train",
) -> Preflight:
    """The checks of the module docstring, for a run of ``config`` in ``config.run_dir``.

    Raises:
        ValueError: the first check that fails (a :class:`~entropy_dynamics.errors.ConfigError`,
            :class:`~entropy_dynamics.training.run_dir.RunDirectoryError` or
            :class:`~entropy_dynamics.training.run_lock.RunLockedError`), its message naming
            the setting or flag to change.
    """
    check_backends(config.logging)
    resolve_device(config.model.device)
    run_dir = config.run_dir
    check_unlocked(run_dir)
    notes: list[str] = []
    if resume_from is not None:  # train --resume-from: the chosen checkpoint (resume_from module)
        checkpoint = resolve_checkpoint(resume_from)
        own = checkpoint.parent.parent.resolve() == Path(run_dir).resolve()
        check_run_dir(
            run_dir, to_dict(config), resume=own, overwrite=overwrite and not own,
            has_checkpoint=own, command=command,
        )  # fmt: skip
        step = checkpoint_step(checkpoint)
        return Preflight(checkpoint, step, own and step >= config.steps, notes)
    checkpoint = latest_checkpoint(run_dir, notes) if resume else None
    check_run_dir(
        run_dir, to_dict(config), resume=resume, overwrite=overwrite,
        has_checkpoint=checkpoint is not None, command=command, damaged=notes,
    )  # fmt: skip
    step = 0 if checkpoint is None else checkpoint_step(checkpoint)
    return Preflight(checkpoint, step, checkpoint is not None and step >= config.steps, notes)
