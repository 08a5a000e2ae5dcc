"""The run's random streams: training draws from torch's global generator, every side computation
from a seeded stream of its own.

Training (rollouts, data order) uses torch's global RNG, which checkpoints capture and restore for
an exact resume. Side computations — the validation evaluations during a run, the probe set of the
forecast, a final evaluation — sample too; drawn from the global stream they would shift every
later rollout, so that two runs differing only in how often they evaluate would be different
experiments. :func:`side_stream` runs them on a copy of the global state, reseeded, and puts the
training stream back untouched: a run's training metrics are bit-identical whatever its evaluation
settings, and an evaluation with a given seed samples the same stream whenever it runs (common
random numbers across the steps of one run: step-to-step differences carry less sampling noise).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["side_stream"]


@contextmanager
def side_stream(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Inside: torch's global generators (CPU, and ``device``'s when it is CUDA) seeded with
    ``seed``; after: exactly as before, whatever was drawn inside."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
