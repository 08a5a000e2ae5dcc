"""The "vs baseline" tables of a report: every group against one baseline group, one table per
metric family, with the statistics of :mod:`entropy_dynamics.study.statistics`.

Per run, each metric is one number and the split it was measured on:

- scores: pass@1 and Pass@k of the final model, from ``final_eval.json``'s per-problem correct
  counts (its top-level record: the test split, or an older file's held-out split, labelled so);
- entropy: the final model's mean token entropy on that split, and the rollout entropy of the
  last :data:`LAST_STEPS` training steps (split ``train``: the training rollouts);
- dropped share: ``1 − mean actor/frac_kept`` over training (``train``);
- pass-rate histogram: the problems never solved (no correct sample) and always solved (every
  sample correct) on the final evaluation's split.

A cell pairs a group's seeds with the baseline's (the seeds both have, measured on the same
split): Δ, its paired-t interval, for a metric on a problem set the hierarchical bootstrap
(seeds × problems, the same problems for both), the paired-t p-value and its Holm adjustment over
the cells of that table (:func:`~entropy_dynamics.study.statistics.compare_to_baseline`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropy_dynamics.study.runs import Group, RunData, final_record, record_split
from entropy_dynamics.study.statistics import (
    RESAMPLES,
    Comparison,
    Interval,
    compare_to_baseline,
    pass_at_k_matrix,
    t_interval,
)

__all__ = [
    "FAMILIES",
    "LAST_STEPS",
    "BaselineTable",
    "Cell",
    "Measurement",
    "Metric",
    "find_baseline",
    "format_interval",
    "format_p",
    "measure",
    "metrics_for",
    "pass_rate_counts",
    "vs_baseline_tables",
]

LAST_STEPS = 20
"""Training steps whose mean rollout entropy is a run's final rollout entropy."""
TRAIN_SPLIT = "train"
"""The split of the numbers measured on the training rollouts."""
FAMILIES = {
    "scores": "final scores",
    "entropy": "entropy",
    "filter": "dropped share",
    "pass_rates": "pass-rate histogram",
}
"""Metric families, one table each (Holm's adjustment runs over one table)."""


@dataclass(frozen=True)
class Metric:
    """One row kind of a vs-baseline table: ``key`` in ``summary.json``, ``label`` shown."""

    key: str
    label: str
    family: str
    digits: int = 3
    on_problems: bool = False
    """Measured per problem of a split: the hierarchical bootstrap applies."""


def metrics_for(ks: Sequence[int]) -> list[Metric]:
    """The metrics of a report with Pass@k values ``ks`` (pass@1 always)."""
    scores = [Metric(f"pass@{k}", f"pass@{k}" if k == 1 else f"Pass@{k}", "scores", 3, True)
              for k in sorted({1, *ks})]  # fmt: skip
    return [
        *scores,
        Metric("final_entropy", "final entropy", "entropy"),
        Metric("rollout_entropy", f"rollout entropy, last {LAST_STEPS} steps", "entropy"),
        Metric("dropped_share", "dropped share", "filter", 4),
        Metric("never_solved", "problems never solved", "pass_rates", 1, True),
        Metric("always_solved", "problems always solved", "pass_rates", 1, True),
    ]


@dataclass(frozen=True)
class Measurement:
    """A run's value of a metric, its split and, for a metric on problems, per-problem scores
    whose mean is the value."""

    value: float
    split: str
    per_problem: np.ndarray | None = None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def measure(run: RunData, metric: Metric) -> Measurement | None:
    """``run``'s :class:`Measurement` of ``metric``; ``None`` where the run has no such number
    (no ``final_eval.json``, k above its samples per problem, no ``actor/frac_kept``)."""
    rows = run.train_rows
    if metric.key == "rollout_entropy":
        values = [r["entropy/mean"] for r in rows[-LAST_STEPS:] if _finite(r["entropy/mean"])]
        return Measurement(float(np.mean(values)), TRAIN_SPLIT) if values else None
    if metric.key == "dropped_share":
        kept = [r["actor/frac_kept"] for r in rows if _finite(r.get("actor/frac_kept"))]
        return Measurement(1.0 - float(np.mean(kept)), TRAIN_SPLIT) if kept else None
    record = final_record(run)
    if record is None:
        return None
    split = record_split(record)
    if metric.key == "final_entropy":
        value = record.get("mean_entropy")
        return Measurement(float(value), split) if _finite(value) else None
    n, correct = int(record["k"]), np.asarray(record["correct"], dtype=np.int64)  # (P,)
    if metric.key.startswith("pass@"):
        k = int(metric.key[5:])
        if k > n or correct.size == 0:
            return None
        scores = pass_at_k_matrix(correct, n, k)  # (P,)
    else:  # a count of problems: P · indicator, whose mean over problems is the count
        solved = 0 if metric.key == "never_solved" else n
        scores = correct.size * (correct == solved).astype(np.float64)  # (P,)
    return Measurement(float(scores.mean()), split, scores)


@dataclass(frozen=True)
class Cell:
    """One row of a vs-baseline table: a group's ``metric`` minus the baseline's."""

    group: str
    metric: Metric
    split: str
    comparison: Comparison

    def to_json(self) -> dict[str, Any]:
        d, boot = self.comparison.difference, self.comparison.bootstrap
        return {
            "group": self.group,
            "metric": self.metric.key,
            "split": self.split,
            "n": d.n,
            "delta": d.mean,
            "t_interval": [d.low, d.high],
            "bootstrap_interval": None if boot is None else [boot.low, boot.high],
            "p": self.comparison.p_value,
            "p_holm": self.comparison.p_adjusted,
        }


def format_interval(interval: Interval | None, digits: int, signed: bool = True) -> str:
    """``[+0.010, +0.030]``; ``—`` when absent or undefined (one seed)."""
    if interval is None or not math.isfinite(interval.low):
        return "—"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"[{interval.low:{spec}}, {interval.high:{spec}}]"


def format_p(p: float) -> str:
    """``0.012``, ``<0.001``; ``—`` when undefined."""
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@dataclass(frozen=True)
class BaselineTable:
    """The vs-baseline table of one metric family."""

    family: str
    baseline: str
    cells: list[Cell]

    HEADER = ("group", "metric", "split", "n", "Δ", "95 % t interval", "bootstrap 95 %", "p",
              "p (Holm)")  # fmt: skip

    @property
    def title(self) -> str:
        return f"Against {self.baseline}: {FAMILIES[self.family]}"

    @property
    def splits(self) -> str:
        """``test`` or, where metrics differ, ``test (pass@1, Pass@8), train (...)``."""
        by_split: dict[str, list[str]] = {}
        for cell in self.cells:
            labels = by_split.setdefault(cell.split, [])
            if cell.metric.label not in labels:
                labels.append(cell.metric.label)
        if len(by_split) == 1:
            return next(iter(by_split))
        return "; ".join(f"{split} ({', '.join(labels)})" for split, labels in by_split.items())

    @property
    def sentence(self) -> str:
        """The table's method in one sentence."""
        m = sum(math.isfinite(c.comparison.p_value) for c in self.cells)
        boot = ""
        if any(c.metric.on_problems for c in self.cells):
            boot = (f"bootstrap: {RESAMPLES:,} resamples of seeds and, within them, the split's "
                    "problems (the same problems for both); ")  # fmt: skip
        cells = f"{m} cell{'s' * (m != 1)}"
        return (
            f"Δ = group − {self.baseline} paired by seed (the seeds both have, n); 95 % paired-t "
            f"interval; {boot}p: paired t, Holm-adjusted over the {cells} of this table; "
            f"split: {self.splits}."
        )

    def rows(self) -> list[list[str]]:
        rows = []
        for cell in self.cells:
            d, digits = cell.comparison.difference, cell.metric.digits
            rows.append([
                cell.group, cell.metric.label, cell.split, str(d.n), f"{d.mean:+.{digits}f}",
                format_interval(d, digits), format_interval(cell.comparison.bootstrap, digits),
                format_p(cell.comparison.p_value), format_p(cell.comparison.p_adjusted),
            ])  # fmt: skip
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "baseline": self.baseline,
            "method": self.sentence,
            "cells": [c.to_json() for c in self.cells],
        }


def find_baseline(groups: Sequence[Group], name: str | None = None) -> tuple[Group | None, str]:
    """The baseline group: the one labelled ``name``, else the first of method ``name``
    (default ``grpo``); ``(None, why)`` when there is none."""
    wanted = name or "grpo"
    for group in groups:
        if group.label == wanted:
            return group, ""
    for group in groups:
        if group.method == wanted:
            return group, ""
    labels = ", ".join(g.label for g in groups)
    how = "" if name else "; name one with --baseline"
    return None, f"no group {wanted!r} among {labels}: the vs-baseline tables are skipped{how}"


def _measurements(group: Group, metric: Metric) -> dict[int, Measurement]:
    found = {run.seed: measure(run, metric) for run in group.runs}
    return {seed: m for seed, m in found.items() if m is not None}


def vs_baseline_tables(
    groups: Sequence[Group], ks: Sequence[int], baseline: Group
) -> list[BaselineTable]:
    """One :class:`BaselineTable` per metric family with at least one cell: every group other
    than ``baseline`` against it. A seed is paired only where both runs were measured on the
    same split; the bootstrap only where every paired run has the same number of problems."""
    tables = []
    for family in FAMILIES:
        metrics = [m for m in metrics_for(ks) if m.family == family]
        base = {m.key: _measurements(baseline, m) for m in metrics}
        values: dict[str, dict[str, dict[int, float]]] = {}
        problems: dict[str, dict[str, dict[int, np.ndarray]]] = {}
        splits: dict[tuple[str, str], str] = {}
        for group in [baseline, *(g for g in groups if g is not baseline)]:
            for metric in metrics:
                mine = base[metric.key] if group is baseline else _measurements(group, metric)
                ref = base[metric.key]
                paired = {s: m for s, m in mine.items() if s in ref and m.split == ref[s].split}
                if group is not baseline and not paired:
                    continue
                values.setdefault(group.label, {})[metric.key] = {
                    s: m.value for s, m in paired.items()
                }
                splits[group.label, metric.key] = next((m.split for m in paired.values()), "")
                sizes = {m.per_problem.size for m in [*paired.values(), *ref.values()]
                         if m.per_problem is not None}  # fmt: skip
                if metric.on_problems and len(sizes) == 1:
                    problems.setdefault(group.label, {})[metric.key] = {
                        s: m.per_problem for s, m in paired.items()
                    }
        if len(values) < 2:
            continue
        comparisons = compare_to_baseline(values, baseline.label, problems)
        by_key = {m.key: m for m in metrics}
        cells = [
            Cell(c.method, by_key[c.metric], splits[c.method, c.metric], c) for c in comparisons
        ]
        tables.append(BaselineTable(family, baseline.label, cells))
    return tables


def pass_rate_counts(groups: Sequence[Group]) -> tuple[list[str], list[list[str]], dict]:
    """Problems never / always solved per group: mean over seeds with its t interval, on the
    final evaluation's split; the table's header, rows and ``summary.json`` entries (groups
    without a final evaluation are left out)."""
    header = ["group", "split", "problems", "seeds", "never solved", "always solved"]
    rows, record = [], {}
    for group in groups:
        found = {
            key: _measurements(group, Metric(key, key, "pass_rates", 1, True))
            for key in ("never_solved", "always_solved")
        }
        measured = list(found["never_solved"].values())
        if not measured:
            continue
        splits = sorted({m.split for m in measured})
        sizes = sorted({m.per_problem.size for m in measured})
        entry: dict[str, Any] = {
            "split": splits[0] if len(splits) == 1 else "mixed: " + ", ".join(splits),
            "problems": int(sizes[0]) if len(sizes) == 1 else [int(n) for n in sizes],
        }
        cells = []
        for key, by_seed in found.items():
            interval = t_interval([m.value for m in by_seed.values()])
            entry[key] = {
                "mean": interval.mean,
                "t_interval": [interval.low, interval.high],
                "n": interval.n,
            }
            cells.append(f"{interval.mean:.1f} {format_interval(interval, 1, signed=False)}")
        problems = "/".join(str(n) for n in sizes)
        rows.append([group.label, entry["split"], problems, str(len(measured)), *cells])
        record[group.label] = entry
    return header, rows, record
