"""A report comparing runs: Markdown plus a self-contained HTML page with PNG figures.

Runs are grouped by their config: runs whose ``config.yaml`` differ only in seed (and in options
that do not change results, such as the run name) form one group, labelled by the method and the
settings that differ between groups (``clip_b (mu=2.0)``). Curves show the mean over a group's
seeds with a band of ± one sample standard deviation; tables give mean ± sample std (n − 1).

Sections: entropy and reward over steps; final Avg@k / Pass@k (from ``final_eval.json``, written
by :mod:`entropy_dynamics.study.experiments`, else from the last evaluation in ``metrics.jsonl``);
predicted vs actual ΔH per step (Pearson r and least-squares slope, first-order and Theorem 3.3);
ΔH split by quadrant (advantage sign × sign of ``S_k - E_p[S]``); the per-problem pass-rate
histogram; filter fractions; and curves against every numeric setting that differs between
groups (a μ sweep). Beside them, one "vs baseline" table per metric family
(:mod:`entropy_dynamics.study.vs_baseline`: Δ, paired-t and hierarchical-bootstrap intervals,
Holm-adjusted p, n; each table states its method under it), a note for every group whose filter
was idle, and, when asked, the value of each sweep chosen on the validation split
(:mod:`entropy_dynamics.study.selection`); last, the sample completions the runs logged.
Every number names its split. ``summary.json`` holds every number of the tables, as strict JSON
(``null`` for an undefined number).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entropy_dynamics.dynamics import QUADRANT_LABELS
from entropy_dynamics.study import report_render as render
from entropy_dynamics.study.report_samples import SAMPLES_HEADER, sample_table
from entropy_dynamics.study.runs import (
    Group,
    RunData,
    final_record,
    final_value,
    group_runs,
    idle_notes,
    load_runs,
    pass_rates,
    points,
    predictions_in,
    record_split,
    run_scores,
    swept_keys,
)
from entropy_dynamics.study.selection import Selection, select, selection_summary
from entropy_dynamics.study.summaries import fit_line, json_text, mean_std
from entropy_dynamics.study.vs_baseline import (
    BaselineTable,
    find_baseline,
    pass_rate_counts,
    vs_baseline_tables,
)

__all__ = ["FIGURES", "ReportResult", "Section", "write_report"]

FIGURES = ("entropy", "reward", "delta_h_scatter", "quadrants", "pass_rate_hist", "filters")


def _pm(values: Sequence[float], fmt: str = ".3f") -> str:
    mean, std = mean_std(values)
    if not math.isfinite(mean):
        return "—"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return f"{mean:{fmt}} ± {std:{fmt}}" if len(finite) > 1 else f"{mean:{fmt}}"


def _filter_keys(groups: Sequence[Group]) -> list[str]:
    from entropy_dynamics.filters import available_filters

    names = set(available_filters())
    keys = {k for g in groups for r in g.runs for row in r.train_rows for k in row}
    wanted = [k for k in keys if k.split("/")[0] in names and "/frac" in k]
    return [k for k in ("actor/frac_kept", "actor/pg_clipfrac") if k in keys] + sorted(wanted)


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
    baseline_tables: list[BaselineTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What a reader must know beside the tables: idle filters, a skipped baseline."""
    selections: list[Selection] = field(default_factory=list)


@dataclass
class _Context:
    groups: list[Group]
    ks: list[int]
    out: Path
    summary: dict[str, Any]
    plt: Any
    baseline: str | None = None
    selections: list[Selection] = field(default_factory=list)
    baseline_tables: list[BaselineTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
    entropy, reward = render.curves(ctx.groups, ctx.out, ctx.plt)
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


def _split_of(runs: Sequence[RunData]) -> str:
    """The split of the runs' final scores: ``test``, ``held-out`` (older runs), or the in-training
    evaluation's for runs without ``final_eval.json``; several joined by ``/``."""
    records = [final_record(r) for r in runs]
    found = {record_split(r) if r else "held-out (in-training evaluation)" for r in records}
    return " / ".join(sorted(found))


def _final_scores(ctx: _Context) -> list[Section]:
    ns = _samples_per_problem(ctx.runs, ctx.ks)
    avg_name = f"Avg@{next(iter(ns))}" if len(ns) == 1 else "Avg@k"
    columns = ["avg", *(f"pass@{k}" for k in ctx.ks)]
    header = ["group", "seeds", "split", avg_name, *(f"Pass@{k}" for k in ctx.ks)]
    table = []
    for g in ctx.groups:
        scores = [run_scores(r, ctx.ks)[1] for r in g.runs]
        cells = {c: [s.get(c, math.nan) for s in scores] for c in columns}
        cells["entropy"] = [final_value(r, "entropy/mean") for r in g.runs]
        split = _split_of(g.runs)
        table.append([g.label, str(len(g.runs)), split, *(_pm(v) for v in cells.values())])
        ctx.record(g, "final", {"split": split, **{c: mean_std(v) for c, v in cells.items()}})
    source = "final_eval.json" if all(r.final_eval for r in ctx.runs) else "the last evaluation"
    text = (
        f"Scores of the final models on the split named in each row (from {source}; held-out: "
        "a run evaluated before the validation / test splits existed); mean ± sample std over "
        "seeds. Pass@k is unbiased (Chen et al. 2021); — marks k above the samples per problem. "
        "Final entropy: rollout token entropy of the last step (training rollouts)."
    )
    return [Section("Final evaluation", text, [([*header, "final entropy"], table)])]


def _vs_baseline(ctx: _Context) -> list[Section]:
    baseline, why = find_baseline(ctx.groups, ctx.baseline)
    if baseline is None:
        ctx.notes.append(why)
        ctx.summary["vs_baseline"] = {"skipped": why}
        return [Section("Against the baseline", why + ".")]
    tables = vs_baseline_tables(ctx.groups, ctx.ks, baseline)
    ctx.baseline_tables.extend(tables)
    ctx.summary["vs_baseline"] = {
        "baseline": baseline.label,
        "tables": [t.to_json() for t in tables],
    }
    if not tables:
        return [Section("Against the baseline", f"No group to compare with {baseline.label}.")]
    return [Section(t.title, t.sentence, [(list(t.HEADER), t.rows())]) for t in tables]


def _predictions(ctx: _Context) -> list[Section]:
    header, table = ["group", "points"], []
    predictions = predictions_in(ctx.runs)
    for name in predictions.values():
        header += [f"r ({name})", f"slope ({name})"]
    for label, members in [*((g.label, g.runs) for g in ctx.groups), ("all runs", ctx.runs)]:
        cells, fits = [], {}
        for key, name in predictions.items():
            r, slope = fit_line(*points(members, key))
            fits[name] = {"r": r, "slope": slope}
            cells += [f"{r:.3f}", f"{slope:.3g}"]
        table.append([label, str(len(points(members, "dynamics/delta_h_actual")[0])), *cells])
        ctx.summary["prediction"][label] = fits
    text = (
        "One point per training step: the batch's mean token ΔH re-measured after the update "
        "(actual) against the first-order prediction from the measured logit change and "
        "against Theorem 3.3's prediction, and — in runs with forecast.enabled — against the "
        "parameter-space forecast taken before the step. Slope: least squares of actual on "
        "predicted (1 = exact scale)."
    )
    figure = render.scatter(ctx.groups, ctx.out, ctx.plt)
    return [Section("Predicted vs actual entropy change", text, [(header, table)], [figure])]


def _quadrants(ctx: _Context) -> list[Section]:
    keys = [f"dynamics/quadrant/{q}" for q in QUADRANT_LABELS] + ["dynamics/delta_h_actual"]
    header, table = ["group", *QUADRANT_LABELS.values(), "total actual ΔH"], []
    for g in ctx.groups:
        sums = {k: [sum(row.get(k, 0.0) for row in r.train_rows) for r in g.runs] for k in keys}
        table.append([g.label, *(_pm(v, ".2e") for v in sums.values())])
        ctx.record(g, "quadrant_sums", {k: mean_std(v) for k, v in sums.items()})
    text = (
        "Actual ΔH summed over training, split by advantage sign × sign of S_k − E_p[S]: "
        "which tokens drive the entropy change (Theorem 3.3: A·(S_k − E_p[S]) > 0 lowers it)."
    )
    figure = render.quadrants(ctx.groups, ctx.out, ctx.plt)
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
        f"Pass rate of each problem of the final evaluation's split ({_split_of(ctx.runs)}) "
        "under the final model (seeds pooled); the paper reports that GRPO piles problems up at "
        "all-wrong and all-right. Reads each run's final_eval.json: written by `compare` "
        "(--final-eval), by `eval --run RUN --final-eval`, or add --evaluate-missing to "
        "`report`; else the per-problem counts of `eval --run RUN` (eval.json). Second table: "
        "problems never solved (no correct sample) and always solved "
        "(every sample correct) per seed; mean over seeds with its 95 % t interval."
    )
    if not any(pass_rates(g)[0] for g in ctx.groups):
        text += " No data: no run has per-problem counts yet."
    counts_header, counts, record = pass_rate_counts(ctx.groups)
    for label, entry in record.items():
        ctx.summary["groups"][label]["pass_rate_counts"] = entry
    tables = [(header, table)] + ([(counts_header, counts)] if counts else [])
    figure = render.histogram(ctx.groups, ctx.out, ctx.plt)
    return [Section("Per-problem pass rates", text, tables, [figure])]


def _filter_section(ctx: _Context) -> list[Section]:
    keys, table = _filter_keys(ctx.groups), []
    for g in ctx.groups:
        means = {
            k: [mean_std([row.get(k) for row in r.train_rows])[0] for r in g.runs] for k in keys
        }
        table.append([g.label, *(_pm(v) for v in means.values())])
        ctx.record(g, "filter_fractions", {k: mean_std(v) for k, v in means.items()})
    text = "Fraction of tokens kept / clipped per step, averaged over training."
    for label, note in idle_notes(ctx.groups).items():
        ctx.record(next(g for g in ctx.groups if g.label == label), "idle_filter", note)
        ctx.notes.append(note)
        text += f"\n\nIdle filter: {note}."
    figure = render.filters(ctx.groups, keys, ctx.out, ctx.plt)
    return [Section("Filter fractions", text, [(["group", *keys], table)], [figure])]


def _sweeps(ctx: _Context) -> list[Section]:
    sections = []
    usable = [k for k in ctx.ks if k <= min(_samples_per_problem(ctx.runs, ctx.ks), default=1e9)]
    pass_key = f"pass@{max(usable, default=ctx.ks[0])}"
    for key in swept_keys(ctx.groups):
        short = key.rsplit(".", 1)[-1]
        table = [
            [
                g.method,
                str(g.settings[key]),
                _pm([final_value(r, "entropy/mean") for r in g.runs]),
                _pm([run_scores(r, ctx.ks)[1].get(pass_key, math.nan) for r in g.runs]),
            ]
            for g in ctx.groups
            if key in g.settings
        ]
        text = (
            f"Final rollout entropy and {pass_key} ({_split_of(ctx.runs)} split) against {key} "
            "(mean ± std over seeds). These are the reported numbers, not the ones a value is "
            "chosen by: choose on the validation split (--select)."
        )
        figure = render.sweep(ctx.groups, key, short, pass_key, ctx.ks, ctx.out, ctx.plt)
        header = ["method", short, "final entropy", pass_key]
        sections.append(Section(f"Sweep over {short}", text, [(header, table)], [figure]))
    return sections


def _selection(ctx: _Context) -> list[Section]:
    if not ctx.selections:
        return []
    ctx.summary["selection"] = selection_summary(ctx.selections)
    first = ctx.selections[0]
    name = f"mean {first.metric} ({first.split})"
    header, table = ["method", "value", name, "seeds", "chosen"], []
    for selection in ctx.selections:
        for c in selection.candidates:
            value = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in c.settings.items())
            mark = "yes" if c is selection.chosen else ""
            table.append([selection.method, value, f"{c.mean:.3f}", str(c.n), mark])
    text = " ".join(f"{s.sentence}." for s in ctx.selections) + (
        f" Rule: the highest mean over seeds on the {first.split} split's problems, disjoint "
        "from the test problems the other tables report."
    )
    return [Section(f"Selection on the {first.split} split", text, [(header, table)])]


def _samples(ctx: _Context) -> list[Section]:
    rows = sample_table([run.path for run in ctx.runs])
    text = ("The completions each run logged at its last sampled step (logging.samples_every); "
            "each token's H and S_k are in the run's samples.jsonl.")  # fmt: skip
    return [Section("Sample completions", text, [(SAMPLES_HEADER, rows)])] if rows else []


_SECTIONS = (
    _overview,
    _final_scores,
    _vs_baseline,
    _predictions,
    _quadrants,
    _pass_rate_section,
    _filter_section,
    _sweeps,
    _selection,
    _samples,
)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    ks: Sequence[int] = (1, 8),
    title: str = "Entropy dynamics: comparison of runs",
    *,
    baseline: str | None = None,
    select_metric: str | None = None,
    select_split: str = "validation",
) -> ReportResult:
    """Write ``report.md``, ``report.html`` (images embedded), ``figures/*.png`` and
    ``summary.json`` into ``out_dir`` for the runs in ``run_dirs`` (folders of runs expand).

    Args:
        baseline: the group (label, or method: its first group) the vs-baseline tables compare
            with; default the first group of method ``grpo`` (none: the tables are skipped, and
            the report says so).
        select_metric: choose each sweep's value by this metric on ``select_split``
            (:func:`~entropy_dynamics.study.selection.select`); checked before anything is
            written.

    Raises:
        ValueError: bad ``ks``, no runs, or a selection that cannot be made (test split, no
            sweep, runs without a validation record).
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: need positive Pass@k values, got {ks}")
    groups = group_runs(load_runs(run_dirs))
    selections = select(groups, select_metric, select_split) if select_metric else []
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
    ctx = _Context(groups, ks, out / "figures", summary, render.pyplot(), baseline, selections)
    sections = [section for build in _SECTIONS for section in build(ctx)]
    markdown, page = out / "report.md", out / "report.html"
    markdown.write_text(render.markdown(title, sections, out))
    page.write_text(render.page(title, sections))
    (out / "summary.json").write_text(json_text(summary) + "\n")
    figures = [p for s in sections for p in s.figures]
    return ReportResult(
        markdown, page, figures, summary, ctx.baseline_tables, ctx.notes, selections
    )
