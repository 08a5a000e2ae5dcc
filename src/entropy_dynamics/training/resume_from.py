"""``train --resume-from PATH``: continue a chosen checkpoint, not only a run's newest one.

- ``PATH`` is a checkpoint directory (``runs/NAME/checkpoints/step_000042``) or a run directory
  (its newest good checkpoint); it must pass its checksums
  (:func:`~entropy_dynamics.training.checkpoint.verify_checkpoint`);
- the newest checkpoint of the run being resumed: the same as ``--resume``;
- any other checkpoint continues into a *new* run directory (another ``name``, or ``--overwrite``
  of an existing one), which starts with the source run's metrics up to the checkpoint's step
  (and its forecast probe set, if any). Resuming an older checkpoint inside its own run would
  replace that run's later metrics and checkpoints, so it is refused with the command that
  works — nothing a user has is replaced without being asked;
- the config must match the source run's as for ``--resume``
  (:data:`~entropy_dynamics.training.run_dir.SAFE_ON_RESUME` may change).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from entropy_dynamics.training.checkpoint import latest_checkpoint, verify_checkpoint
from entropy_dynamics.training.run_dir import (
    SAFE_ON_RESUME,
    RunDirectoryError,
    claim_run_dir,
    unsafe_differences,
)
from entropy_dynamics.training.run_lock import RunLock

__all__ = ["claim", "claim_from_checkpoint", "resolve_checkpoint"]


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``path`` names: itself, or a run directory's newest good one.

    Raises:
        RunDirectoryError: no such checkpoint, or it fails its checksums (the message says why).
    """
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise RunDirectoryError(f"--resume-from: {path} holds no complete checkpoint")
        return found
    if not path.is_dir():
        raise RunDirectoryError(
            f"--resume-from: {path} is neither a checkpoint (runs/NAME/checkpoints/step_N) nor a "
            "run directory"
        )
    problem = verify_checkpoint(path)
    if problem:
        raise RunDirectoryError(f"--resume-from: {path} cannot be resumed: {problem}")
    return path


def _step_of(checkpoint: Path) -> int:
    try:
        return int(checkpoint.name.removeprefix("step_"))
    except ValueError:
        raise RunDirectoryError(
            f"--resume-from: {checkpoint} is not named step_N as checkpoints are"
        ) from None


def claim_from_checkpoint(
    run_dir: str | Path,
    config: dict[str, Any],
    path: str | Path,
    *,
    overwrite: bool = False,
    command: str = "entropy-dynamics train",
) -> tuple[RunLock, Path, str]:
    """Take ``run_dir`` for a run of ``config`` that continues checkpoint ``path``.

    Returns:
        ``(lock, checkpoint, notice)`` as :func:`~entropy_dynamics.training.run_dir.claim_run_dir`.

    Raises:
        RunDirectoryError: the checkpoint cannot be resumed, the config differs from its run's,
            it is an older checkpoint of ``run_dir`` itself, or ``run_dir`` holds another run
            and ``overwrite`` was not given.
    """
    run_dir, checkpoint = Path(run_dir), resolve_checkpoint(path)
    source = checkpoint.parent.parent  # runs/NAME/checkpoints/step_N → runs/NAME
    if source.resolve() == run_dir.resolve():
        newest = latest_checkpoint(run_dir)
        if newest is None or newest.resolve() != checkpoint.resolve():
            raise RunDirectoryError(
                f"--resume-from: {checkpoint} is an older checkpoint of {run_dir}; continuing it "
                "there would replace the run's later metrics and checkpoints. Continue it as a "
                f"new run: {command} ... name=<new name> --resume-from {checkpoint}"
            )
        return claim_run_dir(run_dir, config, resume=True, overwrite=False, command=command)
    differences = unsafe_differences(source, config)
    if differences:
        raise RunDirectoryError(
            f"--resume-from: {checkpoint} belongs to a run of another config "
            f"({'; '.join(differences[:6])}); resume with that run's settings (only "
            f"{', '.join(sorted(SAFE_ON_RESUME))} may change)"
        )
    lock, _, notice = claim_run_dir(
        run_dir, config, resume=False, overwrite=overwrite, command=command
    )
    try:
        _carry_over(source, run_dir, _step_of(checkpoint))
    except BaseException:
        lock.release()
        raise
    said = f"continuing from checkpoint {checkpoint} (step {_step_of(checkpoint)} of {source})"
    return lock, checkpoint, "\n".join(filter(None, [notice, said]))


def _carry_over(source: Path, run_dir: Path, step: int) -> None:
    """Start ``run_dir`` with ``source``'s metrics up to ``step`` and its forecast probe set."""
    from entropy_dynamics.training.forecast import PROBE_FILE

    metrics = source / "metrics.jsonl"
    if metrics.is_file():
        kept = []
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line
                continue
            if row.get("step", 0) <= step:
                kept.append(json.dumps(row) + "\n")
        (run_dir / "metrics.jsonl").write_text("".join(kept))
    if (source / PROBE_FILE).is_file():
        shutil.copy2(source / PROBE_FILE, run_dir / PROBE_FILE)


def claim(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    path: str | Path | None = None,
) -> tuple[RunLock, Path | None, str]:
    """The trainer's claim on ``run_dir``: :func:`claim_from_checkpoint` of ``path`` when one is
    given, else :func:`~entropy_dynamics.training.run_dir.claim_run_dir`."""
    if path is not None:
        return claim_from_checkpoint(run_dir, config, path, overwrite=overwrite)
    return claim_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
