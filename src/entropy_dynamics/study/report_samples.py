"""The report's sample completions: what each run logged in ``samples.jsonl``
(:mod:`entropy_dynamics.training.samples`) at its last logged step, as one table.

Each row: the run, the step, the prompt, the completion, its reward and advantage, the mean
entropy ``H`` of its tokens and the three tokens of highest ``H`` (with ``H`` and ``S_k``); the
full per-token record stays in the run's ``samples.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from entropy_dynamics.training.samples import SAMPLES_FILE

__all__ = ["SAMPLES_HEADER", "last_samples", "sample_table"]

SAMPLES_HEADER = ["run", "step", "prompt", "completion", "reward", "advantage", "mean H",
                  "highest-H tokens (H, S_k)"]  # fmt: skip


def last_samples(run_dir: str | Path, limit: int = 4) -> list[dict[str, Any]]:
    """The first ``limit`` records of the last step logged in ``run_dir/samples.jsonl`` (none
    when the run logged none; a torn line is skipped)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not records:
        return []
    last = max(int(r.get("step", 0)) for r in records)
    return [r for r in records if int(r.get("step", 0)) == last][:limit]


def _highest(record: dict[str, Any], n: int = 3) -> str:
    tokens, entropy = record.get("tokens", []), record.get("entropy", [])
    s_k = record.get("s_k", [])
    order = sorted(range(len(entropy)), key=lambda i: -entropy[i])[:n]
    return ", ".join(f"{tokens[i]!r} ({entropy[i]:.2f}, {s_k[i]:+.3f})" for i in order)


def sample_table(run_dirs: Sequence[str | Path], limit: int = 4) -> list[list[str]]:
    """The table's rows (:data:`SAMPLES_HEADER`) for the runs that logged samples."""
    rows = []
    for run_dir in run_dirs:
        for r in last_samples(run_dir, limit):
            entropy = r.get("entropy", [])
            mean_h = f"{sum(entropy) / len(entropy):.3f}" if entropy else "–"
            scores = f"{r.get('reward', float('nan')):.3g}", f"{r.get('advantage', 0.0):+.3g}"
            rows.append([Path(run_dir).name, str(r.get("step", "")), str(r.get("prompt", "")),
                         str(r.get("completion", "")), *scores, mean_h, _highest(r)])  # fmt: skip
    return rows
