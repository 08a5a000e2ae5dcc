"""No command writes to a file it reads: outputs checked against inputs before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_outputs"]


def _same(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file (same inode when both exist; same real path otherwise)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, directory: Path) -> bool:
    return directory.is_dir() and Path(os.path.realpath(path)).is_relative_to(
        os.path.realpath(directory)
    )


def check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse any output (``{flag: path}``) that is an input file, lies inside an input
    directory, or is another output; ``None`` paths are not given.

    Raises:
        ValueError: naming both flags and the path, before any file is touched.
    """
    given_in = {flag: Path(p) for flag, p in inputs.items() if p is not None}
    given_out = {flag: Path(p) for flag, p in outputs.items() if p is not None}
    for flag, path in given_out.items():
        for source, read in given_in.items():
            if _same(path, read) or _inside(path, read):
                where = "is" if _same(path, read) else "lies inside"
                raise ValueError(
                    f"{flag}: {path} {where} {read}, which {source} reads; this command never "
                    f"writes over its input: give {flag} another path"
                )
    flags = list(given_out)
    for i, flag in enumerate(flags):
        for other in flags[i + 1 :]:
            if _same(given_out[flag], given_out[other]):
                raise ValueError(
                    f"{flag} and {other} are one file ({given_out[flag]}); give them two paths"
                )
