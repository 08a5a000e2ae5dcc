"""The results scripts (``docs/results/*.py``) run on the committed data and take their statistics
from the library (``entropy_dynamics.study.statistics``): no private bootstrap or interval code."""

from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from entropy_dynamics.study.statistics import paired_difference, t_interval
from entropy_dynamics.training.metrics import read_metrics
from report_helpers import CORRECT, write_run

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
COLLAPSE = RESULTS / "collapse.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(COLLAPSE), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


def test_no_script_has_its_own_bootstrap_or_interval() -> None:
    for script in RESULTS.glob("*.py"):
        text = script.read_text()
        assert not re.search(r"rng\.integers|np\.percentile|\.ppf\(|stdev\(", text), script.name


COMMITTED = sorted(
    p.relative_to(RESULTS)
    for folder in ("collapse", "protocol", "search")
    for p in (RESULTS / folder).rglob("summary.json")
    if "groups" in json.loads(p.read_text())  # collapse.py's (not a report's) summaries
)


@pytest.mark.parametrize("summary", COMMITTED, ids=str)
def test_collapse_recomputes_the_committed_summaries(summary, tmp_path) -> None:
    _run("--from-summary", str(RESULTS / summary), "-o", str(tmp_path), "--ks", "1,4,8,16")
    old = json.loads((RESULTS / summary).read_text())["groups"]
    new = json.loads((tmp_path / "summary.json").read_text())["groups"]  # strict JSON
    for label, entry in new.items():
        per_seed = old[label]["per_seed"]
        values = [v["rollout_entropy_last"] for v in per_seed.values()]
        interval = t_interval(values)
        assert entry["mean_ci"]["rollout_entropy_last"] == pytest.approx(
            [interval.mean, interval.low, interval.high], nan_ok=True
        )
        # the committed table's numbers (collapse/ holds issue 18's percentile-bootstrap
        # intervals, which the protocol replaced: only its means are the same)
        for key, committed in old[label]["mean_ci"].items():
            expected = committed[:1] if summary.parts[0] == "collapse" else committed
            got = entry["mean_ci"][key][: len(expected)]
            assert got == pytest.approx(expected, abs=5e-4, nan_ok=True), key
        if "heldout_entropy" in next(iter(per_seed.values())):
            # collapse/: evaluated before the splits existed, never "test"
            assert entry["split"] == ("held-out" if summary.parts[0] == "collapse" else "test")
    assert (tmp_path / "table.md").is_file()


def test_collapse_on_runs_pairs_by_seed_and_bootstraps(tmp_path) -> None:
    root = tmp_path / "runs"
    for method in ("grpo", "clip_b"):
        for seed in range(3):
            write_run(root, method, seed)
    out = tmp_path / "out"
    _run(str(root), "-o", str(out), "--ks", "1,4", "--no-figure")
    groups = json.loads((out / "summary.json").read_text())["groups"]
    assert groups["grpo"]["split"] == "test"
    cell = groups["clip_b"]["minus_grpo"]["pass@1"]
    # report_helpers: pass@1 per seed grpo .375, .5, .25; clip_b .5, .5625, .4375.
    interval, p = paired_difference([0.5, 0.5625, 0.4375], [0.375, 0.5, 0.25])
    assert cell["delta"] == pytest.approx(0.125)
    assert cell["t_interval"] == pytest.approx([interval.low, interval.high])
    assert cell["p"] == pytest.approx(p) and cell["n"] == 3
    assert cell["p_holm"] >= cell["p"]
    low, high = cell["bootstrap"]
    assert low <= 0.125 <= high and not math.isnan(low)
    assert "Holm-adjusted over the" in (out / "table.md").read_text()


def _grid_and_initial(tmp_path) -> tuple[Path, Path]:
    """Three seeds of grpo and clip_b (``report_helpers``) and the untrained model's scores as
    ``entropy-dynamics eval --output`` writes them: 0, 0, 4, 1 of 4 samples correct."""
    root = tmp_path / "runs"
    for method in ("grpo", "clip_b"):
        for seed in range(3):
            write_run(root, method, seed)
    initial = tmp_path / "base.json"
    record = {"split": "test", "k": 4, "per_problem_correct": [0, 0, 4, 1]}
    initial.write_text(json.dumps({**record, "metrics": {"eval/entropy": 0.4}}))
    return root, initial


def test_collapse_counts_never_and_always_solved_and_the_initial_model(tmp_path) -> None:
    root, initial = _grid_and_initial(tmp_path)
    out = tmp_path / "out"
    _run(str(root), "-o", str(out), "--ks", "1,4", "--no-figure", "--initial", str(initial))
    summary = json.loads((out / "summary.json").read_text())
    groups = summary["groups"]
    # report_helpers.CORRECT: problems with 0 of 4 correct / 4 of 4, per seed
    assert [v["never_solved"] for v in groups["grpo"]["per_seed"].values()] == [2, 2, 2]
    assert [v["always_solved"] for v in groups["grpo"]["per_seed"].values()] == [1, 2, 0]
    assert [v["never_solved"] for v in groups["clip_b"]["per_seed"].values()] == [0, 1, 0]
    assert groups["clip_b"]["minus_grpo_ci"]["never_solved"][0] == pytest.approx(-5 / 3)
    assert summary["meta"]["initial"]["never_solved"] == 2
    assert summary["meta"]["initial"]["pass@1"] == pytest.approx(5 / 16)
    text = (out / "table.md").read_text()
    assert "| model before training (test) | — |" in text
    assert "| clip_b | 2.00 % | 0.3 [" in text  # dropped 1 - mean(.99, .98, .97)
    # --from-summary keeps the initial model's row
    again = tmp_path / "again"
    _run("--from-summary", str(out / "summary.json"), "-o", str(again), "--ks", "1,4")
    assert "| model before training (test) | — |" in (again / "table.md").read_text()


def test_default_run_pairs_start_and_end_by_seed(tmp_path) -> None:
    root = tmp_path / "runs"
    rng = __import__("random").Random(0)
    for seed in range(3):
        run = write_run(root, "grpo", seed)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for i, row in enumerate(rows):  # actual = 2 x first order (r 1); falls on odd steps
            actual = (-1) ** i * (i + 1) * 0.01
            row.update({"dynamics/delta_h_actual": actual,
                        "dynamics/delta_h_first_order": actual / 2,
                        "dynamics/delta_h_thm33": rng.random()})  # fmt: skip
        start = {"step": 0, "eval/entropy": 0.4, "eval/pass@1": 0.2, "eval/pass@8": 0.6}
        end = {"step": 25, "eval/entropy": 0.3 - 0.01 * seed, "eval/pass@1": 0.25,
               "eval/pass@8": 0.5}  # fmt: skip
        lines = [start, *rows[:-1], {**rows[-1], **end}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(RESULTS / "default_run.py"), str(root), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    change = summary["changes"]["validation entropy"]
    interval, p = paired_difference([0.3, 0.29, 0.28], [0.4, 0.4, 0.4])
    assert change["delta"] == pytest.approx(-0.11)
    assert change["t_interval"] == pytest.approx([interval.low, interval.high])
    assert change["p"] == pytest.approx(p) and change["n"] == 3
    assert summary["mean_ci"]["r_first_order"][0] == pytest.approx(1.0)
    assert summary["mean_ci"]["steps_entropy_fell"][0] == 12  # steps 2, 4, ..., 24 of 25
    first = summary["per_seed"]["0"]["rollout_entropy_first"]
    assert first == pytest.approx((5 * 9.0 + 15 * 0.20) / 20)  # report_helpers' first 20 steps
    assert summary["mean_ci"]["test_pass@1"][0] == pytest.approx(
        np.mean([np.mean(c) / 4 for c in CORRECT["grpo"]])
    )
    assert "| validation Pass@8 | 0.600 [0.600, 0.600] | 0.500 [" in (out / "table.md").read_text()


def test_lengths_per_task_side_by_side(tmp_path) -> None:
    # response/length_mean of seed s at step t: 10 + s for the first 20 steps, 4 + s after;
    # actor/frac_kept as report_helpers writes it (1 for grpo)
    tasks = {}
    for task, scale in (("short", 1.0), ("long", 10.0)):
        root = tmp_path / task
        for method in ("grpo", "clip_b"):
            for seed in range(3):
                run = write_run(root, method, seed)
                rows = read_metrics(run / "metrics.jsonl")
                for row in rows:
                    row["response/length_mean"] = scale * ((10 if row["step"] <= 20 else 4) + seed)
                    if method == "clip_b":  # the share of negative-advantage tokens it dropped
                        row["clip_b/frac_clipped_neg"] = 0.01 * (seed + 1)
                (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        tasks[task] = root
    out = tmp_path / "out"
    args = [arg for task, root in tasks.items() for arg in ("--task", task, str(root))]
    done = subprocess.run(
        [sys.executable, str(RESULTS / "lengths.py"), *args, "-o", str(out), "--no-figure"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "lengths.json").read_text())
    assert set(summary) == {"short", "long"}
    for task, scale in (("short", 1.0), ("long", 10.0)):
        grpo, clip_b = summary[task]["grpo"], summary[task]["clip_b"]
        steps = len(read_metrics(tasks[task] / "grpo-seed0" / "metrics.jsonl"))
        lengths = [scale * (np.mean([10] * 20 + [4] * (steps - 20)) + s) for s in range(3)]
        interval = t_interval([length * 128 for length in lengths])  # 16 prompts x 8 samples
        assert grpo["mean_ci"]["tokens_per_batch"] == pytest.approx(
            [interval.mean, interval.low, interval.high]
        )
        first = [v["length_first"] for v in grpo["per_seed"].values()]
        assert first == pytest.approx([scale * (10 + s) for s in range(3)])
        assert grpo["mean_ci"]["frac_dropped"][0] == pytest.approx(0.0)
        assert clip_b["mean_ci"]["frac_dropped"][0] > 0
        assert clip_b["mean_ci"]["frac_dropped_neg"][0] == pytest.approx(0.02)
        assert math.isnan(grpo["mean_ci"]["frac_dropped_neg"][0])  # no filter: no such metric
    text = (out / "lengths.md").read_text()
    assert "| long | clip_b | 3 |" in text and "| 2.000 % [" in text
    assert re.search(r"\| long \| grpo \| 3 \|.* \| — \|$", text, re.M)


def test_pass_rates_histogram_counts_problems_per_number_solved(tmp_path) -> None:
    root, initial = _grid_and_initial(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(RESULTS / "pass_rates.py"), str(root), "-o", str(out),
         "--initial", str(initial), "--rename", "clip_b->Clip_B", "--no-figure"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "pass_rates.json").read_text())
    assert summary["n"] == 4 and summary["initial"] == [2, 1, 0, 0, 1]
    # report_helpers.CORRECT, counted by hand: problems with 0, 1, 2, 3, 4 of 4 correct
    grpo = summary["groups"]["grpo"]
    assert grpo["per_seed"] == {"0": [2, 0, 1, 0, 1], "1": [2, 0, 0, 0, 2], "2": [2, 0, 2, 0, 0]}
    assert summary["groups"]["Clip_B"]["per_seed"]["0"] == [0, 2, 1, 0, 1]
    interval = t_interval([1, 2, 0])  # always solved, over the three seeds
    assert grpo["per_count"][4] == pytest.approx([interval.mean, interval.low, interval.high])
    # bands at n = 4: never, 1, 2, 3 of 4, always; a band sums its counts
    assert [label for label, _, _ in summary["bands"]] == [
        "0 of 4 (never)", "1 of 4", "2 of 4", "3 of 4", "4 of 4 (always)"
    ]  # fmt: skip
    assert summary["groups"]["Clip_B"]["per_band"][1][0] == pytest.approx(5 / 3)  # 2, 1, 2
    text = (out / "pass_rates.md").read_text()
    assert "| *model before training* | 1 | 2 | 1 | 0 | 0 | 1 |" in text
    assert "| Clip_B | 3 | 0.3 [" in text


def test_traces_counts_operations_backtracking_and_moves_per_problem(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(RESULTS))  # the script imports its sibling collapse.py
    traces = importlib.import_module("traces")
    completions = [  # two problems, k = 2 answers each
        "7*3=21 [5 8 21]\nback [3 5 7 8]\n8*3=24 [5 7 24]\nanswer: 8*3-(7-5)",
        "8*3=24 [5 7 24]\n24-2=22 [22]\nanswer: 8*3-2",
        "answer: none",
        "2+2=4 [4] dead end\nanswer: 2+2",
    ]
    values = traces.trace_values(completions, [True, False, False, False], k=2)
    assert values == pytest.approx(
        {
            "operations": (2 + 2 + 0 + 1) / 4,
            "backs": 1 / 4,
            "backtracking": 1 / 4,
            "first_moves": (2 + 1) / 2,  # {7*3, 8*3}; {2+2} (no operation: no first move)
            "operations_tried": (3 + 1) / 2,  # {7*3, 8*3, 24-2}; {2+2}
            "correct": 1 / 4,
        }
    )
