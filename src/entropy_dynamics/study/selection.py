"""Choosing a swept setting on the validation split, never on the test split.

A sweep (``compare ... 'clip_b:algorithm.loss.filter_options.mu=1.0,2.0,2.5'``) is tuning: the
value it picks must not be chosen on the problems its final numbers are then reported on, or the
reported gain includes the luck of the choice. :func:`select` takes, for each method run at
several values of a setting, the value with the highest mean of a metric over its seeds on the
*validation* record of ``final_eval.json`` (written beside the test record by the final
evaluation); test numbers are not read. Asking to select on the test split is refused
(:func:`check_select_split`), and runs whose ``final_eval.json`` has no validation record (written
before the splits existed) cannot be selected on: the error names them and how to re-evaluate.

Metrics: ``pass@k`` (unbiased Pass@k, ``pass@1`` the pass rate) and ``entropy`` (the final
model's mean token entropy on the split); the highest mean wins, ties going to the first value in
sweep order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropy_dynamics.study.runs import Group, RunData, final_record, swept_keys
from entropy_dynamics.study.statistics import pass_at_k_matrix

__all__ = [
    "SELECT_SPLITS",
    "Candidate",
    "Selection",
    "check_select_split",
    "metric_label",
    "parse_select_metric",
    "select",
    "selection_summary",
]

SELECT_SPLITS = ("validation",)
"""The splits a sweep may select on."""
FIX = (
    "re-evaluate the final models so that final_eval.json holds the validation split: "
    "entropy-dynamics report RUNS --evaluate-missing (it evaluates again every run whose "
    "final_eval.json lacks one)"
)


def parse_select_metric(text: str) -> str:
    """``pass@8`` / ``Pass@8`` → ``pass@8``; ``entropy``; anything else is refused."""
    metric = text.strip().lower()
    if metric == "entropy":
        return metric
    if metric.startswith("pass@") and metric[5:].isdigit() and int(metric[5:]) >= 1:
        return f"pass@{int(metric[5:])}"
    raise ValueError(f"--select: expected pass@K (e.g. pass@8) or entropy, got {text!r}")


def check_select_split(split: str) -> None:
    """Refuse a split a sweep must not select on, naming the flag to use."""
    if split == "test":
        raise ValueError(
            "--select-split test: a setting chosen on the test split inflates the test numbers "
            "it is then reported with; select on the validation split: --select-split validation"
        )
    if split not in SELECT_SPLITS:
        raise ValueError(f"--select-split: expected validation, got {split!r}")


def metric_label(metric: str) -> str:
    """``Pass@8``, ``pass@1``, ``entropy``: as the report's tables name them."""
    return f"Pass@{metric[5:]}" if metric.startswith("pass@") and metric != "pass@1" else metric


def _value(run: RunData, metric: str, split: str) -> float:
    record = final_record(run, split)
    if record is None:
        why = "no final_eval.json" if run.final_eval is None else "no validation record"
        raise ValueError(
            f"cannot select on the {split} split: {run.path} has {why} (a run evaluated before "
            f"the splits existed, or not evaluated); {FIX}"
        )
    if metric == "entropy":
        if not isinstance(record.get("mean_entropy"), int | float):
            raise ValueError(f"--select entropy: {run.path}'s {split} record has no mean_entropy")
        return float(record["mean_entropy"])
    n, k = int(record["k"]), int(metric[5:])
    if k > n:
        raise ValueError(f"--select {metric}: {run.path} drew only {n} samples per problem")
    return float(pass_at_k_matrix(np.asarray(record["correct"]), n, k).mean())


@dataclass(frozen=True)
class Candidate:
    """One swept value (a group) with its seeds' values of the metric on the split."""

    group: str
    settings: dict[str, Any]
    values: dict[int, float]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Selection:
    """The value of a method's swept setting(s) chosen on ``split`` by the mean of ``metric``."""

    method: str
    metric: str
    split: str
    candidates: list[Candidate]
    chosen: Candidate

    @property
    def sentence(self) -> str:
        """``clip_b: mu = 1.0 chosen on validation by mean Pass@8 over 3 seeds; ...``"""
        chosen = self.chosen.settings.items()
        setting = ", ".join(f"{k.rsplit('.', 1)[-1]} = {v}" for k, v in chosen)
        ns = sorted({c.n for c in self.candidates})
        seeds = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        return (
            f"{self.method}: {setting} chosen on {self.split} by mean {metric_label(self.metric)} "
            f"over {seeds} seeds; test numbers are not used to choose"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "metric": self.metric,
            "split": self.split,
            "chosen": self.chosen.settings,
            "chosen_group": self.chosen.group,
            "values": [
                {
                    "group": c.group,
                    "settings": c.settings,
                    "mean": c.mean,
                    "n": c.n,
                    "per_seed": {str(s): v for s, v in c.values.items()},
                }
                for c in self.candidates
            ],
        }


def select(groups: Sequence[Group], metric: str, split: str = "validation") -> list[Selection]:
    """For each method run at several values of a setting, the value whose seeds have the
    highest mean ``metric`` on ``split`` (module docstring).

    Raises:
        ValueError: ``split`` is the test split (or unknown); no method was swept; a run of a
            swept method has no record of ``split`` (the message names it and the fix).
    """
    check_select_split(split)
    metric = parse_select_metric(metric)
    selections = []
    for method in dict.fromkeys(g.method for g in groups):
        keys = swept_keys(groups, method)
        mine = [g for g in groups if g.method == method and any(k in g.settings for k in keys)]
        if not keys or len(mine) < 2:
            continue
        candidates = [
            Candidate(
                g.label,
                {k: g.settings[k] for k in keys if k in g.settings},
                {r.seed: _value(r, metric, split) for r in g.runs},
            )
            for g in mine
        ]
        usable = [c for c in candidates if math.isfinite(c.mean)]
        chosen = max(usable, key=lambda c: c.mean)  # max keeps the first of equal means
        selections.append(Selection(method, metric, split, candidates, chosen))
    if not selections:
        raise ValueError(
            "--select chooses among the values of a sweep, and no method was run at several "
            "values of a setting (sweep one: key=v1,v2 or method:key=v1,v2)"
        )
    return selections


def selection_summary(selections: Sequence[Selection]) -> dict[str, Any]:
    """``summary.json``'s ``"selection"``: the metric, the split and each method's choice."""
    first = selections[0]
    return {
        "metric": first.metric,
        "split": first.split,
        "rule": "highest mean over seeds; test numbers are not read",
        "methods": [s.to_json() for s in selections],
    }
