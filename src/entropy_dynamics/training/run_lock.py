"""One process per run directory: an advisory lock held from the first write to the end.

Two ``train`` processes (or two ``compare`` workers, or a ``--resume`` beside a running run) in one
run directory would interleave their metrics and checkpoints. Before anything is written, the
trainer takes an exclusive ``fcntl`` lock on ``RUN/.lock``, which records the holder's pid, host
and start time; a second process is refused with :class:`RunLockedError` naming the holder.

The kernel releases the lock when the holder exits, however it exits (Ctrl-C, ``kill -9``, a
crash), so a lock left by a dead process is never in the way: the next process takes it over and
says whose it was (:attr:`RunLock.taken_over`). On systems without ``fcntl`` (Windows) runs are not
locked.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "check_unlocked"]

LOCK_FILE = ".lock"


class RunLockedError(ValueError):
    """The run directory is in use by another live process (named in the message)."""


def _holder(text: str) -> dict[str, Any]:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    since = ""
    if isinstance(started, int | float):
        since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


def _in_use(run_dir: Path, holder: str) -> RunLockedError:
    return RunLockedError(
        f"{run_dir} is in use by {holder}: one run directory takes one process. "
        "Wait for it to finish (or stop it), or give this run another name=<name>"
    )


def check_unlocked(run_dir: str | Path) -> None:
    """Refuse a run directory that a live process holds, as :class:`RunLock` would, without
    taking its lock or writing anything (``train --dry-run``).

    Raises:
        RunLockedError: another live process holds it (named in the message).
    """
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    with open(path) as handle:
        try:  # a shared lock is refused while an exclusive one is held; released at once
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(path.parent, _describe(_holder(handle.read()))) from None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class RunLock:
    """An exclusive lock on ``run_dir`` (created if missing), taken at construction.

    Use as a context manager or call :meth:`release`; the lock also ends with the process.

    Raises:
        RunLockedError: another live process holds it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.taken_over: str | None = None
        self._handle = None
        if fcntl is None:  # pragma: no cover - no advisory locks on this system
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(_holder(handle.read()))
            handle.close()
            raise _in_use(self.path.parent, holder) from None
        handle.seek(0)
        previous = _holder(handle.read())
        if previous:  # the lock was free, so its last holder has exited without cleaning up
            self.taken_over = f"took over the lock of {_describe(previous)}, no longer running"
        handle.seek(0)
        handle.truncate()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        handle.write(json.dumps(record))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Give the lock up (clearing the holder record); safe to call twice."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        handle.seek(0)
        handle.truncate()
        handle.flush()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
