"""Running a grid of training runs: methods × seeds × swept config values, one run directory each.

``run_grid(["grpo", "clip_b"], [0, 1, 2], {"optim.lr": ["1e-4", "2e-4"]})`` plans one run per
combination (:mod:`entropy_dynamics.study.grid`: names, scoped sweeps, validated configs) and runs
them sequentially or in worker processes (``spawn``; each worker runs whole runs). The grid is
resumable: a run whose newest checkpoint is its last step and whose ``metrics.jsonl`` holds every
step exactly once is skipped; a run with an earlier checkpoint is resumed from it (the trainer's
resume is exact); a run without a checkpoint starts afresh, its leftovers moved aside to
``<name>.old-<timestamp>`` (never deleted). A run directory that holds a run of a
*different* config is refused rather than silently mixed.

After training, each run's final model is evaluated once more, on the test split and on the
validation split, and the per-problem pass counts are written to ``final_eval.json`` (the test
record, the validation record beside it: results are read from the first, a sweep's choice from
the second; the report's pass-rate histogram needs the counts).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from entropy_dynamics.study.evaluation import final_eval_current, final_evaluation
from entropy_dynamics.study.grid import RunSpec, parse_grid_args, plan_grid, split_top_level
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.run_dir import config_differences

__all__ = [
    "ORPHAN_GRACE_S",
    "RunEvent",
    "RunResult",
    "RunSpec",
    "final_evaluation",
    "metrics_complete",
    "parse_grid_args",
    "plan_grid",
    "run_grid",
    "run_status",
    "split_top_level",
    "stop_when_orphaned",
]

MANIFEST_FILE = "grid.json"


@dataclass
class RunEvent:
    """Progress of one run: ``kind`` is start, step, evaluate, done, skipped or failed."""

    run: str
    kind: str
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class RunResult:
    """Outcome of one run: ``status`` is completed, resumed, skipped or failed."""

    name: str
    run_dir: Path
    status: str
    error: str = ""


Progress = Callable[[RunEvent], None]


def _checkpoint_step(run_dir: Path) -> int | None:
    from entropy_dynamics.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    return None if checkpoint is None else int(checkpoint.name.rsplit("_", 1)[-1])


def metrics_complete(run_dir: str | Path, steps: int, eval_at_start: bool) -> bool:
    """``metrics.jsonl`` holds steps ``1..steps`` (and step 0 iff ``eval_at_start``) once each."""
    from entropy_dynamics.training.metrics import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    try:
        logged = [int(row["step"]) for row in read_metrics(path)]
    except (OSError, ValueError, KeyError):
        return False
    expected = list(range(0 if eval_at_start else 1, steps + 1))
    return logged == expected


def run_status(spec: RunSpec) -> str:
    """``new``, ``partial`` (resume it) or ``done``; refuses a directory of another config."""
    config, run_dir = spec.config, spec.run_dir
    step = _checkpoint_step(run_dir)
    if step is None:
        return "new"
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text()) or {}
        diffs = [  # more steps extend a finished run
            d for d in config_differences(saved, to_dict(config)) if not d.startswith("steps:")
        ]
        if diffs:
            raise ValueError(
                f"{run_dir} holds a run of a different config ({'; '.join(diffs[:4])}); choose "
                "another output directory or delete that run directory"
            )
    if step > config.steps:
        raise ValueError(
            f"{run_dir} already has {step} steps but steps={config.steps}; raise steps or use "
            "another output directory"
        )
    if step < config.steps:
        return "partial"
    return "done" if metrics_complete(run_dir, step, config.eval.every > 0) else "new"


def execute_run(spec: RunSpec, progress: Progress | None = None, final_eval: bool = True):
    """Run (or resume, or skip) one planned run; exceptions propagate."""
    from entropy_dynamics.training.trainer import Trainer

    emit = progress or (lambda event: None)
    config, run_dir = spec.config, spec.run_dir
    status = run_status(spec)
    trainer = None
    if status == "done":
        emit(RunEvent(spec.name, "skipped", config.steps, config.steps))
    else:
        # a "new" run's leftovers (no checkpoint yet) are moved aside, never deleted
        trainer = Trainer(config, run_dir, resume=status == "partial", overwrite=status == "new")
        emit(RunEvent(spec.name, "start", trainer.step, config.steps))
    try:  # the run's lock is held through its final evaluation
        if trainer is not None:

            def callback(event: str, step: int, metrics: dict[str, float]) -> None:
                if event == "step":
                    emit(RunEvent(spec.name, "step", step, config.steps, metrics))

            trainer.train(callback)
        if final_eval and not final_eval_current(run_dir, config.steps):
            emit(RunEvent(spec.name, "evaluate", config.steps, config.steps))
            final_evaluation(run_dir, config, trainer.setup if trainer else None)
    finally:
        if trainer is not None:
            trainer.close()
    result = {"done": "skipped", "partial": "resumed", "new": "completed"}[status]
    if trainer is not None:
        emit(RunEvent(spec.name, "done", config.steps, config.steps))
    return RunResult(spec.name, run_dir, result)


_WORKER_QUEUE: Any = None

ORPHAN_GRACE_S = 120.0
"""Seconds a worker whose grid process has gone gets to stop its run cleanly before it exits."""


def stop_when_orphaned(parent: int, poll_s: float = 1.0, grace_s: float = ORPHAN_GRACE_S) -> None:
    """Watch (on a worker's thread) for the grid process ``parent`` to go — killed, or its
    terminal closed — and then stop: SIGTERM to this worker, which a run in progress takes as a
    clean stop (the step finished, a checkpoint written: a rerun of the grid resumes it), then
    exit after ``grace_s`` seconds whatever the worker does. Without it an orphaned worker waits
    forever for the next run from a parent that is no more."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)


def _init_worker(events, threads: int, parent: int) -> None:
    global _WORKER_QUEUE
    _WORKER_QUEUE = events
    threading.Thread(target=stop_when_orphaned, args=(parent,), daemon=True).start()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _worker_run(args: tuple[RunSpec, bool]) -> RunResult:
    spec, final_eval = args
    try:
        return execute_run(spec, _WORKER_QUEUE.put, final_eval)
    except Exception as exc:
        _WORKER_QUEUE.put(RunEvent(spec.name, "failed", 0, spec.config.steps, message=str(exc)))
        return RunResult(spec.name, spec.run_dir, "failed", traceback.format_exc())


def write_manifest(output_dir: str | Path, specs: Sequence[RunSpec]) -> Path:
    """``grid.json``: every planned run's name, method, seed and swept values."""
    path = Path(output_dir) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = [{"name": s.name, "method": s.method, "seed": s.seed, "sweep": s.sweep} for s in specs]
    path.write_text(json.dumps({"runs": runs}, indent=1))
    return path


def run_grid(
    methods: Sequence[str],
    seeds: Sequence[int],
    sweeps: Mapping[str, Sequence[str]] | None = None,
    base_overrides: Sequence[str] = (),
    output_dir: str | Path = "runs",
    workers: int = 1,
    progress: Progress | None = None,
    *,
    config_path: str | Path | None = None,
    final_eval: bool = True,
) -> list[RunResult]:
    """Plan (see :func:`plan_grid`) and run the grid; return one :class:`RunResult` per run.

    Every run's config and existing directory are checked before any training starts. With
    ``workers > 1`` runs go to that many ``spawn`` processes (each with ``cpu_count // workers``
    torch threads unless the config sets ``threads``); ``progress`` receives every
    :class:`RunEvent` in this process (a script that calls this with workers needs an
    ``if __name__ == "__main__":`` guard, as for any spawned process). A failed run is reported
    (status ``failed`` with its traceback) and the others go on; ``KeyboardInterrupt`` stops the
    grid, and a rerun resumes it.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    specs = plan_grid(methods, seeds, sweeps, base_overrides, output_dir, config_path)
    for spec in specs:
        run_status(spec)  # refuse a directory of another config before any work
    write_manifest(output_dir, specs)
    emit = progress or (lambda event: None)
    if workers == 1 or len(specs) == 1:
        results = []
        for spec in specs:
            try:
                results.append(execute_run(spec, emit, final_eval))
            except Exception as exc:
                emit(RunEvent(spec.name, "failed", 0, spec.config.steps, message=str(exc)))
                results.append(RunResult(spec.name, spec.run_dir, "failed", traceback.format_exc()))
        return results
    return _run_parallel(specs, min(workers, len(specs)), emit, final_eval)


def _run_parallel(specs, workers: int, emit: Progress, final_eval: bool) -> list[RunResult]:
    # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (killed, out of memory)
    # fails its run instead of hanging the grid.
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    executor = ProcessPoolExecutor(workers, context, _init_worker, (events, threads, os.getpid()))
    results: dict[str, RunResult] = {}
    try:
        futures = {executor.submit(_worker_run, (spec, final_eval)): spec for spec in specs}
        pending, ended, idle = set(futures), 0, 0.0
        # Every run ends with one terminal event; after the last result, wait briefly for them.
        while pending or (ended < len(specs) and idle < 5.0):
            try:
                event = events.get(timeout=0.2)
            except queue_module.Empty:
                idle += 0.0 if pending else 0.2
            else:
                emit(event)
                ended += event.kind in ("done", "skipped", "failed")
            for future in [f for f in pending if f.done()]:
                pending.remove(future)
                spec = futures[future]
                if future.exception() is not None:
                    message = (
                        f"worker process died ({future.exception()!r}): killed, out of memory, "
                        "or a script calling run_grid without an `if __name__ == '__main__':` guard"
                    )
                    emit(RunEvent(spec.name, "failed", 0, spec.config.steps, message=message))
                    ended += 1
                    results[spec.name] = RunResult(spec.name, spec.run_dir, "failed", message)
                else:
                    results[spec.name] = future.result()
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    return [results[spec.name] for spec in specs]
