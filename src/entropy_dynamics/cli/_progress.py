"""What a training run and a grid of runs show while they run: a live bar on a terminal; elsewhere
(``nohup``, slurm, a pipe) plain lines — a run's every ``every`` steps or ``seconds``, a grid's
when a run starts, ends or fails; with ``quiet``, nothing per step."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from entropy_dynamics.cli._console import console, notice

__all__ = ["GridProgress", "TrainDisplay", "eval_cells", "eval_labels", "grid_display"]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eval_labels(keys) -> list[tuple[str, str]]:
    """``(key, label)`` of the ``eval/*`` ``keys``, Avg@k and Pass@k first; Avg@k and Pass@1 —
    equal by construction (the unbiased Pass@1 is the mean correct rate) — as one entry,
    ``avg@k = pass@1``."""
    keys = [k for k in dict.fromkeys(keys) if k.startswith("eval/")]
    scores = sorted(
        (k for k in keys if "@" in k),
        key=lambda k: (k.startswith("eval/pass@"), int(k.split("@")[1])),
    )
    avg = next((k for k in scores if k.startswith("eval/avg@")), None)
    merged = avg is not None and "eval/pass@1" in keys
    return [
        (key, key[5:] + (" = pass@1" if merged and key == avg else ""))
        for key in [*scores, *sorted(k for k in keys if "@" not in k)]
        if not (merged and key == "eval/pass@1")
    ]


def eval_cells(metrics: dict[str, float]) -> list[tuple[str, float]]:
    """``(label, value)`` of the ``eval/*`` scores in ``metrics`` (:func:`eval_labels`)."""
    return [(label, metrics[key]) for key, label in eval_labels(metrics)]


class TrainDisplay:
    """Progress of steps ``start + 1 .. total``; use as a context manager and tell it of each
    :meth:`step` and evaluation (:meth:`evaluating`, :meth:`evaluated`).

    Time per step excludes the evaluations (the step-0 one included); the ETA is the remaining
    steps at that rate plus the remaining evaluations (every ``eval_every`` steps and at the
    end) at the mean time of those seen. ``reward_is_accuracy``: the task's reward is its
    accuracy by construction, so ``reward=`` is not printed beside ``acc=``.
    """

    def __init__(self, total: int, start: int, quiet: bool = False, every: int = 10,
                 seconds: float = 30.0, *, eval_every: int = 0, reward_is_accuracy: bool = False,
                 clock=time.monotonic) -> None:  # fmt: skip
        self.total, self.start, self.quiet = total, start, quiet
        self.every, self.seconds, self.eval_every = max(every, 1), seconds, eval_every
        self.reward_is_accuracy, self.clock = reward_is_accuracy, clock
        self.live = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._began = self._printed = clock()
        self._eval_began: float | None = None
        self._eval_time, self._evals = 0.0, 0

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[timing]}"),
                TextColumn("{task.fields[status]}"),
                console=console,
            )
            self._progress.start()
            self._bar = self._progress.add_task(
                "train", total=self.total, completed=self.start, status="", timing=""
            )
        self._began = self._printed = self.clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def evaluating(self, step: int) -> None:
        """An evaluation of the validation split begins after ``step``."""
        self._eval_began = self.clock()
        if self._progress is not None:
            status = "evaluating (validation split)"
            self._progress.update(self._bar, status=status, refresh=True)
        elif not self.quiet:
            console.print(f"step {step}/{self.total} | evaluating (validation split)",
                          highlight=False, soft_wrap=True)  # fmt: skip

    def evaluated(self, step: int, metrics: dict[str, float]) -> None:
        """An evaluation's results (``eval/*`` in ``metrics``): one line as they come."""
        if self._eval_began is not None:
            self._eval_time += self.clock() - self._eval_began
            self._evals += 1
            self._eval_began = None
        cells = [(n, v) for n, v in eval_cells(metrics) if "@" in n or n == "entropy"]
        if cells and not self.quiet:
            text = " ".join(f"{name.replace(' = ', '=')}={value:.3f}" for name, value in cells)
            console.print(f"step {step}/{self.total} | validation: {text}", highlight=False,
                          soft_wrap=True)  # fmt: skip

    def _evals_left(self, step: int) -> int:
        if self.eval_every <= 0:
            return 0
        return sum(1 for s in range(step + 1, self.total + 1)
                   if s % self.eval_every == 0 or s == self.total)  # fmt: skip

    def timing(self, step: int) -> tuple[float, float]:
        """``(seconds per training step, seconds left)`` after ``step``, evaluations apart."""
        now = self.clock()
        pending = now - self._eval_began if self._eval_began is not None else 0.0
        training = now - self._began - self._eval_time - pending
        per_step = max(training, 0.0) / max(step - self.start, 1)
        per_eval = self._eval_time / self._evals if self._evals else 0.0
        return per_step, per_step * (self.total - step) + per_eval * self._evals_left(step)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        if any(k.startswith("eval/") for k in metrics):
            self.evaluated(step, metrics)
        status = (
            f"H={metrics.get('entropy/mean', float('nan')):.3f} "
            f"acc={metrics.get('reward/accuracy', float('nan')):.3f} "
            f"ΔH={metrics.get('dynamics/delta_h_actual', float('nan')):+.2e}"
        )
        per_step, left = self.timing(step)
        if self._progress is not None:
            timing = f"ETA {_duration(left)} {per_step:.2f} s/step"
            self._progress.update(self._bar, completed=step, status=status, timing=timing)
            return
        now = self.clock()
        due = step in (self.start + 1, self.total) or step % self.every == 0
        if self.quiet or not (due or now - self._printed >= self.seconds):
            return
        self._printed = now
        kept = metrics.get("actor/frac_kept")
        reward = "" if self.reward_is_accuracy else (
            f" | reward={metrics.get('reward/mean', float('nan')):.3f}"
        )
        console.print(
            f"step {step}/{self.total} | {per_step:.2f} s/step | ETA {_duration(left)} | "
            f"{status}{reward}" + ("" if kept is None else f" | kept={kept:.1%}"),
            highlight=False,
            soft_wrap=True,
        )


class GridProgress:
    """Progress of a grid: on a terminal one bar for the whole grid and one per run in
    progress; elsewhere (``nohup``, slurm, a pipe) a plain line when a run starts, reaches its
    final evaluation, ends, is skipped or fails, and one every ``seconds`` per run while it
    trains."""

    def __init__(self, progress: Progress | None, total: int, seconds: float = 60.0):
        self.progress, self.total, self.seconds = progress, total, seconds
        self.overall = progress.add_task("[bold]grid", total=total, status="") if progress else None
        self.bars: dict[str, TaskID] = {}
        self.failed: list[str] = []
        self.ended = 0
        self._printed: dict[str, float] = {}

    def __call__(self, event) -> None:
        if event.kind in ("done", "skipped", "failed"):
            self.ended += 1
        if event.kind == "failed":
            self.failed.append(event.run)
            notice(f"{event.run}: {event.message}", label="failed", style="red")
        if self.progress is None:
            self._line(event)
        else:
            self._bar(event)

    def _status(self, metrics) -> str:
        return (
            f"H={metrics.get('entropy/mean', float('nan')):.3f} "
            f"acc={metrics.get('reward/accuracy', float('nan')):.3f}"
        )

    def _line(self, event) -> None:
        name, now = event.run, time.monotonic()
        if event.kind == "step":
            if now - self._printed.get(name, now) < self.seconds and event.step < event.total:
                return
            text = f"step {event.step}/{event.total} | {self._status(event.metrics)}"
        elif event.kind == "start":
            text = "started" + (f" (resumed at step {event.step})" if event.step else "")
        else:
            text = {
                "evaluate": "final evaluation",
                "done": "done",
                "skipped": "skipped (already complete)",
            }.get(event.kind)
            if text is None:  # failed: said on stderr
                return
        self._printed[name] = now
        console.print(f"[{self.ended}/{self.total}] {name}: {text}", highlight=False,
                      soft_wrap=True)  # fmt: skip

    def _bar(self, event) -> None:
        progress, name = self.progress, event.run
        if event.kind == "start":
            self.bars[name] = progress.add_task(
                name, total=event.total, completed=event.step, status=""
            )
        elif event.kind == "step" and name in self.bars:
            status = self._status(event.metrics)
            progress.update(self.bars[name], completed=event.step, status=status)
        elif event.kind == "evaluate" and name in self.bars:
            progress.update(self.bars[name], status="final evaluation")
        elif event.kind in ("done", "skipped", "failed"):
            if name in self.bars:
                progress.remove_task(self.bars.pop(name))
            if event.kind == "skipped":
                progress.console.print(f"[dim]skipped {name} (already complete)[/]")
            progress.advance(self.overall)


@contextmanager
def grid_display(total: int):
    if not console.is_terminal:
        yield GridProgress(None, total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console) as progress:
        yield GridProgress(progress, total)
