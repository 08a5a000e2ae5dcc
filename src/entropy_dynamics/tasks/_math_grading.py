"""Answer extraction and equivalence grading with ``math-verify``, in killable worker processes.

- The gold answer is parsed as ``\\boxed{gold}`` (LaTeX, then plain-expression extraction), so
  ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are one value; a gold answer nothing can parse is compared
  as a string.
- The prediction is the content of the completion's last complete ``\\boxed{...}`` (or
  ``\\fbox{...}``, braces balanced, ``\\{`` ``\\}`` escapes skipped) if it has one, else the
  last :data:`MAX_FALLBACK_CHARS` characters of the whole text, where ``math-verify`` looks for
  a final answer (``the answer is 3``, ``Answer: 3``, the last number).
- ``math-verify``'s own timeouts use ``signal.alarm`` and cancel any timer around them, so they
  are switched off, and the whole grading of one completion (gold parse, prediction parse,
  comparison) is one task for a small pool of worker processes (:class:`pebble.ProcessPool`)
  under one budget of our own. A task that runs over is graded wrong with error ``timeout`` and
  its worker is killed and replaced; ``\\boxed{9^{9^{9^{9}}}}`` would otherwise never finish.
  Neither a thread (it cannot be stopped, and sympy can hold the GIL in one big-integer operation
  for minutes) nor a signal in the caller's process (an alarm's exception raised inside a
  callback that Python ignores is lost: a 0.5 s bound once took 7 s; and the trainer's own
  timers and handlers are not ours to touch) can bound it, so the caller's process never gets a
  signal, and grading works the same from any thread.

The pool (:data:`POOL_WORKERS` processes) starts on the first grading, is replaced when it is
found broken or shut down, and is stopped when the process exits, also when that process is
itself a ``multiprocessing`` worker (``entropy-dynamics compare``). Workers are started with
``spawn``: a fresh interpreter inherits no threads, locks or CUDA state from a trainer, so none
can deadlock it (a script that grades needs the usual ``if __name__ == "__main__":`` guard).
The budget counts from the moment a worker takes the completion, not while it waits its turn.

A verdict depends on the gold answer and the text graded alone, so the calling process keeps the
last :data:`VERDICTS_KEPT` ones a worker gave (not timeouts or errors): in a group of samples the
same boxed answer comes back many times, and asking a worker again costs a round trip between
processes as long as grading a GSM8K answer in place (``benchmarks/grading_throughput.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache
from multiprocessing import util as multiprocessing_util

from pebble import ProcessExpired, ProcessPool

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_FALLBACK_CHARS",
    "POOL_WORKERS",
    "VERDICTS_KEPT",
    "extract_boxed",
    "grade_completion",
    "shutdown_pool",
]

MAX_ANSWER_CHARS = 1000
"""A boxed answer longer than this is refused unparsed (``answer too long``)."""

MAX_FALLBACK_CHARS = 2000
"""Without a ``\\boxed{}``, only this tail of the completion is searched for an answer."""

POOL_WORKERS = min(2, os.cpu_count() or 1)
"""Grading processes. The trainer and ``evaluate`` hand a whole rollout to the pool at once
(:func:`grade_completions`), which two workers grade in parallel: on a 2-core machine, batches of
never-seen answers went from 0.74× the old in-process grader with one worker to 0.94–1.15× with
two, and the benchmark's whole mix to 0.93–0.98× (``benchmarks/grading_throughput.py``); graded
one at a time, never-seen answers run at 0.43–0.45× (both workers wake for each task). After a
late worker is killed, the next grading waits for its replacement to start (a few seconds)."""

VERDICTS_KEPT = 4096
"""Verdicts remembered in the calling process (module docstring); keys of at most ~2 KB."""

_START_SECONDS = 120.0  # waited beyond the budget: queued tasks, a worker starting when busy
_POLL_SECONDS = 1.0  # how often a waiting caller checks that the pool is still running
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed +([^\s${}]+)")  # MATH sometimes writes "\boxed 5"


class _DisabledTimeoutNotice(logging.Filter):
    """Drop math-verify's notice that its timeout is off: ours is on (module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DisabledTimeoutNotice())


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` of ``text`` (the one that
    closes last, so the outer box of ``\\boxed{\\boxed{3}}``), or of a bare ``\\boxed 5``; None if
    there is none. One linear pass: unbalanced or truncated boxes are ignored.

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and \\boxed{\\{1, 2\\}}")
    '\\\\{1, 2\\\\}'
    """
    best: tuple[int, str] | None = None  # (end position, content)
    for match in _BOX_BARE.finditer(text):
        best = (match.end(), match.group(1))
    starts = {m.end(): m.start() for m in _BOX_OPEN.finditer(text)}  # content start -> box start
    if not starts:
        return None if best is None else best[1]
    open_boxes: list[tuple[int, int]] = []  # (depth inside the box, content start)
    depth, i, n = 0, min(starts) - 1, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "{}\\":
            i += 2  # an escaped brace or backslash
            continue
        if char == "{":
            depth += 1
            if i + 1 in starts:
                open_boxes.append((depth, i + 1))
        elif char == "}" and depth > 0:
            if open_boxes and open_boxes[-1][0] == depth:
                _, content_start = open_boxes.pop()
                if best is None or i + 1 > best[0]:
                    best = (i + 1, text[content_start:i])
            depth -= 1
        i += 1
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------
# The worker pool


_pool: ProcessPool | None = None
_verdicts: OrderedDict[tuple[str, str], tuple[bool, bool]] = OrderedDict()
_lock = threading.Lock()  # guards both


def _start_worker() -> None:
    """Run once in each new worker, before its first task.

    SIGTERM ends the worker at once: pebble's own handler is Python code, which waits for the
    running bytecode (one big-integer operation can take minutes) until pebble sends SIGKILL 3 s
    later; pebble stops a worker only while no task is being passed, so nothing is left half
    sent. Then one answer is graded, so that importing sympy and compiling math-verify's
    patterns is not charged to the first completion's budget.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _grade("1", "\\boxed{1}")


def _grade_task(gold: str, text: str) -> tuple[bool, bool, str | None]:
    """:func:`_grade` in a worker, as ``(extracted, correct, error)``: math-verify's exception
    (on hostile input) is named here, as an exception object might not survive the way back."""
    try:
        return (*_grade(gold, text), None)
    except Exception as exc:  # RecursionError, sympy's errors, ...
        return False, False, f"grader error: {type(exc).__name__}"


def _running_pool() -> ProcessPool:
    """The pool, started anew if there is none or it is broken or stopped (hold the lock)."""
    global _pool
    if _pool is None or not _pool.active:
        if _pool is not None:
            _stop(_pool)
        context = multiprocessing.get_context("spawn")
        _pool = ProcessPool(POOL_WORKERS, initializer=_start_worker, context=context)
    return _pool


def _stop(pool: ProcessPool) -> None:
    pool.stop()
    pool.join()


def _discard(pool: ProcessPool) -> None:
    """Stop ``pool``; the next grading starts a new one unless another did already."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    _stop(pool)


def shutdown_pool() -> None:
    """Stop the grading workers; a later grading starts a new pool. Called at exit."""
    with _lock:
        pool = _pool
    if pool is not None:
        _discard(pool)


def _forget_pool_after_fork() -> None:
    """In a forked child the pool's threads are gone and its workers are the parent's: start a
    new pool there instead of stopping (killing) the parent's workers, and a fresh lock."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


# multiprocessing's exit handler runs these finalizers, then joins every child process; in a
# multiprocessing worker (where atexit handlers do not run) the pool's workers would be waited
# for forever without it
multiprocessing_util.Finalize(None, shutdown_pool, exitpriority=100)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _remembered(key: tuple[str, str]) -> tuple[bool, bool] | None:
    with _lock:
        verdict = _verdicts.get(key)
        if verdict is not None:
            _verdicts.move_to_end(key)
        return verdict


def _remember(key: tuple[str, str], verdict: tuple[bool, bool, str | None]) -> None:
    """Keep a worker's verdict (a timeout or a grader error says nothing about the answer)."""
    found, correct, error = verdict
    if error is None:
        with _lock:
            _verdicts[key] = found, correct
            if len(_verdicts) > VERDICTS_KEPT:
                _verdicts.popitem(last=False)


def _schedule(gold: str, text: str, seconds: float | None):
    """``(pool, future or the failure, limit)``: :func:`_grade` handed to the pool, to run within
    ``seconds`` (None/0: no limit) once a worker takes it."""
    limit = seconds if seconds and seconds > 0 else None
    with _lock:
        pool = _running_pool()
        try:
            return pool, pool.schedule(_grade_task, args=(gold, text), timeout=limit), limit
        except RuntimeError as exc:  # BrokenProcessPool: its workers could not be started
            return pool, exc, limit


def _wait(pool: ProcessPool, future, limit: float | None) -> tuple[bool, bool, str | None]:
    """``(extracted, correct, error)`` of a scheduled grading; ``error`` is ``timeout`` for a
    worker killed late, ``grader error: ...`` if the worker or the pool failed."""
    if isinstance(future, Exception):
        _discard(pool)
        return False, False, f"grader error: the grading pool did not start ({future!r})"
    deadline = None if limit is None else time.monotonic() + limit + _START_SECONDS
    while True:
        try:
            error = future.exception(timeout=_POLL_SECONDS)
        except FutureTimeout:  # not done yet (a late task is failed by the pool itself)
            if not pool.active:
                return False, False, "grader error: the grading pool stopped"
            if deadline is not None and time.monotonic() > deadline:
                future.cancel()
                _discard(pool)
                return False, False, "grader error: the grading pool did not answer"
            continue
        break
    if error is None:
        return future.result()
    if isinstance(error, FutureTimeout):
        return False, False, "timeout"
    if isinstance(error, ProcessExpired):
        return False, False, "grader error: the grading process died"
    return False, False, f"grader error: {type(error).__name__}"


# ---------------------------------------------------------------------------------------------
# Grading


def _parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = (LatexExtractionConfig(), ExprExtractionConfig())
    return parse(text, extraction_config=config, parsing_timeout=None)


@lru_cache(maxsize=8192)
def _parsed_gold(answer: str) -> tuple:
    """Parsed gold answer; a gold nothing can parse is kept as a string (string comparison)."""
    for text in (f"\\boxed{{{answer}}}", f"${answer}$", answer):
        parsed = _parse(text)
        if parsed:
            return tuple(parsed)
    return (answer.strip(),)


def _grade(gold: str, prediction_text: str) -> tuple[bool, bool]:
    """``(extracted, correct)`` without a time limit (run in a worker, which is bounded)."""
    from math_verify import verify

    predicted = _parse(prediction_text)
    if not predicted:
        return False, False
    return True, bool(verify(list(_parsed_gold(gold)), predicted, timeout_seconds=None))


def _prepare(completion: str) -> tuple[str | None, str | None, str | None]:
    """``(text to grade or None, extracted, error)``: the boxed answer (or the searched tail)
    and, when it cannot be graded at all, why."""
    boxed = extract_boxed(completion)
    if boxed is None:
        tail = completion[-MAX_FALLBACK_CHARS:]
        return tail, tail, None
    if not boxed.strip():
        return None, boxed, "empty answer"
    if len(boxed) > MAX_ANSWER_CHARS:
        return None, None, "answer too long"
    return f"\\boxed{{{boxed}}}", boxed, None


def _result(
    text: str, extracted: str, verdict: tuple[bool, bool, str | None]
) -> tuple[float, float, str | None, str | None]:
    found, correct, error = verdict
    if error == "timeout":  # a boxed answer was found even if not graded (text != extracted)
        return float(text != extracted), 0.0, extracted, error
    if error is not None:
        return 0.0, 0.0, extracted, error
    if not found:
        return 0.0, 0.0, None, "no answer"
    return 1.0, float(correct), extracted, None if correct else "wrong answer"


def grade_completion(
    gold: str, completion: str, timeout: float | None = 5.0
) -> tuple[float, float, str | None, str | None]:
    """Grade ``completion`` against the ``gold`` answer (module docstring).

    Returns ``(format, correct, extracted, error)``: ``format`` 1.0 when an answer was found,
    ``correct`` 1.0 when it is equivalent to ``gold``, ``extracted`` the boxed content (or the
    searched tail without a box) and ``error`` one of ``no answer``, ``empty answer``,
    ``answer too long``, ``wrong answer``, ``timeout``, ``grader error: ...``, or None if correct.
    Never raises for any completion text, from any thread; the worker grading it is stopped
    ``timeout`` seconds after it took the completion (None or 0: no limit).
    """
    return grade_completions([(gold, completion)], timeout)[0]


def grade_completions(
    items: list[tuple[str, str]], timeout: float | None = 5.0
) -> list[tuple[float, float, str | None, str | None]]:
    """:func:`grade_completion` of many ``(gold, completion)`` pairs, same results.

    Every grading the workers must do (not remembered, not repeated within ``items``) is handed
    to the pool before the first answer is awaited, so the round trips between processes overlap
    the grading instead of adding to it (``benchmarks/grading_throughput.py``).
    """
    prepared = [(gold, *_prepare(completion)) for gold, completion in items]
    verdicts: dict[tuple[str, str], tuple[bool, bool, str | None]] = {}
    jobs: dict[tuple[str, str], tuple] = {}
    for gold, text, _, error in prepared:
        key = (gold, text)
        if error is not None or key in verdicts or key in jobs:
            continue
        known = _remembered(key)
        if known is not None:
            verdicts[key] = (*known, None)
        else:
            jobs[key] = _schedule(gold, text, timeout)  # all handed over before any is awaited
    for key, job in jobs.items():
        verdicts[key] = _wait(*job)
        _remember(key, verdicts[key])
    return [
        (0.0, 0.0, extracted, error)
        if error is not None
        else _result(text, extracted, verdicts[(gold, text)])
        for gold, text, extracted, error in prepared
    ]
