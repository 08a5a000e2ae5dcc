"""Math grading in killable worker processes: hostile answers are graded wrong in bounded time,
late workers are replaced, and the pool survives shutdown, threads, signals and spawned parents.

Time bounds here only catch hangs (each is over 10× the worst expected time) and fail loudly;
no test asserts how fast anything ran."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest

from entropy_dynamics.tasks import _math_grading
from entropy_dynamics.tasks.math import (
    MathConfig,
    MathProblem,
    extract_boxed,
    score,
)

DATA = Path(__file__).parents[1] / "data" / "math"


def _problem(answer: str) -> MathProblem:
    return MathProblem(question="q", answer=answer, source="test:1")


HANGING = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{10^{10^{10^{10}}}!}"]  # never end without a limit
HOSTILE = [
    "\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}",
    "{" * 5000,
    "\\boxed{" * 3000 + "}" * 3000,
    "x" * 200_000,
    "1+" * 5000 + "1",
    "\\frac{" * 300,
    "\\boxed{" + "1" * 2000 + "}",  # over MAX_ANSWER_CHARS
    "\x00\ud800 \\boxed{\\\\}",
]
BUDGET = MathConfig(grading_timeout=0.5)
HANG_SECONDS = 120.0
"""A grading that has not returned after this long hangs: it is over 10× what one takes at
worst here (a fresh worker starting, a few seconds, plus the 0.5 s budget)."""
POOL_WORKER_NAME = "pebble_pool_worker"  # pebble's name for its pool processes
_FRESH = itertools.count(7001)


def _within(seconds: float, function):
    """``function()`` run on another thread; fails loudly, instead of hanging the test run, if it
    has not returned after ``seconds``."""
    outcome: Future = Future()

    def run() -> None:
        try:
            outcome.set_result(function())
        except BaseException as exc:  # handed to the test
            outcome.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    try:
        return outcome.result(timeout=seconds)
    except FutureTimeout:
        pytest.fail(f"grading did not return within {seconds} s: the time bound is broken")


def _fresh(off_by: int = 0) -> tuple[MathProblem, str]:
    """A problem and a completion (correct unless ``off_by``) that no grading in this process has
    seen before, so that the verdict has to come from a worker, not from those remembered."""
    n = next(_FRESH)
    return _problem(f"\\frac{{{n}}}{{2}}"), f"half of {n} is \\boxed{{{n / 2 + off_by}}}"


def _grading_workers() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.name == POOL_WORKER_NAME}


def _graded_by_new_workers(old: set[int]) -> set[int]:
    """Grade a fresh correct answer; the pids of the pool's workers, none of them in ``old``."""
    problem, completion = _fresh()
    reward = _within(HANG_SECONDS, lambda: score(problem, completion, BUDGET))
    assert (reward.correct, reward.error) == (1.0, None)
    workers = _grading_workers()
    assert len(workers) == _math_grading.POOL_WORKERS and workers.isdisjoint(old), (workers, old)
    return workers


@pytest.mark.parametrize("completion", HANGING + HOSTILE, ids=range(len(HANGING + HOSTILE)))
def test_hostile_completions_are_graded_wrong(completion):
    reward = _within(HANG_SECONDS, lambda: score(_problem("3"), completion, BUDGET))
    assert (reward.correct, reward.reward) == (0.0, 0.0)
    if completion in HANGING:  # stopped at the budget, with the answer it found
        assert (reward.error, reward.format) == ("timeout", 1.0)
        assert reward.extracted == extract_boxed(completion)
    else:
        assert reward.error is not None and reward.format in (0.0, 1.0)


def test_a_late_worker_is_killed_and_replaced():
    before = _graded_by_new_workers(set())
    late = _within(HANG_SECONDS, lambda: score(_problem("3"), HANGING[0], BUDGET))
    assert late.error == "timeout"
    killed = before - _grading_workers()
    assert killed  # the late worker is gone ...
    for pid in killed:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ... from the system too (killed and reaped)
    _graded_by_new_workers(killed)  # its replacement grades the next completion
    # a timeout is not remembered as a verdict: the same completion is tried again, and is late
    again = _within(HANG_SECONDS, lambda: score(_problem("3"), HANGING[0], BUDGET))
    assert again.error == "timeout"


def test_a_shut_down_or_broken_pool_is_replaced():
    problem, completion = _fresh()
    first = _within(HANG_SECONDS, lambda: score(problem, completion))
    workers = _grading_workers()
    _math_grading.shutdown_pool()
    assert workers and not _grading_workers() & workers  # stopped
    # a verdict a worker gave is remembered: no pool is needed to repeat it
    assert _within(HANG_SECONDS, lambda: score(problem, completion)) == first
    assert _math_grading._pool is None
    workers = _graded_by_new_workers(workers)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)  # workers that die while idle break a pebble pool

    def noticed() -> None:  # within pebble's 0.1 s status cycle
        while _math_grading._pool.active and not _grading_workers() - workers:
            time.sleep(0.05)

    _within(HANG_SECONDS, noticed)
    _graded_by_new_workers(workers)


def test_concurrent_graders_on_other_threads_get_their_own_verdicts():
    off_by = [0, 1, 0, 3, 0, 0, 2, 0]
    cases = [_fresh(off) for off in off_by]
    with ThreadPoolExecutor(len(cases)) as threads:
        futures = [threads.submit(score, problem, text) for problem, text in cases]
        results = [future.result(timeout=HANG_SECONDS).correct for future in futures]
    assert results == [float(off == 0) for off in off_by]


def test_grading_on_the_main_thread_leaves_its_signals_alone():
    def late(signum, frame):
        pytest.fail(f"grading on the main thread did not return within {HANG_SECONDS} s")

    assert threading.current_thread() is threading.main_thread()
    problem, completion = _fresh()
    previous = signal.signal(signal.SIGALRM, late)
    try:
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)  # the caller's own timer
        hanging = score(_problem("3"), HANGING[0], BUDGET)
        fine = score(problem, completion, BUDGET)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        handler = signal.getsignal(signal.SIGALRM)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert (hanging.error, fine.correct) == ("timeout", 1.0)
    assert handler is late and left > 0  # neither replaced nor disarmed


def test_grading_in_a_spawned_worker_process_lets_it_exit():
    # as `entropy-dynamics compare` runs: the worker grades (starting its own grading pool), and
    # must still exit when its executor shuts down (multiprocessing joins a worker's children)
    executor = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"))
    try:
        graded = executor.submit(_math_grading.grade_completion, "1/2", "\\boxed{0.5}", 5.0)
        assert graded.result(timeout=HANG_SECONDS) == (1.0, 1.0, "0.5", None)
        _within(HANG_SECONDS, executor.shutdown)
    finally:
        for child in multiprocessing.active_children():
            if child.name != POOL_WORKER_NAME:  # left over only if the shutdown hung
                child.kill()
