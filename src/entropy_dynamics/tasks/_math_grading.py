"""Answer extraction and equivalence grading with ``math-verify``, bounded in time.

- The gold answer is parsed as ``\\boxed{gold}`` (LaTeX, then plain-expression extraction), so
  ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are one value; a gold answer nothing can parse is compared
  as a string.
- The prediction is the content of the completion's last complete ``\\boxed{...}`` (or
  ``\\fbox{...}``, braces balanced, ``\\{`` ``\\}`` escapes skipped) if it has one, else the
  last :data:`MAX_FALLBACK_CHARS` characters of the whole text, where ``math-verify`` looks for
  a final answer (``the answer is 3``, ``Answer: 3``, the last number).
- ``math-verify``'s own timeouts use ``signal.alarm`` and cancel any timer around them, so they
  are switched off and the whole grading of one completion (gold parse, prediction parse,
  comparison) runs under one budget of our own. On the main thread an interval timer interrupts
  it. Signals reach only the main thread, and a thread cannot be stopped (sympy can hold the GIL
  in one big-integer operation for minutes), so other threads send the work to a child Python
  process that is killed when late and restarted on the next call. A completion that runs over is
  graded wrong with error ``timeout``; ``\\boxed{9^{9^{9^{9}}}}`` would otherwise never finish.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_FALLBACK_CHARS",
    "GraderError",
    "GradingTimeout",
    "extract_boxed",
    "grade_completion",
    "run_with_timeout",
]

MAX_ANSWER_CHARS = 1000
"""A boxed answer longer than this is refused unparsed (``answer too long``)."""

MAX_FALLBACK_CHARS = 2000
"""Without a ``\\boxed{}``, only this tail of the completion is searched for an answer."""

_T = TypeVar("_T")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed +([^\s${}]+)")  # MATH sometimes writes "\boxed 5"


class GradingTimeout(BaseException):
    """Grading ran past its time budget (a BaseException so no library handler swallows it)."""


class GraderError(RuntimeError):
    """The grading process failed or math-verify raised in it (message ``grader error: ...``)."""


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


def run_with_timeout(function: Callable[[], _T], seconds: float | None) -> _T:
    """``function()``, or :class:`GradingTimeout` once it has run ``seconds`` (None/0: no limit).

    On the main thread of a POSIX process an ``ITIMER_REAL`` timer interrupts the call (a timer
    set by the caller is suspended and re-armed afterwards). Elsewhere the call runs in a daemon
    thread that is abandoned when late (threads cannot be stopped); that bounds the wait only if
    the work lets go of the GIL, which one long big-integer operation does not, hence the child
    process of :func:`grade_completion` off the main thread.
    """
    if not seconds or seconds <= 0:
        return function()
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hasattr(signal, "setitimer"):
        return _with_interval_timer(function, seconds)
    return _with_watched_thread(function, seconds)


def _with_interval_timer(function: Callable[[], _T], seconds: float) -> _T:
    def on_alarm(signum: int, frame: Any) -> None:
        raise GradingTimeout(f"grading took longer than {seconds} s")

    started = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            return function()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # an alarm that fires just before is caught
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_delay > 0:  # give the caller's timer back what it had left (at least 1 ms)
            left = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), outer_interval)


def _with_watched_thread(function: Callable[[], _T], seconds: float) -> _T:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="math-grading", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise GradingTimeout(f"grading took longer than {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _GradingProcess:
    """A child Python process that grades one request at a time (JSON lines over pipes), so that
    a grading that runs late can be killed. Started on first use, restarted after a kill."""

    # load this file by path (not the package, which imports torch) with the working directory
    # off sys.path (a math.py there would shadow the standard library)
    _CODE = (
        "import sys; del sys.path[0]; import importlib.util as u; "
        "s = u.spec_from_file_location('_entropy_dynamics_grading', sys.argv[1]); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); m._serve()"
    )
    _START_SECONDS = 120.0  # importing math-verify (sympy) on a busy machine

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def grade(self, gold: str, text: str, seconds: float) -> tuple[bool, bool]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            request = json.dumps([gold, text]).encode() + b"\n"
            try:
                self._process.stdin.write(request)
                self._process.stdin.flush()
                reply = json.loads(self._read_line(seconds))
            except (OSError, ValueError):
                self.stop()
                raise GraderError("grader error: the grading process failed") from None
            if "error" in reply:
                raise GraderError(reply["error"])
            return bool(reply["found"]), bool(reply["correct"])

    def _start(self) -> None:
        self._buffer = b""
        self._process = subprocess.Popen(
            [sys.executable, "-c", self._CODE, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        if self._read_line(self._START_SECONDS) != b"ready":
            self.stop()
            raise GraderError("grader error: the grading process did not start")

    def _read_line(self, seconds: float) -> bytes:
        import select

        deadline = time.monotonic() + seconds
        stdout = self._process.stdout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                self.stop()
                raise GradingTimeout(f"grading took longer than {seconds} s")
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                self.stop()
                raise GraderError("grader error: the grading process exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                pipe.close()
            self._process = None


def _serve() -> None:
    """The child's loop: ``[gold, text]`` per line in, ``{"found", "correct"}`` per line out."""
    import math_verify  # noqa: F401 - imported before announcing readiness

    out = sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            gold, text = json.loads(line)
            found, correct = _grade(gold, text)
            reply = {"found": found, "correct": correct}
        except (Exception, RecursionError) as exc:
            reply = {"error": f"grader error: {type(exc).__name__}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


_PROCESS = _GradingProcess()
atexit.register(_PROCESS.stop)


def _bounded_grade(gold: str, text: str, seconds: float | None) -> tuple[bool, bool]:
    """:func:`_grade` within ``seconds``: a timer on the main thread, a child process elsewhere
    (POSIX), a watched thread as the last resort (Windows)."""
    if not seconds or seconds <= 0:
        return _grade(gold, text)
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hasattr(signal, "setitimer"):
        return _with_interval_timer(lambda: _grade(gold, text), seconds)
    if os.name == "posix":
        return _PROCESS.grade(gold, text, seconds)
    return _with_watched_thread(lambda: _grade(gold, text), seconds)


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
    """``(extracted, correct)`` without a time limit (the caller bounds it)."""
    from math_verify import verify

    predicted = _parse(prediction_text)
    if not predicted:
        return False, False
    return True, bool(verify(list(_parsed_gold(gold)), predicted, timeout_seconds=None))


def grade_completion(
    gold: str, completion: str, timeout: float | None = 5.0
) -> tuple[float, float, str | None, str | None]:
    """Grade ``completion`` against the ``gold`` answer (module docstring).

    Returns ``(format, correct, extracted, error)``: ``format`` 1.0 when an answer was found,
    ``correct`` 1.0 when it is equivalent to ``gold``, ``extracted`` the boxed content (or the
    searched tail without a box) and ``error`` one of ``no answer``, ``empty answer``,
    ``answer too long``, ``wrong answer``, ``timeout``, ``grader error: ...``, or None if correct.
    Never raises for any completion text; never runs much past ``timeout`` seconds.
    """
    boxed = extract_boxed(completion)
    if boxed is not None:
        if not boxed.strip():
            return 0.0, 0.0, boxed, "empty answer"
        if len(boxed) > MAX_ANSWER_CHARS:
            return 0.0, 0.0, None, "answer too long"
        extracted, text = boxed, f"\\boxed{{{boxed}}}"
    else:
        extracted = text = completion[-MAX_FALLBACK_CHARS:]
    try:
        found, correct = _bounded_grade(gold, text, timeout)
    except GradingTimeout:
        return float(boxed is not None), 0.0, extracted, "timeout"
    except GraderError as exc:
        return 0.0, 0.0, extracted, str(exc)
    except (Exception, RecursionError) as exc:  # math-verify / sympy on hostile input
        return 0.0, 0.0, extracted, f"grader error: {type(exc).__name__}"
    if not found:
        return 0.0, 0.0, None, "no answer"
    return 1.0, float(correct), extracted, None if correct else "wrong answer"
