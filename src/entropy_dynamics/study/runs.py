"""Runs on disk as data: loading a run directory (config, metrics, final evaluation), grouping runs
that differ only in seed, and the per-run series and scores that reports tabulate and draw.

A group is the runs whose ``config.yaml`` differ only in seed (and in options that do not change
results, such as the run name), labelled by the method and the settings that differ between
groups (``clip_b (mu=2.0)``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.study.summaries import mean_std
from entropy_dynamics.training.config import LoggingConfig, load_config
from entropy_dynamics.training.evaluate import pass_at_k
from entropy_dynamics.training.filter_activity import idle_filter_notice
from entropy_dynamics.training.metrics import read_metrics

__all__ = [
    "DEFINED",
    "OLD_SPLIT",
    "PREDICTIONS",
    "Group",
    "RunData",
    "band",
    "final_record",
    "final_value",
    "find_runs",
    "group_runs",
    "idle_notes",
    "load_runs",
    "pass_rates",
    "points",
    "predictions_in",
    "record_split",
    "run_scores",
    "swept_keys",
]

IGNORED_KEYS = {
    "name",
    "output_dir",
    "seed",
    "tensorboard",
    "threads",
    "keep_checkpoints",
    "checkpoint_every",
    "model.device",
    *(f"logging.{f.name}" for f in fields(LoggingConfig)),
}
"""Config keys that do not define a group (seeds of one setting share everything else)."""
PREDICTIONS = {
    "dynamics/delta_h_first_order": "first order (measured Δz)",
    "dynamics/delta_h_thm33": "Theorem 3.3",
    "dynamics/forecast": "forecast before the step",
    "dynamics/forecast_second_order": "forecast, second order",
}
"""Predictions of the actual ΔH; the forecasts exist only in runs with ``forecast.enabled``."""
DEFINED = {
    "dynamics/delta_h_first_order": "first order: ∇H·Δz, Δz = logit change measured after the step",
}
"""Axis and legend labels that say what a :data:`PREDICTIONS` name means."""
FIGURES = ("entropy", "reward", "delta_h_scatter", "quadrants", "pass_rate_hist", "filters")
OLD_SPLIT = "held-out"
"""The split of a ``final_eval.json`` record without ``"split"`` (written before the splits)."""


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]
    """Flattened config: dotted key → value."""
    rows: list[dict[str, float]]
    final_eval: dict[str, Any] | None
    eval_record: dict[str, Any] | None = None
    """The run's ``eval.json`` (``eval --run``), when it has one: per-problem counts of a split."""

    @property
    def method(self) -> str:
        return str(self.config.get("algorithm.method", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def train_rows(self) -> list[dict[str, float]]:
        return [r for r in self.rows if "entropy/mean" in r]


@dataclass
class Group:
    label: str
    method: str
    settings: dict[str, Any]
    runs: list[RunData] = field(default_factory=list)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # an empty mapping (no overrides) sets nothing
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _expand(path: Path) -> list[Path]:
    if (path / "metrics.jsonl").is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"run directory {path} does not exist")
    manifest = path / "grid.json"
    if manifest.is_file():
        names = [r["name"] for r in json.loads(manifest.read_text())["runs"]]
        found = [path / n for n in names if (path / n / "metrics.jsonl").is_file()]
    else:
        found = sorted(p.parent for p in path.glob("*/metrics.jsonl"))
    if not found:
        raise ValueError(f"{path}: neither a run directory (metrics.jsonl) nor a folder of runs")
    return found


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories among ``paths``; a folder of runs (a ``compare`` output) is expanded."""
    return [run for given in paths for run in _expand(Path(given))]


def load_runs(paths: Sequence[str | Path]) -> list[RunData]:
    """Read the runs of :func:`find_runs`."""
    runs = []
    for path in find_runs(paths):
        if not (path / "config.yaml").is_file():
            raise ValueError(f"{path}: no config.yaml; is it a run directory?")
        try:
            config = _flatten(yaml.safe_load((path / "config.yaml").read_text()) or {})
        except yaml.YAMLError as exc:
            raise ValueError(f"{path / 'config.yaml'}: not valid YAML ({exc})") from None
        final = path / "final_eval.json"
        final_eval = json.loads(final.read_text()) if final.is_file() else None
        run = RunData(path, config, read_metrics(path / "metrics.jsonl"), final_eval,
                      _eval_record(path / "eval.json"))  # fmt: skip
        done, planned = max((int(r["step"]) for r in run.rows), default=0), config.get("steps")
        if isinstance(planned, int) and done < planned:
            warnings.warn(
                f"{path}: incomplete run ({done} of {planned} steps); its curves and scores end "
                "early — resume it (entropy-dynamics train ... --resume) for a fair comparison",
                stacklevel=2,
            )
        runs.append(run)
    if not runs:
        raise ValueError("run_dirs: no runs given")
    return runs


def _eval_record(path: Path) -> dict[str, Any] | None:
    """``eval.json``'s record when it holds per-problem counts and their ``k``, else ``None``."""
    try:
        record = json.loads(path.read_text())
        int(record["k"]), list(record["per_problem_correct"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _sort_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, int | float) else (1, 0.0, str(value))


def group_runs(runs: Sequence[RunData]) -> list[Group]:
    """Groups of runs that differ only in seed; ordered by method (first seen), then settings."""
    keys = sorted({k for r in runs for k in r.config} - IGNORED_KEYS - {"algorithm.method"})
    differing = [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]
    last = [k.rsplit(".", 1)[-1] for k in differing]
    short = {k: (s if last.count(s) == 1 else k) for k, s in zip(differing, last, strict=True)}
    groups: dict[tuple, Group] = {}
    for run in runs:
        settings = {k: run.config[k] for k in differing if k in run.config}
        ident = (run.method, tuple(repr(settings.get(k)) for k in differing))
        if ident not in groups:
            text = ", ".join(f"{short[k]}={v}" for k, v in settings.items())
            label = f"{run.method} ({text})" if text else run.method
            groups[ident] = Group(label, run.method, settings)
        groups[ident].runs.append(run)
    order = list(dict.fromkeys(r.method for r in runs))
    result = sorted(
        groups.values(),
        key=lambda g: (order.index(g.method), [_sort_key(g.settings.get(k)) for k in differing]),
    )
    for group in result:
        group.runs.sort(key=lambda r: (r.seed, str(r.path)))
        kept = group.runs[:1]
        for run in group.runs[1:]:
            if run.seed == kept[-1].seed:  # one seed counted twice would narrow every interval
                warnings.warn(
                    f"runs {kept[-1].path} and {run.path} have the same config and seed "
                    f"{run.seed} (group {group.label}); {run.path} is left out of the report "
                    "— give it another seed, or report one of them",
                    stacklevel=2,
                )
            else:
                kept.append(run)
        group.runs = kept
    return result


def band(group: Group, key: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    by_step: dict[int, list[float]] = {}
    for run in group.runs:
        for row in run.rows:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(row["step"]), []).append(value)
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return steps, np.array([m for m, _ in stats]), np.array([s for _, s in stats])


def final_value(run: RunData, key: str) -> float:
    rows = [r for r in run.train_rows if key in r]
    return rows[-1][key] if rows else math.nan


def run_scores(run: RunData, ks: Sequence[int]) -> tuple[int | None, dict[str, float]]:
    """``(n samples, {"avg": Avg@n, "pass@k": ...})`` of the run's final model."""
    if run.final_eval is not None:
        n, correct = int(run.final_eval["k"]), run.final_eval["correct"]
        scores = {"avg": sum(correct) / (n * len(correct))}
        for k in (k for k in ks if k <= n):
            scores[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in correct) / len(correct)
        return n, scores
    evals = [r for r in run.rows if any(k.startswith("eval/avg@") for k in r)]
    if not evals:
        return None, {}
    row = evals[-1]
    avg_key = next(k for k in row if k.startswith("eval/avg@"))
    scores = {"avg": row[avg_key]}
    scores.update({f"pass@{k}": row[f"eval/pass@{k}"] for k in ks if f"eval/pass@{k}" in row})
    return int(avg_key.split("@")[1]), scores


def pass_rates(group: Group) -> tuple[list[float], set[int]]:
    """The per-problem pass rates of the group's runs (seeds pooled) and the sample counts they
    were measured with: each run's ``final_eval.json``, else its ``eval.json`` (``eval --run``)."""
    rates, ns = [], set()
    for run in group.runs:
        if run.final_eval is not None:
            n, correct = int(run.final_eval["k"]), run.final_eval["correct"]
        elif run.eval_record is not None:
            n, correct = int(run.eval_record["k"]), run.eval_record["per_problem_correct"]
        else:
            continue
        ns.add(n)
        rates.extend(c / n for c in correct)
    return rates, ns


def predictions_in(runs: Sequence[RunData]) -> dict[str, str]:
    """The :data:`PREDICTIONS` that at least one of ``runs`` recorded (the logit-space two when
    none did, so a report still shows their empty axes)."""
    found = {k: name for k, name in PREDICTIONS.items() if points(runs, k)[0]}
    return found or dict(list(PREDICTIONS.items())[:2])


def points(runs: Sequence[RunData], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for run in runs:
        for row in run.train_rows:
            x, y = row.get(key), row.get("dynamics/delta_h_actual")
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                xs.append(x)
                ys.append(y)
    return xs, ys


def record_split(record: dict[str, Any]) -> str:
    """The split a final-evaluation record was measured on (:data:`OLD_SPLIT` for an old one)."""
    return str(record.get("split", OLD_SPLIT))


def final_record(run: RunData, split: str = "test") -> dict[str, Any] | None:
    """The run's final-evaluation record of ``split``: ``"test"`` is the top level (an older
    file's held-out record: read its :func:`record_split`), ``"validation"`` the ``"validation"``
    sub-record; ``None`` when the run has none."""
    if run.final_eval is None:
        return None
    if split == "validation":
        record = run.final_eval.get("validation")
        return record if isinstance(record, dict) else None
    if split != "test":
        raise ValueError(f"split: expected test or validation, got {split!r}")
    return run.final_eval


def swept_keys(groups: Sequence[Group], method: str | None = None) -> list[str]:
    """Numeric settings that some method (or ``method``) was run at with several values: a
    sweep. A setting that differs only *between* methods (GRPO at 200 steps, Clip_B at 20) is
    not one."""
    keys = {k for g in groups for k in g.settings}
    swept = []
    for k in sorted(keys):
        if not all(_is_number(g.settings.get(k, 0)) for g in groups):
            continue
        values: dict[str, set] = {}
        for g in groups:
            if k in g.settings and method in (None, g.method):
                values.setdefault(g.method, set()).add(g.settings[k])
        if any(len(v) > 1 for v in values.values()):
            swept.append(k)
    return swept


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def idle_notes(groups: Sequence[Group]) -> dict[str, str]:
    """Per group label, a note when its filter was idle over the last steps
    (:func:`~entropy_dynamics.training.filter_activity.idle_filter_notice` on each run's rows,
    the trainer's own test), with the number of seeds it holds for; groups whose filter acted
    (or that have none) are absent."""
    notes = {}
    for group in groups:
        notices = []
        for run in group.runs:
            try:
                loss = load_config(run.path / "config.yaml").algorithm.policy_loss()
            except (ConfigError, OSError, ValueError):  # a config this version cannot read
                continue
            notice = idle_filter_notice(run.train_rows, loss)
            if notice:
                notices.append((run.seed, notice))
        if notices:
            seed, notice = notices[0]
            count = f"{len(notices)} of {len(group.runs)} seeds"
            notes[group.label] = f"{group.label} (idle in {count}; seed {seed}): {notice}"
    return notes
