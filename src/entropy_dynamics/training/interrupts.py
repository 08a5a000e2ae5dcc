"""Stop a run cleanly on SIGINT / SIGTERM: finish the step, checkpoint, then say how to resume.

The first signal only sets a flag that the training loop reads after each step; the loop then
writes a checkpoint and raises :class:`TrainingInterrupted`. A second signal is not caught again:
Ctrl-C twice stops at once (Python's own ``KeyboardInterrupt``), a second SIGTERM terminates.
Handlers are installed on the main thread only (elsewhere Python cannot take signals), and the
previous ones are restored when the run ends.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

__all__ = ["StopRequests", "TrainingInterrupted"]

_SIGNALS = ("SIGINT", "SIGTERM")


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by a signal after a clean checkpoint.

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        step: the last completed step.
        checkpoint: the checkpoint written for it.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal_name} at step {step}; checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + int(getattr(signal, self.signal_name))


class StopRequests:
    """Context manager recording the first SIGINT / SIGTERM in :attr:`requested`."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        for number, handler in self._previous.items():  # a second signal acts at once
            signal.signal(number, handler)  # type: ignore[arg-type]

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous = {}
