"""The GPU checks' step loop: every step runs, a failing one is recorded, the JSON is rewritten
after each, so a timeout or a crash later never loses what was measured before."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path


def run_steps(report: dict, steps: Iterable[Callable[[], object]], out: Path, rows) -> None:
    """Run ``steps`` in order, then set ``report["all_ok"]``: some rows, no failure, every row's
    ``ok``; ``rows(report)`` lists the checked rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for step in steps:
        try:
            step()
        except Exception as exc:  # keep what the other steps measured
            report.setdefault("failures", []).append(f"{type(exc).__name__}: {exc}")
        out.write_text(json.dumps(report, indent=1))
    checked = rows(report)
    report["all_ok"] = bool(checked) and "failures" not in report and all(r["ok"] for r in checked)
    out.write_text(json.dumps(report, indent=1))
