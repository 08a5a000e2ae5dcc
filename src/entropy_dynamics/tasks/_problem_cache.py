"""Generated problem sets cached on disk, keyed by the config that generates them.

Generating Countdown's 2,200 default problems runs the exhaustive solver on every draw (0.4 s at
each start of a run, and again in every run of a grid). The set is a deterministic function of
its config, so it is kept in ``$ENTROPY_DYNAMICS_CACHE`` (default ``$XDG_CACHE_HOME`` or
``~/.cache``, then ``entropy-dynamics/problems/``) as one JSON file per config and split, named by
a hash of the config, and read back next time. The cache is only a copy: a missing, damaged or
foreign file is regenerated, a file is written atomically (a reader never sees half of one), and
a cache directory that cannot be written only costs the time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "cached"]

_VERSION = 2  # bump when a generator changes what a config produces (2: train / validation / test)


def cache_dir() -> Path:
    """Where problem sets are kept (``ENTROPY_DYNAMICS_CACHE`` wins)."""
    if os.environ.get("ENTROPY_DYNAMICS_CACHE"):
        return Path(os.environ["ENTROPY_DYNAMICS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "entropy-dynamics" / "problems"


def cached(
    kind: str, key: dict[str, Any], generate: Callable[[], list[list[Any]]]
) -> list[list[Any]]:
    """``generate()``'s records (lists of JSON values) for ``key``, from the cache when a valid
    copy is there, else generated and stored."""
    text = json.dumps({"kind": kind, "version": _VERSION, "key": key}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    path = cache_dir() / f"{kind}-{digest}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(text) and isinstance(stored.get("records"), list):
            return stored["records"]
    except (OSError, ValueError, AttributeError):
        pass  # not there, or not ours: generate
    records = generate()
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"key": json.loads(text), "records": records}))
        os.replace(temporary, path)
    except OSError:  # an unwritable cache only costs the time
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return records
