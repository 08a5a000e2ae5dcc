"""Results that stay on disk: eval's scores and final evaluation, the report beside its runs, and
no 'sweep' made of settings that only differ between methods."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.study.report import _sweep_keys
from entropy_dynamics.study.runs import Group

SMALL = [
    "eval.every=0",
    "tensorboard=false",
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
    "eval.problems=2",
    "eval.k=2",
]


def _run(tmp_path, model_dir, name: str) -> None:
    args = ["train", f"model.path={model_dir}", f"output_dir={tmp_path}", f"name={name}",
            "steps=1", *SMALL]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0


def test_eval_writes_its_scores_and_the_final_evaluation_into_the_run(tmp_path, random_model_dir):
    _run(tmp_path, random_model_dir, "r")
    run = tmp_path / "r"
    args = ["eval", "--run", str(run), "--k", "4", "--problems", "3", "--ks", "1,2,4,8"]
    done = CliRunner().invoke(app, [*args, "--final-eval"])
    assert done.exit_code == 0, done.output
    scores = json.loads((run / "eval.json").read_text())
    assert sorted(k for k in scores["metrics"] if "pass@" in k) == [
        "eval/pass@1", "eval/pass@2", "eval/pass@4"  # k = 8 > 4 samples is left out
    ]  # fmt: skip
    assert len(scores["per_problem_correct"]) == 3
    assert all(0 <= c <= 4 for c in scores["per_problem_correct"])
    final = json.loads((run / "final_eval.json").read_text())
    assert final["k"] == 2 and len(final["correct"]) == 2  # the run's own eval settings


def test_final_eval_needs_a_run(tmp_path) -> None:
    done = CliRunner().invoke(app, ["eval", "--final-eval", "--problems", "1", "--k", "1"])
    assert done.exit_code == 2 and "--final-eval needs --run" in done.output


def test_report_defaults_to_a_folder_beside_the_runs(tmp_path, random_model_dir, monkeypatch):
    _run(tmp_path / "runs", random_model_dir, "a")
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["report", str(tmp_path / "runs" / "a")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    assert not (tmp_path / "report").exists()


def test_settings_that_differ_only_between_methods_are_no_sweep() -> None:
    groups = [
        Group("grpo", "grpo", {"steps": 200}),
        Group("clip_b", "clip_b", {"steps": 20}),
    ]
    assert _sweep_keys(groups) == []
    groups.append(Group("clip_b (steps=40)", "clip_b", {"steps": 40}))
    assert _sweep_keys(groups) == ["steps"]
