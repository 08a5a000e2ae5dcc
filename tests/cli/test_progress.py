"""What a training run shows (``cli/_progress.py``) when its output is not a terminal (nohup,
slurm, a pipe): plain lines, none with ``--quiet``, and an idle filter named."""

from __future__ import annotations

from typer.testing import CliRunner

from entropy_dynamics.cli import app


def _train(tmp_path, model_dir, name: str, *extra: str) -> str:
    args = [
        "train",
        f"model.path={model_dir}",
        f"output_dir={tmp_path}",
        f"name={name}",
        "steps=3",
        "eval.every=0",
        "tensorboard=false",
        "rollout.prompts_per_step=1",
        "rollout.group_size=2",
        "rollout.max_new_tokens=4",
        *extra,
    ]
    done = CliRunner().invoke(app, args)  # CliRunner's output is not a terminal
    assert done.exit_code == 0, done.output
    return done.output


def test_a_plain_line_per_logged_step_without_a_terminal(tmp_path, random_model_dir) -> None:
    lines = [
        line
        for line in _train(tmp_path, random_model_dir, "plain").splitlines()
        if line.startswith("step ")
    ]
    assert [line.split(" | ")[0] for line in lines] == ["step 1/3", "step 3/3"]
    for line in lines:
        assert "s/step" in line and "ETA" in line and "H=" in line and "reward=" in line


def test_quiet_prints_no_step_lines(tmp_path, random_model_dir) -> None:
    output = _train(tmp_path, random_model_dir, "quiet", "--quiet")
    assert not any(line.startswith("step ") for line in output.splitlines())
    assert "Run summary" in output


def test_an_idle_filter_is_named_during_the_run_and_in_the_summary(tmp_path, random_model_dir):
    # 2 x 4 response tokens per step: no z-score can reach Clip_V's 8.5 sigma (max sqrt(n - 1)),
    # so the filter drops nothing and must be called idle once 20 steps are in.
    output = _train(tmp_path, random_model_dir, "idle", "steps=20", "--method", "clip_v")
    flat = " ".join(output.split())
    assert flat.count("clip_v is idle: it dropped 0.000% of tokens over the last 20 steps") == 2
    assert "step 20: clip_v is idle" in flat and "note: clip_v is idle" in flat
    assert "mu=8.5, max_frac=0.0001" in flat
