"""The reporting side of ``report`` and ``compare`` (``cli/_reporting.py``): the vs-baseline tables
and notes printed, ``--select`` on an existing sweep, the test split refused before any run, and an
idle filter said by ``compare`` and in its report."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from report_helpers import write_run, write_sweep_run


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_report_prints_the_tables_and_the_selection(tmp_path) -> None:
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "grpo", seed)
        for mu in (1.0, 2.0):
            write_sweep_run(root, mu, seed)
    out = tmp_path / "report"
    args = ["report", str(root), "-o", str(out), "--ks", "1,4", "--select", "Pass@1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    flat = _flat(done.output)
    assert "Against grpo (steps=25): final scores" in flat  # the sweep ran 1 step
    assert "Holm-adjusted over the" in flat and "split: test" in flat
    assert (
        "selected clip_b: mu = 2.0 chosen on validation by mean pass@1 over 3 seeds; "
        "test numbers are not used to choose" in flat
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["methods"][0]["chosen"] == {"algorithm.loss.filter_options.mu": 2.0}


def test_report_names_runs_it_cannot_select_on(tmp_path) -> None:
    root = tmp_path / "runs"
    for mu in (1.0, 2.0):
        write_sweep_run(root, mu, 0, validation=False)
    done = CliRunner().invoke(app, ["report", str(root), "--select", "pass@1"])
    assert done.exit_code == 2
    joined = "".join(done.output.split())  # a long path is broken across lines
    assert "clip_b-mu=1.0-seed0hasnovalidationrecord" in joined
    assert "--evaluate-missing" in joined


def test_the_test_split_is_refused_before_any_run(tmp_path) -> None:
    out = tmp_path / "grid"
    sweep = "algorithm.loss.filter_options.mu=1.0,2.0"
    args = ["compare", "--methods", "clip_b", "--seeds", "1", "-o", str(out), "--select",
            "pass@1", "--select-split", "test", sweep]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert "--select-split validation" in _flat(done.output)
    assert not out.exists()  # nothing planned, nothing run
    done = CliRunner().invoke(app, ["report", str(tmp_path), "--select-split", "test"])
    assert done.exit_code == 2 and "--select-split validation" in _flat(done.output)


def test_compare_select_needs_a_sweep_and_the_final_evaluation(tmp_path) -> None:
    out = tmp_path / "grid"
    base = ["compare", "--methods", "grpo,clip_b", "--seeds", "1", "-o", str(out)]
    done = CliRunner().invoke(app, [*base, "--select", "pass@1"])
    assert done.exit_code == 2 and "chooses among the values of a sweep" in _flat(done.output)
    sweep = "clip_b:algorithm.loss.filter_options.mu=1.0,2.0"
    done = CliRunner().invoke(app, [*base, "--select", "pass@1", "--no-final-eval", sweep])
    assert done.exit_code == 2 and "drop --no-final-eval" in _flat(done.output)
    done = CliRunner().invoke(app, [*base, "--select", "pass@32", sweep, "eval.k=4"])
    assert done.exit_code == 2 and "fewer than 32" in _flat(done.output)
    assert not out.exists()


def test_compare_says_an_idle_filter_and_its_report_holds_it(tmp_path, random_model_dir) -> None:
    # The random model earns no reward: every advantage is 0, and Clip_B only ever drops tokens
    # with A < 0, so it drops nothing: idle once its 20 steps are in.
    out = tmp_path / "grid"
    args = ["compare", "--methods", "grpo,clip_b", "--seeds", "1", "-o", str(out),
            "--no-final-eval", f"model.path={random_model_dir}", "steps=20", "eval.every=0",
            "tensorboard=false", "threads=1", "rollout.prompts_per_step=1",
            "rollout.group_size=2", "rollout.max_new_tokens=4"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    flat = _flat(done.output)
    assert "note: clip_b (idle in 1 of 1 seeds; seed 0): clip_b is idle" in flat
    assert "grpo (idle" not in flat  # no filter, no notice
    report = _flat((out / "report" / "report.md").read_text())
    assert "Idle filter: clip_b (idle in 1 of 1 seeds; seed 0): clip_b is idle" in report
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert "clip_b is idle" in summary["groups"]["clip_b"]["idle_filter"]
