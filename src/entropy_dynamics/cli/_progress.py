"""What a training run shows while it runs: a live bar on a terminal; elsewhere (``nohup``, slurm,
a pipe) one plain line every ``every`` steps or ``seconds``; with ``quiet``, nothing per step."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from entropy_dynamics.cli._console import console

__all__ = ["TrainDisplay"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainDisplay:
    """Progress of steps ``start + 1 .. total``; use as a context manager, call :meth:`step`."""

    def __init__(self, total: int, start: int, quiet: bool = False, every: int = 10,
                 seconds: float = 30.0) -> None:  # fmt: skip
        self.total, self.start, self.quiet = total, start, quiet
        self.every, self.seconds = max(every, 1), seconds
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._began = self._printed = time.monotonic()

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=console,
            )
            self._progress.start()
            self._bar = self._progress.add_task(
                "train", total=self.total, completed=self.start, status=""
            )
        self._began = self._printed = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def step(self, step: int, metrics: dict[str, float]) -> None:
        status = (
            f"H={metrics.get('entropy/mean', float('nan')):.3f} "
            f"acc={metrics.get('reward/accuracy', float('nan')):.3f} "
            f"ΔH={metrics.get('dynamics/delta_h_actual', float('nan')):+.2e}"
        )
        if self._progress is not None:
            self._progress.update(self._bar, completed=step, status=status)
            return
        now = time.monotonic()
        due = step in (self.start + 1, self.total) or step % self.every == 0
        if self.quiet or not (due or now - self._printed >= self.seconds):
            return
        self._printed = now
        per_step = (now - self._began) / max(step - self.start, 1)
        kept = metrics.get("actor/frac_kept")
        console.print(
            f"step {step}/{self.total} | {per_step:.2f} s/step | "
            f"ETA {_duration(per_step * (self.total - step))} | {status} | "
            f"reward={metrics.get('reward/mean', float('nan')):.3f}"
            + ("" if kept is None else f" | kept={kept:.1%}"),
            highlight=False,
            soft_wrap=True,
        )
