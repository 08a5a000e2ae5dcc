"""Metric values and sinks: one JSON line per step, TensorBoard scalars.

Metric keys are slash-namespaced (``entropy/mean``, ``clip_b/frac_clipped``,
``dynamics/delta_h_actual``). Library code returns metrics as tensors; :func:`to_floats` is the
single place where they are synchronised to Python floats, once per step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["MetricsWriter", "read_metrics", "to_floats"]


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Convert tensors / numbers to floats (non-finite values become ``nan``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().item()  # float64 metrics keep their digits
        value = float(value)
        out[key] = value if math.isfinite(value) else float("nan")
    return out


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a ``metrics.jsonl`` file; a malformed line is an error naming file and line."""
    path = Path(path)
    return _parse(path.read_text().splitlines(), path)


def _parse(lines: list[str], path: Path) -> list[dict[str, float]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def _rows_before_a_torn_end(path: Path) -> list[dict[str, float]]:
    """The rows of ``path``; a last line cut short by a kill during its write is dropped, any
    other malformed line is an error."""
    lines = path.read_text().splitlines()
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return _parse(lines, path)


class MetricsWriter:
    """Append step metrics to ``run_dir/metrics.jsonl`` and (optionally) TensorBoard events.

    On resume from step ``s``, lines of steps after ``s`` (written after the checkpoint) and a line
    torn by a kill are dropped, so the file holds exactly one line per step, as an uninterrupted
    run would; each line is flushed as it is written. A fresh writer never replaces a file that
    holds metrics (:class:`FileExistsError`).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step > 0 and self.path.exists():
            rows = _rows_before_a_torn_end(self.path)
            kept = [r for r in rows if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name("metrics.jsonl.tmp")  # atomic: a kill keeps the old file
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step == 0 and self.path.exists() and self.path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.path} already holds metrics of a run; resume that run or move it aside "
                "(Trainer's overwrite) — it is never deleted"
            )
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: JSONL only
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(
                    log_dir=str(self.run_dir / "tensorboard"),
                    purge_step=resume_step + 1 if resume_step else None,
                )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": step, **metrics}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
