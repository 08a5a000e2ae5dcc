"""A report comparing runs: Markdown plus a self-contained HTML page with PNG figures.

Runs are grouped by their config: runs whose ``config.yaml`` differ only in seed (and in options
that do not change results, such as the run name) form one group, labelled by the method and the
settings that differ between groups (``clip_b (mu=2.0)``). Curves show the mean over a group's
seeds with a band of ± one sample standard deviation; tables give mean ± sample std (n − 1).

Sections: entropy and reward over steps; final Avg@k / Pass@k (from ``final_eval.json``, written
by :mod:`entropy_dynamics.experiments`, else from the last evaluation in ``metrics.jsonl``);
predicted vs actual ΔH per step (Pearson r and least-squares slope, first-order and Theorem 3.3);
ΔH split by quadrant (advantage sign × sign of ``S_k - E_p[S]``); the per-problem pass-rate
histogram; filter fractions; and curves against every numeric setting that differs between
groups (a μ sweep). ``summary.json`` holds every number of the tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from entropy_dynamics.evaluate import pass_at_k
from entropy_dynamics.metrics import read_metrics

__all__ = [
    "Group",
    "RunData",
    "find_runs",
    "fit_line",
    "group_runs",
    "load_runs",
    "mean_std",
    "write_report",
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
}
"""Config keys that do not define a group (seeds of one setting share everything else)."""
QUADRANTS = {
    "pos_adv_pos_dev": "A > 0, S_k > E_p[S]",
    "pos_adv_neg_dev": "A > 0, S_k < E_p[S]",
    "neg_adv_pos_dev": "A < 0, S_k > E_p[S]",
    "neg_adv_neg_dev": "A < 0, S_k < E_p[S]",
}
PREDICTIONS = {
    "dynamics/delta_h_first_order": "first order (measured Δz)",
    "dynamics/delta_h_thm33": "Theorem 3.3",
}
FIGURES = ("entropy", "reward", "delta_h_scatter", "quadrants", "pass_rate_hist", "filters")


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]
    """Flattened config: dotted key → value."""
    rows: list[dict[str, float]]
    final_eval: dict[str, Any] | None

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


# ---------------------------------------------------------------------------------------------
# Loading and grouping
# ---------------------------------------------------------------------------------------------


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
        config = _flatten(yaml.safe_load((path / "config.yaml").read_text()) or {})
        final = path / "final_eval.json"
        final_eval = json.loads(final.read_text()) if final.is_file() else None
        runs.append(RunData(path, config, read_metrics(path / "metrics.jsonl"), final_eval))
    if not runs:
        raise ValueError("run_dirs: no runs given")
    return runs


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
        group.runs.sort(key=lambda r: r.seed)
        seeds = [r.seed for r in group.runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"group {group.label}: seed given twice among {group.runs[0].path}…")
    return result


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value, nan for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else 0.0


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Pearson r and least-squares slope of ``ys`` on ``xs`` (nan for < 2 points or flat x)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    r = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan
    return r, (sxy / sxx if sxx > 0 else math.nan)


def _band(group: Group, key: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    by_step: dict[int, list[float]] = {}
    for run in group.runs:
        for row in run.rows:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(row["step"]), []).append(value)
    steps = sorted(by_step)
    stats = [mean_std(by_step[s]) for s in steps]
    return steps, np.array([m for m, _ in stats]), np.array([s for _, s in stats])


def _final(run: RunData, key: str) -> float:
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
    rates, ns = [], set()
    for run in group.runs:
        if run.final_eval is not None:
            n = int(run.final_eval["k"])
            ns.add(n)
            rates.extend(c / n for c in run.final_eval["correct"])
    return rates, ns


def _pm(values: Sequence[float], fmt: str = ".3f") -> str:
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return "—"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return f"{mean:{fmt}} ± {std:{fmt}}" if len(finite) > 1 else f"{mean:{fmt}}"


def _points(runs: Sequence[RunData], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for run in runs:
        for row in run.train_rows:
            x, y = row.get(key), row.get("dynamics/delta_h_actual")
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                xs.append(x)
                ys.append(y)
    return xs, ys


def _filter_keys(groups: Sequence[Group]) -> list[str]:
    from entropy_dynamics.filters import available_filters

    names = set(available_filters())
    keys = {k for g in groups for r in g.runs for row in r.train_rows for k in row}
    wanted = [k for k in keys if k.split("/")[0] in names and "/frac" in k]
    return [k for k in ("actor/frac_kept", "actor/pg_clipfrac") if k in keys] + sorted(wanted)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sweep_keys(groups: Sequence[Group]) -> list[str]:
    keys = {k for g in groups for k in g.settings}
    return [
        k
        for k in sorted(keys)
        if all(_is_number(g.settings.get(k, 0)) for g in groups)
        and len({g.settings[k] for g in groups if k in g.settings}) > 1
    ]


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    summary: dict[str, Any]


@dataclass
class _Context:
    groups: list[Group]
    ks: list[int]
    out: Path
    summary: dict[str, Any]
    figures: Any
    plt: Any

    @property
    def runs(self) -> list[RunData]:
        return [r for g in self.groups for r in g.runs]

    def record(self, group: Group, name: str, value: Any) -> None:
        self.summary["groups"][group.label][name] = value


def _overview(ctx: _Context) -> list[Section]:
    header = ["group", "method", "seeds", "steps", "run directories"]
    table = [
        [
            g.label,
            g.method,
            ", ".join(str(r.seed) for r in g.runs),
            str(len(g.runs[0].train_rows)),
            ", ".join(r.path.name for r in g.runs),
        ]
        for g in ctx.groups
    ]
    entropy, reward = ctx.figures.curves(ctx.groups, ctx.out, ctx.plt)
    return [
        Section("Runs", "Groups of runs that differ only in seed.", [(header, table)]),
        Section(
            "Entropy over training",
            "Rollout token entropy; mean over seeds, band ± 1 sample std.",
            figures=[entropy],
        ),
        Section("Reward and accuracy over training", figures=[reward]),
    ]


def _samples_per_problem(runs: Sequence[RunData], ks: Sequence[int]) -> set[int]:
    return {n for n in (run_scores(r, ks)[0] for r in runs) if n is not None}


def _final_scores(ctx: _Context) -> list[Section]:
    ns = _samples_per_problem(ctx.runs, ctx.ks)
    avg_name = f"Avg@{next(iter(ns))}" if len(ns) == 1 else "Avg@k"
    columns = ["avg", *(f"pass@{k}" for k in ctx.ks)]
    header, table = ["group", "seeds", avg_name, *(f"Pass@{k}" for k in ctx.ks)], []
    for g in ctx.groups:
        scores = [run_scores(r, ctx.ks)[1] for r in g.runs]
        cells = {c: [s.get(c, math.nan) for s in scores] for c in columns}
        cells["entropy"] = [_final(r, "entropy/mean") for r in g.runs]
        table.append([g.label, str(len(g.runs)), *(_pm(v) for v in cells.values())])
        ctx.record(g, "final", {c: mean_std(v) for c, v in cells.items()})
    source = "final_eval.json" if all(r.final_eval for r in ctx.runs) else "the last evaluation"
    text = (
        f"Held-out scores of the final models (from {source}); mean ± sample std over seeds. "
        "Pass@k is unbiased (Chen et al. 2021); — marks k above the samples per problem. "
        "Final entropy: rollout token entropy of the last step."
    )
    return [Section("Final evaluation", text, [([*header, "final entropy"], table)])]


def _predictions(ctx: _Context) -> list[Section]:
    header, table = ["group", "points"], []
    for name in PREDICTIONS.values():
        header += [f"r ({name})", f"slope ({name})"]
    for label, members in [*((g.label, g.runs) for g in ctx.groups), ("all runs", ctx.runs)]:
        cells, fits = [], {}
        for key, name in PREDICTIONS.items():
            r, slope = fit_line(*_points(members, key))
            fits[name] = {"r": r, "slope": slope}
            cells += [f"{r:.3f}", f"{slope:.3g}"]
        table.append([label, str(len(_points(members, "dynamics/delta_h_actual")[0])), *cells])
        ctx.summary["prediction"][label] = fits
    text = (
        "One point per training step: the batch's mean token ΔH re-measured after the update "
        "(actual) against the first-order prediction from the measured logit change and "
        "against Theorem 3.3's prediction. Slope: least squares of actual on predicted "
        "(1 = exact scale)."
    )
    figure = ctx.figures.scatter(ctx.groups, ctx.out, ctx.plt)
    return [Section("Predicted vs actual entropy change", text, [(header, table)], [figure])]


def _quadrants(ctx: _Context) -> list[Section]:
    keys = [f"dynamics/quadrant/{q}" for q in QUADRANTS] + ["dynamics/delta_h_actual"]
    header, table = ["group", *QUADRANTS.values(), "total actual ΔH"], []
    for g in ctx.groups:
        sums = {k: [sum(row.get(k, 0.0) for row in r.train_rows) for r in g.runs] for k in keys}
        table.append([g.label, *(_pm(v, ".2e") for v in sums.values())])
        ctx.record(g, "quadrant_sums", {k: mean_std(v) for k, v in sums.items()})
    text = (
        "Actual ΔH summed over training, split by advantage sign × sign of S_k − E_p[S]: "
        "which tokens drive the entropy change (Theorem 3.3: A·(S_k − E_p[S]) > 0 lowers it)."
    )
    figure = ctx.figures.quadrants(ctx.groups, ctx.out, ctx.plt)
    return [Section("Entropy change by quadrant", text, [(header, table)], [figure])]


def _pass_rate_section(ctx: _Context) -> list[Section]:
    header, table = ["group", "problems", "all wrong (0)", "mixed", "all right (1)"], []
    for g in ctx.groups:
        rates, _ = pass_rates(g)
        n = len(rates)
        wrong, right = sum(r == 0 for r in rates), sum(r == 1 for r in rates)
        fracs = [wrong / n, (n - wrong - right) / n, right / n] if n else [math.nan] * 3
        table.append([g.label, str(n), *(f"{f:.1%}" if n else "—" for f in fracs)])
        ctx.record(g, "pass_rate_fractions", fracs)
    text = (
        "Pass rate of each held-out problem under the final model (seeds pooled); the paper "
        "reports that GRPO piles problems up at all-wrong and all-right. Needs final_eval.json."
    )
    figure = ctx.figures.histogram(ctx.groups, ctx.out, ctx.plt)
    return [Section("Per-problem pass rates", text, [(header, table)], [figure])]


def _filter_section(ctx: _Context) -> list[Section]:
    keys, table = _filter_keys(ctx.groups), []
    for g in ctx.groups:
        means = {
            k: [mean_std([row.get(k) for row in r.train_rows])[0] for r in g.runs] for k in keys
        }
        table.append([g.label, *(_pm(v) for v in means.values())])
        ctx.record(g, "filter_fractions", {k: mean_std(v) for k, v in means.items()})
    text = "Fraction of tokens kept / clipped per step, averaged over training."
    figure = ctx.figures.filters(ctx.groups, keys, ctx.out, ctx.plt)
    return [Section("Filter fractions", text, [(["group", *keys], table)], [figure])]


def _sweeps(ctx: _Context) -> list[Section]:
    sections = []
    usable = [k for k in ctx.ks if k <= min(_samples_per_problem(ctx.runs, ctx.ks), default=1e9)]
    pass_key = f"pass@{max(usable, default=ctx.ks[0])}"
    for key in _sweep_keys(ctx.groups):
        short = key.rsplit(".", 1)[-1]
        table = [
            [
                g.method,
                str(g.settings[key]),
                _pm([_final(r, "entropy/mean") for r in g.runs]),
                _pm([run_scores(r, ctx.ks)[1].get(pass_key, math.nan) for r in g.runs]),
            ]
            for g in ctx.groups
            if key in g.settings
        ]
        text = f"Final rollout entropy and {pass_key} against {key} (mean ± std over seeds)."
        figure = ctx.figures.sweep(ctx.groups, key, short, pass_key, ctx.ks, ctx.out, ctx.plt)
        header = ["method", short, "final entropy", pass_key]
        sections.append(Section(f"Sweep over {short}", text, [(header, table)], [figure]))
    return sections


_SECTIONS = (
    _overview,
    _final_scores,
    _predictions,
    _quadrants,
    _pass_rate_section,
    _filter_section,
    _sweeps,
)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    ks: Sequence[int] = (1, 8),
    title: str = "Entropy dynamics: comparison of runs",
) -> ReportResult:
    """Write ``report.md``, ``report.html`` (images embedded), ``figures/*.png`` and
    ``summary.json`` into ``out_dir`` for the runs in ``run_dirs`` (folders of runs expand)."""
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: need positive Pass@k values, got {ks}")
    groups = group_runs(load_runs(run_dirs))
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "groups": {
            g.label: {
                "method": g.method,
                "settings": g.settings,
                "runs": [str(r.path) for r in g.runs],
                "seeds": [r.seed for r in g.runs],
            }
            for g in groups
        },
        "prediction": {},
    }
    from entropy_dynamics import _report_render as render

    ctx = _Context(groups, ks, out / "figures", summary, render, render.pyplot())
    sections = [section for build in _SECTIONS for section in build(ctx)]
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(render.markdown(title, sections, out))
    page.write_text(render.page(title, sections))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    figures = [p for s in sections for p in s.figures]
    return ReportResult(markdown, page, figures, summary)
