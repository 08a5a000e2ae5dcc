"""Records of a dataset file, each with where it came from: JSON Lines, JSON or Parquet.

- ``.jsonl``: one JSON value per line; source ``"file:LINE"`` (1-based, as editors count).
  Whitespace-only lines hold no record and are passed over; a line that is not valid JSON (or
  not UTF-8), or longer than ``max_record_bytes`` (default 1 MiB), is a :class:`DataIssue`.
  The file is read as a stream in bounded pieces: a 50 MB line costs about 1 MiB of memory and
  the time to read past it, never a 50 MB string (nor its tokenization).
- ``.json``: a list of values, or an object whose ``"data"`` member is one; source
  ``"file: item N"`` (0-based). A file that is not valid JSON as a whole is refused.
- ``.parquet``: one record per row (nested structs become dicts, lists stay lists); source
  ``"file: row N"`` (0-based, as pandas and ``datasets`` number rows).

Readers yield every record, valid or not, in file order: checking a record's fields is the
caller's job, and so is deciding whether a :class:`DataIssue` skips the record or stops the load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MAX_RECORD_BYTES", "SUFFIXES", "DataIssue", "read_records"]

SUFFIXES = (".jsonl", ".json", ".parquet")
"""File types :func:`read_records` reads, by suffix."""
MAX_RECORD_BYTES = 1 << 20
"""Longest JSON Lines record read by default (1 MiB; a math problem is a few KB)."""


@dataclass(frozen=True)
class DataIssue:
    """A record that cannot be used: where it is and why."""

    source: str
    """``"file:LINE"``, ``"file: item N"`` or ``"file: row N"``."""
    reason: str
    """What is wrong, e.g. ``invalid JSON (Expecting value ...)``, ``missing field 'answer'``."""

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def read_records(
    path: str | Path, max_record_bytes: int = MAX_RECORD_BYTES
) -> Iterator[tuple[str, Any]]:
    """``(source, record)`` for each record of ``path``; ``record`` is a :class:`DataIssue` when the
    record cannot even be decoded (a JSON Lines line that is not JSON, or one longer than
    ``max_record_bytes``).

    Raises:
        ValueError: unknown suffix, missing file, or a file that cannot be read as a whole.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
    if suffix == ".jsonl":
        return _jsonl_records(path, max_record_bytes)
    if suffix == ".json":
        return _json_records(path)
    return _parquet_records(path)


def _lines(handle, limit: int) -> Iterator[tuple[bytes | None, int]]:
    """``(line, size)`` of each line of a binary file, ``line`` ``None`` (and the line read past
    in pieces, never held whole) when it is longer than ``limit`` bytes without its newline."""
    while raw := handle.readline(limit + 1):
        if raw.endswith(b"\n") or len(raw) <= limit:
            yield raw, len(raw)
            continue
        size = len(raw)
        while (piece := handle.readline(1 << 20)) and not piece.endswith(b"\n"):
            size += len(piece)
        yield None, size + len(piece)


def _jsonl_records(path: Path, limit: int) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as handle:
        for line_number, (raw, size) in enumerate(_lines(handle, limit), start=1):
            source = f"{path}:{line_number}"
            if raw is None:
                yield source, DataIssue(
                    source,
                    f"record of {size:,} bytes, longer than the limit of {limit:,} bytes "
                    "(task.math.max_record_bytes); split it, or raise the limit",
                )
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield source, DataIssue(source, f"not UTF-8 text ({exc.reason})")
                continue
            if line_number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                yield source, json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    source,
                    DataIssue(source, f"invalid JSON: {exc.msg} (character {exc.pos + 1})"),
                )


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); a .json dataset must be "
            "one JSON list of objects (use .jsonl for one object per line)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of records or an object with a 'data' list, "
            f"got {type(data).__name__}"
        )
    for index, record in enumerate(data):
        yield f"{path}: item {index}", record


def _parquet_records(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise ValueError(f"{path}: cannot read as Parquet ({exc})") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            yield f"{path}: row {index}", record
            index += 1
