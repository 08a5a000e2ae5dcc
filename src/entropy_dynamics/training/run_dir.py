"""Run directories that never lose a run: refuse, resume with a checked config, or move aside.

A directory *holds a run* once it has a ``config.yaml``, a ``metrics.jsonl`` or checkpoints. A new
run into such a directory is refused unless the caller asks to ``resume`` it (the checkpoint's
config must match the requested one, except for settings that are safe to change on resume,
such as ``steps``) or to ``overwrite`` it, which moves the old run aside to
``<name>.old-<timestamp>`` — nothing is ever deleted. :func:`claim_run_dir` does all of it under
the directory's lock (:mod:`~entropy_dynamics.training.run_lock`), so one process owns a run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.config import LoggingConfig, TrainConfig
from entropy_dynamics.training.config_io import from_dict, to_dict
from entropy_dynamics.training.run_lock import RunLock

__all__ = [
    "SAFE_ON_RESUME",
    "RunDirectoryError",
    "check_run_dir",
    "claim_run_dir",
    "config_differences",
    "holds_run",
    "move_aside",
    "prepare_run_dir",
    "unsafe_differences",
    "unwritable",
]

SAFE_ON_RESUME = frozenset(
    {
        "steps",
        "name",
        "output_dir",
        "checkpoint_every",
        "keep_checkpoints",
        "tensorboard",
        "threads",
        "model.device",
        "eval.every",
        "logging",  # a run saved before the section existed
        *(f"logging.{f.name}" for f in fields(LoggingConfig)),
    }
)
"""Settings a resumed run may change: they decide how long and how visibly it runs, not what it
computes at each step."""


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked; the message says which commands would work."""


def unwritable(run_dir: str | Path) -> str | None:
    """Why ``run_dir`` cannot be created or written, or ``None``: checked without creating it,
    by creating and removing an empty probe directory in its nearest existing ancestor (so a
    place the permissions allow but the file system refuses, ``/proc/x`` or a read-only mount,
    is found too)."""
    run_dir = Path(run_dir).absolute()
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        return f"output_dir / name: {existing} is a file, so {run_dir} cannot be a run directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"output_dir / name: {existing} is not writable, so {run_dir} cannot be created"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".entropy-dynamics-probe-", dir=existing))
    except OSError as exc:
        return (
            f"output_dir / name: cannot create {run_dir}: {existing} refuses new entries "
            f"({exc.strerror or exc})"
        )
    return None


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` already holds (part of) a run."""
    run_dir = Path(run_dir)
    markers = ("config.yaml", "metrics.jsonl", "checkpoints")
    return any((run_dir / marker).exists() for marker in markers)


def move_aside(run_dir: str | Path) -> Path:
    """Rename ``run_dir`` to a free ``<name>.old-<timestamp>[-N]`` beside it; return that."""
    run_dir = Path(run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}"), 1
    while target.exists():
        target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}"), n + 1
    os.replace(run_dir, target)
    return target


def config_differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list:
    """``["key: old → new", ...]`` for every dotted key whose value differs (nested dicts)."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, f"{path}."))
        elif a != b:
            out.append(f"{path}: {a!r} → {b!r}")
    return out


def unsafe_differences(run_dir: Path, wanted: dict[str, Any]) -> list[str]:
    """The differences between the run in ``run_dir`` (its ``config.yaml``; none without one) and
    ``wanted`` that a resume may not make (outside :data:`SAFE_ON_RESUME`)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    saved = yaml.safe_load(path.read_text()) or {}
    # an older run's config.yaml gets the defaults of options added since (else as written)
    with contextlib.suppress(ConfigError, TypeError, ValueError):
        saved = to_dict(from_dict(TrainConfig, saved))
    return [d for d in config_differences(saved, wanted) if d.split(":")[0] not in SAFE_ON_RESUME]


def check_run_dir(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    has_checkpoint: bool,
    command: str = "entropy-dynamics train",
    damaged: list[str] | None = None,
) -> None:
    """Every refusal :func:`prepare_run_dir` makes, made without changing anything: the checks
    of a run's start and of ``train --dry-run`` alike
    (:func:`~entropy_dynamics.training.preflight.preflight`). ``damaged`` lists the checkpoints
    passed over (with why), for the message when none is left.

    Raises:
        RunDirectoryError: the directory cannot be created or written; it holds a run and
            neither ``resume`` nor ``overwrite`` was given; ``resume`` without a checkpoint, or
            with a config that differs in settings that are not :data:`SAFE_ON_RESUME` (the
            message names them); ``overwrite`` where the run cannot be moved aside.
    """
    run_dir = Path(run_dir)
    problem = unwritable(run_dir)
    if problem:
        raise RunDirectoryError(problem)
    if resume and overwrite:
        raise RunDirectoryError("--resume and --overwrite exclude each other; choose one")
    if resume:
        if not has_checkpoint:
            hint = (
                f"{run_dir} holds no complete checkpoint to resume (checkpoints are written every "
                "checkpoint_every steps, on Ctrl-C and at the end)"
                if holds_run(run_dir)
                else f"{run_dir} holds no run"
            )
            if damaged:
                hint = (
                    f"every checkpoint of {run_dir} is damaged, none can be resumed: "
                    + "; ".join(damaged)
                )
            fresh = f"{command} ... --overwrite"
            raise RunDirectoryError(f"--resume: {hint}; start afresh with: {fresh}")
        differences = unsafe_differences(run_dir, config)
        if differences:
            raise RunDirectoryError(
                f"--resume: {run_dir} holds a run of another config "
                f"({'; '.join(differences[:6])}); resume with the run's own settings (only "
                f"{', '.join(sorted(SAFE_ON_RESUME))} may change), or start a new run with "
                f"name=<new name>, or replace this one: {command} ... --overwrite"
            )
        return
    if not holds_run(run_dir):
        return
    if not overwrite:
        raise RunDirectoryError(
            f"{run_dir} already holds a run. Continue it: add --resume to your command "
            f"({command} ... --resume); or move it aside and start afresh: add --overwrite "
            f"({command} ... --overwrite); or give the new run another name=<name>"
        )
    parent = run_dir.absolute().parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirectoryError(
            f"--overwrite moves the run in {run_dir} aside to {run_dir.name}.old-<time> beside it, "
            f"but {parent} is not writable; make it writable, or give the new run another "
            "name=<name> (or output_dir=<dir>)"
        )


def prepare_run_dir(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    has_checkpoint: bool,
    command: str = "entropy-dynamics train",
    damaged: list[str] | None = None,
) -> str | None:
    """Make ``run_dir`` ready for a run of ``config`` (a nested dict) once
    :func:`check_run_dir` passes: create it, or move the run it holds aside (``overwrite``);
    return what was done.

    Raises:
        RunDirectoryError: as :func:`check_run_dir`, or the directory cannot be created or the
            old run cannot be moved.
    """
    run_dir = Path(run_dir)
    check_run_dir(
        run_dir, config, resume=resume, overwrite=overwrite, has_checkpoint=has_checkpoint,
        command=command, damaged=damaged,
    )  # fmt: skip
    if resume:
        return None
    if not holds_run(run_dir):
        try:  # created now, before any model is loaded: a bad output_dir fails at once
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirectoryError(f"output_dir / name: cannot create {run_dir}: {exc}") from None
        return None
    try:
        moved = move_aside(run_dir)
    except OSError as exc:
        raise RunDirectoryError(
            f"--overwrite could not move the run in {run_dir} aside ({exc.strerror or exc}); "
            "nothing was changed: give the new run another name=<name> (or output_dir=<dir>)"
        ) from None
    return f"moved the previous run in {run_dir} aside to {moved}"


def claim_run_dir(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    command: str = "entropy-dynamics train",
) -> tuple[RunLock, Path | None, str]:
    """Take ``run_dir`` for one run of ``config``: its lock first, then
    :func:`prepare_run_dir` (with the newest good checkpoint when resuming).

    Returns:
        ``(lock, checkpoint to resume or None, notice)``: the notice says which checkpoints were
        passed over as damaged and what was done (empty when nothing was). The caller releases
        the lock when the run ends (it also ends with the process).

    Raises:
        RunDirectoryError: as :func:`prepare_run_dir`, or the directory cannot be written.
        RunLockedError: another live process holds the run.
    """
    run_dir = Path(run_dir)
    problem = unwritable(run_dir)
    if problem:
        raise RunDirectoryError(problem)
    lock = RunLock(run_dir)
    try:
        notes: list[str] = [lock.taken_over] if lock.taken_over else []
        damaged: list[str] = []
        checkpoint = latest_checkpoint(run_dir, damaged) if resume else None
        done = prepare_run_dir(
            run_dir, config, resume=resume, overwrite=overwrite,
            has_checkpoint=checkpoint is not None, command=command, damaged=damaged,
        )  # fmt: skip
        if done:  # the old run (and its lock file) moved aside: lock the new directory
            lock.release()
            lock = RunLock(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock, checkpoint, "\n".join([*notes, *damaged, *([done] if done else [])])
