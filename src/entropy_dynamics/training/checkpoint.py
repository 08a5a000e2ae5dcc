"""Atomic, verified checkpoints for exact resume: model, optimizer, scheduler, RNG, data position.

Layout of ``run_dir/checkpoints/step_000042/``: ``model/`` (an ordinary Hugging Face directory,
loadable by any tool), ``trainer_state.pt`` (optimizer, scheduler, RNG states, data position,
step), ``trainer_state.json`` (the same step, the hash of the run's config and the metrics
history up to it, for people and tools; resuming never reads it) and ``checksums.json`` (SHA-256
of every other file). A checkpoint is written to a temporary
directory and renamed into place, so an interrupted write never leaves a half checkpoint behind;
``latest`` names the newest complete one.

Safety: ``trainer_state.pt`` holds tensors and plain Python values only and is read with
``torch.load(..., weights_only=True)``, so a crafted file cannot run code on ``--resume``; anything
else is refused. A checkpoint whose files do not match its checksums (a disk error, a copy cut
short) is passed over for the previous good one, and the caller is told.

The finished run's model is also exported to ``run_dir/model/`` (:func:`export_model`, as TRL's
``save_model``): the directory a user loads, evaluates or fine-tunes further.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKSUM_FILE",
    "READABLE_STATE_FILE",
    "CheckpointError",
    "capture_rng_state",
    "config_hash",
    "export_model",
    "latest_checkpoint",
    "load_checkpoint",
    "readable_state",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
]

CHECKSUM_FILE = "checksums.json"
READABLE_STATE_FILE = "trainer_state.json"
_STATE_FILE = "trainer_state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read; the message says which file and why."""


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (``weights_only`` can read them back)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _checksums(directory: Path) -> dict[str, str]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)
    return {str(p.relative_to(directory)): _digest(p) for p in files}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a run's config (a nested dict), keys sorted: equal configs, equal hashes."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def readable_state(step: int, config: dict[str, Any], metrics_file: Path) -> dict[str, Any]:
    """``trainer_state.json``'s content: ``step``, ``config_hash`` (:func:`config_hash`) and
    ``log_history``, the rows of ``metrics_file`` up to ``step`` (none if it does not exist;
    a torn last line is left out)."""
    rows = []
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                rows.append(row)
    return {"step": step, "config_hash": config_hash(config), "log_history": rows}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
    readable: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` checkpoints. ``readable``
    (:func:`readable_state`) is written beside the binary state as ``trainer_state.json``."""
    run_dir = Path(run_dir)
    final = _step_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars inside our progress display
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        torch.save({**trainer_state, "step": step, "rng": capture_rng_state()}, tmp / _STATE_FILE)
        if readable is not None:  # NaN as null: valid JSON for every parser
            text = json.dumps(_nan_as_null(readable), indent=1, allow_nan=False)
            (tmp / READABLE_STATE_FILE).write_text(text + "\n")
        (tmp / CHECKSUM_FILE).write_text(json.dumps(_checksums(tmp), indent=1))
    except (OSError, RuntimeError) as exc:
        if not _out_of_space(exc):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # the last good checkpoint stays as it was
        raise CheckpointError(_out_of_space_message(run_dir, step)) from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = run_dir / "checkpoints" / "latest"
    pointer_tmp = pointer.with_name("latest.tmp")
    pointer_tmp.write_text(final.name + "\n")
    os.replace(pointer_tmp, pointer)
    complete = sorted(p for p in final.parent.glob("step_*") if not p.name.endswith(".tmp"))
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _nan_as_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_as_null(v) for v in value]
    return value


def export_model(run_dir: str | Path, model: Any, tokenizer: Any) -> Path:
    """Save ``model`` and ``tokenizer`` to ``run_dir/model/`` (``save_pretrained``), written
    aside and renamed into place, replacing an earlier export of the same run."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    final = Path(run_dir) / "model"
    tmp = final.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _out_of_space(exc):
            raise
        raise CheckpointError(f"{final}: no space left to export the final model") from None
    if final.exists():
        old = final.with_name("model.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def _out_of_space(exc: BaseException) -> bool:
    """A full disk, as the OS says it (``ENOSPC``, ``EDQUOT``) or as torch's zip writer does
    (``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return "unexpected pos" in text or "No space left" in text


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _out_of_space_message(run_dir: Path, step: int) -> str:
    latest = latest_checkpoint(run_dir)
    last = f"the last good checkpoint is {latest.name}" if latest else "no checkpoint was written"
    return (
        f"no space left on the device mounted at {_mount_point(run_dir)} while writing the "
        f"checkpoint of step {step} of {run_dir} (nothing half-written was left); {last}. "
        "Free some space, then continue with --resume"
    )


def verify_checkpoint(path: str | Path) -> str | None:
    """``None`` if every file of checkpoint ``path`` matches ``checksums.json``, else why not."""
    path = Path(path)
    listing = path / CHECKSUM_FILE
    if not (path / _STATE_FILE).is_file():
        return f"{path / _STATE_FILE} is missing"
    if not listing.is_file():
        return f"{listing} is missing (a checkpoint of an older version, or a partial copy)"
    try:
        expected = json.loads(listing.read_text())
    except json.JSONDecodeError as exc:
        return f"{listing} is not JSON ({exc.msg})"
    actual = _checksums(path)
    if actual != expected:
        bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        return f"{path}: files differ from their checksums ({', '.join(bad[:4])})"
    return None


def latest_checkpoint(run_dir: str | Path, notes: list[str] | None = None) -> Path | None:
    """The newest verified checkpoint of a run, or ``None``; each checkpoint passed over (with
    the reason) is appended to ``notes``."""
    directory = Path(run_dir) / "checkpoints"
    candidates = sorted(
        (p for p in directory.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")),
        reverse=True,
    )
    for candidate in candidates:
        problem = verify_checkpoint(candidate)
        if problem is None:
            return candidate
        if notes is not None:
            notes.append(f"passed over checkpoint {candidate.name}: {problem}")
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The trainer state saved in checkpoint ``path`` (its ``model/`` is loaded separately).

    Raises:
        CheckpointError: the state file holds anything but tensors and plain values (it could
            run code when unpickled), or cannot be read.
    """
    state_file = Path(path) / _STATE_FILE
    try:
        return torch.load(state_file, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as exc:
        raise CheckpointError(
            f"{state_file}: refused — it is not a plain state file of tensors and numbers "
            f"(loading it could run code), or it is damaged: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
