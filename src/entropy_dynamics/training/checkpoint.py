"""Atomic checkpoints for exact resume: model, optimizer, scheduler, RNG states, data position.

Layout of ``run_dir/checkpoints/step_000042/``: ``model/`` (an ordinary Hugging Face directory,
loadable by any tool) and ``trainer_state.pt`` (optimizer, scheduler, RNG states, data position,
step). A checkpoint is written to a temporary directory and renamed into place, so an interrupted
write never leaves a half checkpoint behind; ``latest`` names the newest complete one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "capture_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    final = _step_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars inside our progress display
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    torch.save(
        {**trainer_state, "step": step, "rng": capture_rng_state()}, tmp / "trainer_state.pt"
    )
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


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or ``None``."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").is_file() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The trainer state saved in checkpoint ``path`` (its ``model/`` is loaded separately)."""
    return torch.load(Path(path) / "trainer_state.pt", weights_only=False)
