"""``train`` and ``eval`` (``cli/train.py``): eval's scores and the run's final evaluation written
into the run, ``--final-eval`` without a run and a Pass@k above ``--k`` refused, a
``--model``'s config overrides; the dry run's
pre-flight (the real start's), a finished run's ``--resume``, a run without reward variance.
Training's own output: ``test_progress.py``; refusals of bad input: ``test_bad_inputs.py``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from run_helpers import train_one_step


def test_eval_writes_its_scores_and_the_final_evaluation_into_the_run(tmp_path, random_model_dir):
    train_one_step(tmp_path, random_model_dir, "r")
    run = tmp_path / "r"
    args = ["eval", "--run", str(run), "--k", "4", "--problems", "3", "--ks", "1,2,4"]
    done = CliRunner().invoke(app, [*args, "--final-eval"])
    assert done.exit_code == 0, done.output
    assert "Evaluation on the test split" in done.output
    scores = json.loads((run / "eval.json").read_text())
    assert scores["split"] == "test"
    assert sorted(k for k in scores["metrics"] if "pass@" in k) == [
        "eval/pass@1", "eval/pass@2", "eval/pass@4"
    ]  # fmt: skip
    assert len(scores["per_problem_correct"]) == 3
    assert all(0 <= c <= 4 for c in scores["per_problem_correct"])
    final = json.loads((run / "final_eval.json").read_text())
    assert final["k"] == 2 and len(final["correct"]) == 2  # the run's own eval settings
    assert final["split"] == "test" and final["validation"]["split"] == "validation"
    assert len(final["validation"]["correct"]) == 2


def test_eval_of_the_validation_split_says_so(tmp_path, random_model_dir) -> None:
    train_one_step(tmp_path, random_model_dir, "r")
    output = tmp_path / "v.json"
    args = ["eval", "--run", str(tmp_path / "r"), "--k", "2", "--problems", "2"]
    done = CliRunner().invoke(app, [*args, "--split", "validation", "-o", str(output)])
    assert done.exit_code == 0, done.output
    assert "Evaluation on the validation split" in done.output
    assert json.loads(output.read_text())["split"] == "validation"
    refused = CliRunner().invoke(app, [*args, "--split", "train"])
    assert refused.exit_code == 2 and "--split" in refused.output


def test_eval_of_a_model_takes_config_overrides(tmp_path, random_model_dir) -> None:
    # countdown_search with a 40-token cap: a random model rarely stops, so its answers run past
    # eval's default 32 tokens, which only the override's cap allows
    output = tmp_path / "search.json"
    args = ["eval", "--model", str(random_model_dir), "--k", "2", "--problems", "1", "-o"]
    overrides = ["task.name=countdown_search", "rollout.max_new_tokens=40"]
    done = CliRunner().invoke(app, [*args, str(output), *overrides])
    assert done.exit_code == 0, done.output
    assert json.loads(output.read_text())["metrics"]["eval/response_length"] > 32
    bad = CliRunner().invoke(app, [*args, str(output), "task.nme=countdown_search"])
    assert bad.exit_code == 2 and "task.nme" in bad.output


def test_train_task_countdown_search_runs_on_its_embedded_model(tmp_path) -> None:
    # --task: the task, its embedded model (no model.path) and its settings, under key=value
    quick = ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=48",
             "eval.every=0", "eval.problems=1", "eval.k=1", "tensorboard=false", "steps=1"]
    args = ["train", "--task", "countdown_search", f"output_dir={tmp_path}", "name=s", *quick]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    saved = (tmp_path / "s" / "config.yaml").read_text()
    assert "name: countdown_search" in saved and "micro_batch_tokens: 2048" in saved
    assert "max_new_tokens: 48" in saved  # the user's value over the preset's 512
    provenance = json.loads((tmp_path / "s" / "provenance.json").read_text())
    assert provenance["resolved"]["model.path"].endswith("countdown-search-tiny")
    refused = CliRunner().invoke(app, ["train", "--task", "sudoku", "--dry-run"])
    assert refused.exit_code == 2, refused.output
    assert "choose from countdown, countdown_search, math" in refused.output


def test_eval_overrides_need_a_model_not_a_run(tmp_path) -> None:
    done = CliRunner().invoke(app, ["eval", "--run", str(tmp_path), "task.name=countdown_search"])
    assert done.exit_code == 2 and "apply to --model" in done.output
    done = CliRunner().invoke(app, ["eval", "--run", str(tmp_path), "--task", "countdown_search"])
    assert done.exit_code == 2 and "--task" in done.output


def test_eval_task_scores_the_tasks_embedded_model(tmp_path) -> None:
    output = tmp_path / "search.json"
    args = ["eval", "--task", "countdown_search", "--k", "2", "--problems", "1", "-o", str(output)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    scores = json.loads(output.read_text())
    assert scores["model"].endswith("countdown-search-tiny")
    assert scores["metrics"]["eval/format_rate"] > 0  # traces ending in an answer line


def test_final_eval_needs_a_run(tmp_path) -> None:
    done = CliRunner().invoke(app, ["eval", "--final-eval", "--problems", "1", "--k", "1"])
    assert done.exit_code == 2 and "--final-eval needs --run" in done.output


def test_eval_defaults_are_the_runs_own_eval_settings(tmp_path, random_model_dir) -> None:
    # the run: eval.k=2, eval.problems=2 (SMALL); eval --run without flags scores the same
    from entropy_dynamics.training.config import load_config

    train_one_step(tmp_path, random_model_dir, "r")
    run = tmp_path / "r"
    settings = load_config(run / "config.yaml").eval
    assert (settings.k, settings.problems) == (2, 2)
    done = CliRunner().invoke(app, ["eval", "--run", str(run)])
    assert done.exit_code == 0, done.output
    scores = json.loads((run / "eval.json").read_text())
    assert len(scores["per_problem_correct"]) == 2 and "eval/avg@2" in scores["metrics"]
    done = CliRunner().invoke(app, ["eval", "--run", str(run), "--k", "3", "--problems", "1"])
    assert done.exit_code == 0, done.output  # a flag overrides the run's setting
    scores = json.loads((run / "eval.json").read_text())
    assert len(scores["per_problem_correct"]) == 1 and "eval/avg@3" in scores["metrics"]


def test_a_pass_at_k_above_k_is_refused_never_dropped(tmp_path) -> None:
    # Pass@8 needs 8 samples per problem: with --k 4 it is a clear exit-2 error (it used to be an
    # "internal error" alone, and silently dropped beside 1), on stderr, before any model loads
    for ks in ("8", "1,8"):
        done = CliRunner().invoke(app, ["eval", "--k", "4", "--ks", ks, "--problems", "1"])
        assert done.exit_code == 2, done.output
        assert "error: --ks: Pass@8 needs at least 8 samples" in done.stderr
        assert "raise --k to 8" in done.stderr and done.stdout == ""


def test_a_run_whose_groups_all_score_alike_is_warned_and_logged(tmp_path, random_model_dir):
    # the random model is never right: every group's rewards are equal, nothing is learnt
    args = ["train", f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=flat",
            "steps=3", "eval.every=0", "tensorboard=false", "rollout.prompts_per_step=1",
            "rollout.group_size=2", "rollout.max_new_tokens=4"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    said = " ".join(done.stderr.split())
    assert "step 3: every group of the last 3 steps got one reward for all its samples" in said
    assert "note: every group of the last 3 steps" in said  # repeated under the summary
    rows = [json.loads(line) for line in (tmp_path / "flat" / "metrics.jsonl").open()]
    assert [row["reward/frac_zero_std"] for row in rows] == [1.0, 1.0, 1.0]
