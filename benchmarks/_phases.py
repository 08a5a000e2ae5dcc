"""Where a training step's time goes: wall time per named phase, measured by wrapping the functions
that do each phase (the code under test is not changed).

A phase entered inside another pauses the outer one (exclusive times: the loss pass's backward is
``backward``, not ``forward + loss``), so the phases and ``other`` add up to the step.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Phases"]


class Phases:
    """Exclusive time per phase, step by step."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.mark = 0.0
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.step_start: float | None = None

    def _switch(self, now: float) -> None:
        if self.stack:
            self.current[self.stack[-1]] += now - self.mark
        self.mark = now

    def enter(self, phase: str) -> None:
        self._switch(time.perf_counter())
        self.stack.append(phase)

    def leave(self) -> None:
        self._switch(time.perf_counter())
        self.stack.pop()

    def begin_step(self) -> None:
        self.current = defaultdict(float)
        self.step_start = time.perf_counter()

    def end_step(self) -> None:
        total = time.perf_counter() - self.step_start
        phases = dict(self.current)
        phases["other"] = total - sum(phases.values())
        phases["step"] = total
        self.steps.append(phases)

    def _wrapped(self, function, phase: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self.enter(phase)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave()

        return timed

    @contextmanager
    def patched(self, targets: list[tuple[Any, str, str]]) -> Iterator[Phases]:
        """Inside: each ``(owner, attribute, phase)`` function timed as ``phase``."""
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
        try:
            for (owner, name, phase), (_, _, function) in zip(targets, saved, strict=True):
                setattr(owner, name, self._wrapped(function, phase))
            yield self
        finally:
            for owner, name, function in saved:
                setattr(owner, name, function)

    def medians(self, skip: int = 0) -> dict[str, float]:
        """Median seconds per step of every phase over the steps after the first ``skip``."""
        steps = self.steps[skip:]
        names = sorted({name for step in steps for name in step})
        return {name: statistics.median(step.get(name, 0.0) for step in steps) for name in names}
