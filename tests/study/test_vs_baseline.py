"""The vs-baseline tables (``study/vs_baseline.py``) against hand computations on runs written to
disk: 2 groups × 3 seeds with known final evaluations and training rows; the tables as the report
writes them (Markdown and ``summary.json``), the split each number names, ``null`` for NaN.

Paired t with 2 degrees of freedom has a closed form: the two-sided p-value of ``t`` is
``1 - |t| / √(2 + t²)``, and ``t_{0.975, 2} = 4.302653``. The runs' numbers: ``report_helpers``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from entropy_dynamics.study.report import write_report
from entropy_dynamics.study.runs import group_runs, load_runs
from entropy_dynamics.study.statistics import hierarchical_bootstrap, pass_at_k_matrix
from entropy_dynamics.study.vs_baseline import (
    find_baseline,
    measure,
    metrics_for,
    pass_rate_counts,
    vs_baseline_tables,
)
from report_helpers import CORRECT, write_run

T_975_2 = 4.302653
"""Student t's 0.975 quantile at 2 degrees of freedom."""


def p_two_sided_df2(t: float) -> float:
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for method in ("grpo", "clip_b"):
        for seed in range(3):
            write_run(root, method, seed)
    return root


def _cells(tables) -> dict[tuple[str, str], object]:
    return {(c.group, c.metric.key): c for t in tables for c in t.cells}


def test_vs_baseline_against_hand_computations(runs) -> None:
    groups = group_runs(load_runs([runs]))
    baseline, why = find_baseline(groups)
    assert baseline.label == "grpo" and why == ""
    tables = vs_baseline_tables(groups, [1, 4], baseline)
    assert [t.family for t in tables] == ["scores", "entropy", "filter", "pass_rates"]
    cells = _cells(tables)

    # pass@1 = Σc / 16: grpo 6, 8, 4 → .375, .5, .25; clip_b 8, 9, 7 → .5, .5625, .4375.
    # Δ = .125, .0625, .1875: mean .125, s = .0625, t = .125 / (.0625/√3) = 2√3.
    pass1 = cells["clip_b", "pass@1"].comparison
    assert pass1.difference.mean == pytest.approx(0.125)
    half = T_975_2 * 0.0625 / math.sqrt(3)
    assert pass1.difference.low == pytest.approx(0.125 - half, abs=1e-6)
    assert pass1.difference.high == pytest.approx(0.125 + half, abs=1e-6)
    assert pass1.difference.n == 3
    assert pass1.p_value == pytest.approx(p_two_sided_df2(2 * math.sqrt(3)), rel=1e-9)
    # Pass@4 (k = n): the share of problems with a correct sample: grpo .5 each seed, clip_b
    # 1, .75, 1 → Δ .5, .25, .5: mean 5/12, s = .144338, t = 5.
    pass4 = cells["clip_b", "pass@4"].comparison
    assert pass4.difference.mean == pytest.approx(5 / 12)
    p4 = p_two_sided_df2(5.0)
    assert pass4.p_value == pytest.approx(p4, rel=1e-9)
    # Holm over the 2 cells: .03775·2 = .0755 first; then max(.0755, .07418 · 1) = .0755.
    assert pass4.p_adjusted == pytest.approx(2 * p4, rel=1e-9)
    assert pass1.p_adjusted == pytest.approx(2 * p4, rel=1e-9)
    # The bootstrap pairs the same (seed, problem) draws: the per-problem matrices, seed rows.
    grpo = pass_at_k_matrix(np.array(CORRECT["grpo"]), 4, 1)  # (3 seeds, 4 problems)
    clip = pass_at_k_matrix(np.array(CORRECT["clip_b"]), 4, 1)
    assert pass1.bootstrap == hierarchical_bootstrap(clip, grpo)

    # Held-out entropy: Δ .05, .03, .07 → mean .05, s .02, t = √3 · 2.5; rollout entropy of the
    # last 20 steps (the first 5 at 9.0 left out): Δ .10, .09, .11 → s .01, t = 10√3.
    entropy = cells["clip_b", "final_entropy"].comparison
    rollout = cells["clip_b", "rollout_entropy"].comparison
    assert entropy.difference.mean == pytest.approx(0.05)
    assert rollout.difference.mean == pytest.approx(0.10)
    p_entropy, p_rollout = p_two_sided_df2(2.5 * math.sqrt(3)), p_two_sided_df2(10 * math.sqrt(3))
    assert entropy.p_value == pytest.approx(p_entropy, rel=1e-6)
    assert rollout.p_value == pytest.approx(p_rollout, rel=1e-6)
    assert rollout.p_adjusted == pytest.approx(2 * p_rollout, rel=1e-6)
    assert entropy.p_adjusted == pytest.approx(p_entropy, rel=1e-6)  # max(2·p_r, p_e) = p_e
    assert entropy.bootstrap is None and rollout.bootstrap is None  # no per-problem entropy

    # Dropped share 1 − mean kept: Δ .01, .02, .03; one cell, so Holm leaves p alone.
    dropped = cells["clip_b", "dropped_share"].comparison
    assert dropped.difference.mean == pytest.approx(0.02)
    assert dropped.p_value == pytest.approx(p_two_sided_df2(2 * math.sqrt(3)), rel=1e-6)
    assert dropped.p_adjusted == dropped.p_value

    # Never solved: grpo 2, 2, 2; clip_b 0, 1, 0 → Δ −2, −1, −2: mean −5/3, t = −5.
    # Always solved: 1, 2, 0 both → Δ 0 each: p = 1; Holm: .0755 and 1.
    never = cells["clip_b", "never_solved"].comparison
    always = cells["clip_b", "always_solved"].comparison
    assert never.difference.mean == pytest.approx(-5 / 3)
    assert never.p_adjusted == pytest.approx(2 * p4, rel=1e-9)
    assert always.difference.mean == 0.0 and always.p_adjusted == 1.0

    # Splits: the final evaluation's numbers are the test split's, training's "train".
    assert cells["clip_b", "pass@1"].split == "test"
    assert cells["clip_b", "final_entropy"].split == "test"
    assert cells["clip_b", "rollout_entropy"].split == "train"
    assert tables[0].splits == "test"
    assert tables[1].splits == "test (final entropy); train (rollout entropy, last 20 steps)"
    sentence = tables[0].sentence
    assert "Holm-adjusted over the 2 cells of this table; split: test." in sentence
    assert "bootstrap: 10,000 resamples of seeds and, within them, the split's problems" in sentence
    assert "bootstrap" not in tables[2].sentence  # the dropped share has no problems


def test_pass_rate_counts_per_group(runs) -> None:
    header, rows, record = pass_rate_counts(group_runs(load_runs([runs])))
    assert header[-2:] == ["never solved", "always solved"]
    by_group = {row[0]: row for row in rows}
    # grpo never solved 2, 2, 2: mean 2 with a zero-width interval; always 1, 2, 0: mean 1,
    # s = 1, half-width 4.302653 / √3 = 2.484.
    assert by_group["grpo"] == ["grpo", "test", "4", "3", "2.0 [2.0, 2.0]", "1.0 [-1.5, 3.5]"]
    assert record["grpo"]["always_solved"]["t_interval"] == pytest.approx(
        [1 - T_975_2 / math.sqrt(3), 1 + T_975_2 / math.sqrt(3)], abs=1e-6
    )
    assert record["clip_b"]["never_solved"]["mean"] == pytest.approx(1 / 3)


def test_an_older_run_is_held_out_and_not_paired_with_test(tmp_path) -> None:
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "grpo", seed)
        write_run(root, "clip_b", seed, split=None if seed == 2 else "test")
    groups = group_runs(load_runs([root]))
    grpo, clip_b = (next(g for g in groups if g.method == m) for m in ("grpo", "clip_b"))
    old = next(r for r in clip_b.runs if r.seed == 2)
    pass1 = next(m for m in metrics_for([1]) if m.key == "pass@1")
    assert measure(old, pass1).split == "held-out"  # never silently "test"
    tables = vs_baseline_tables(groups, [1], grpo)
    cell = _cells(tables)["clip_b", "pass@1"]
    # Seed 2's held-out number is not paired with GRPO's test number: n = 2, Δ .125, .0625.
    assert cell.split == "test" and cell.comparison.difference.n == 2
    assert cell.comparison.difference.mean == pytest.approx(0.09375)
    # The rollout entropy is a training number: all three seeds pair.
    assert _cells(tables)["clip_b", "rollout_entropy"].comparison.difference.n == 3


def test_report_writes_the_tables_and_strict_json(runs, tmp_path) -> None:
    result = write_report([runs], tmp_path / "report", ks=(1, 4, 8))
    text = result.markdown.read_text()
    assert "## Against grpo: final scores" in text
    line = next(x for x in text.splitlines() if x.startswith("| clip_b | pass@1 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # group, metric, split, n, Δ, t interval, bootstrap, p, p (Holm)
    assert cells[:5] == ["clip_b", "pass@1", "test", "3", "+0.125"]
    assert cells[5] == "[-0.030, +0.280]"  # .125 ± .15526
    assert cells[7:] == ["0.074", "0.075"]  # 1 - 2√3/√14; 2 · (1 - 5/√27) = 0.07550
    assert "Holm-adjusted over the 2 cells of this table; split: test." in text
    assert "| grpo | 3 | test |" in text  # the final scores name their split

    raw = (tmp_path / "report" / "summary.json").read_text()
    summary = json.loads(raw, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    # Pass@8 is above the 4 samples per problem: undefined, written null (was a bare NaN).
    assert summary["groups"]["grpo"]["final"]["pass@8"] == [None, None]
    tables = {t["family"]: t for t in summary["vs_baseline"]["tables"]}
    cell = next(c for c in tables["scores"]["cells"] if c["metric"] == "pass@1")
    assert cell["split"] == "test" and cell["n"] == 3
    assert cell["delta"] == pytest.approx(0.125)
    assert cell["p_holm"] == pytest.approx(2 * p_two_sided_df2(5.0), rel=1e-9)
    assert summary["vs_baseline"]["baseline"] == "grpo"
    assert summary["groups"]["clip_b"]["pass_rate_counts"]["split"] == "test"


def test_no_baseline_group_is_said_and_the_tables_skipped(tmp_path) -> None:
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "clip_b", seed)
    result = write_report([root], tmp_path / "report", ks=(1,))
    assert result.baseline_tables == []
    assert any("no group 'grpo'" in note and "--baseline" in note for note in result.notes)
    assert "the vs-baseline tables are skipped" in result.markdown.read_text()
    other = write_report([root], tmp_path / "report2", ks=(1,), baseline="clip_b")
    assert other.baseline_tables == []  # the baseline alone: nothing to compare
