"""Metric values and sinks: one JSON line per step, TensorBoard scalars.

Metric keys are slash-namespaced (``entropy/mean``, ``clip_b/frac_clipped``,
``dynamics/delta_h_actual``). Library code returns metrics as tensors; :func:`to_floats` is the
single place where they are synchronised to Python floats, once per step.
"""

from __future__ import annotations

import json
import math
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
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


class MetricsWriter:
    """Append step metrics to ``run_dir/metrics.jsonl`` and (optionally) TensorBoard events.

    On resume from step ``s``, lines of steps after ``s`` (written after the checkpoint) are
    dropped so the file holds exactly one line per step, as an uninterrupted run would.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step > 0 and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif self.path.exists():
            self.path.unlink()
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
