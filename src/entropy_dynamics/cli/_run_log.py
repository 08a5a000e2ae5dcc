"""A run's console, kept in its directory: ``run_dir/console.log`` gets what ``train`` prints.

From :func:`start_console_log` on, every write to ``sys.stdout`` and ``sys.stderr`` — the
consoles' lines, the progress, notices, warnings, errors — also goes to the log, without
terminal control codes; the terminal sees exactly what it saw before. A resumed run appends,
after a line naming the time and the command.
"""

from __future__ import annotations

import atexit
import re
import shlex
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["CONSOLE_LOG", "start_console_log"]

CONSOLE_LOG = "console.log"

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
"""Terminal control sequences (colours, cursor moves, hyperlinks): not for a text file."""


class _Tee:
    """A text stream that writes to ``stream`` and, without control codes, to ``log``."""

    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if not self.log.closed:
            self.log.write(_CONTROL.sub("", text))
            self.log.flush()
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the terminal's
        return getattr(self.stream, name)


def start_console_log(run_dir: str | Path, argv: list[str] | None = None) -> Path:
    """Copy this process's stdout and stderr to ``run_dir/console.log`` from now on (appended;
    closed at exit); return its path."""
    path = Path(run_dir) / CONSOLE_LOG
    log = path.open("a", encoding="utf-8")
    argv = sys.argv if argv is None else argv
    command = shlex.join(["entropy-dynamics", *argv[1:]])
    log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {command}\n")
    log.flush()
    sys.stdout = _Tee(sys.stdout, log)  # type: ignore[assignment]
    sys.stderr = _Tee(sys.stderr, log)  # type: ignore[assignment]
    atexit.register(log.close)
    return path
