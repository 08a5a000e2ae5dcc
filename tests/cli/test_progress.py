"""What a training run and a grid show (``cli/_progress.py``): off a terminal (nohup, slurm, a
pipe) plain lines, none with ``--quiet``, and an idle filter named; on a terminal a bar with ETA,
s/step and an "evaluating" status; an ETA that leaves the step-0 evaluation out of the time per
step; no row or cell that repeats another (acc = reward, avg@k = pass@1)."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from entropy_dynamics.cli import _progress, app
from entropy_dynamics.cli._progress import GridProgress, TrainDisplay, eval_cells
from entropy_dynamics.study.experiments import RunEvent


def _train(tmp_path, model_dir, name: str, *extra: str):
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
    return done  # progress and results on stdout, notices on stderr


def test_a_plain_line_per_logged_step_without_a_terminal(tmp_path, random_model_dir) -> None:
    lines = [
        line
        for line in _train(tmp_path, random_model_dir, "plain").stdout.splitlines()
        if line.startswith("step ")
    ]
    assert [line.split(" | ")[0] for line in lines] == ["step 1/3", "step 3/3"]
    for line in lines:
        assert "s/step" in line and "ETA" in line and "H=" in line and "acc=" in line
        assert "reward=" not in line  # Countdown's reward is its accuracy: one number, not two
    partial = _train(tmp_path, random_model_dir, "partial", "task.countdown.format_weight=0.5")
    assert "reward=" in next(ln for ln in partial.stdout.splitlines() if ln.startswith("step "))


def test_quiet_prints_no_step_lines(tmp_path, random_model_dir) -> None:
    output = _train(tmp_path, random_model_dir, "quiet", "--quiet").stdout
    assert not any(line.startswith("step ") for line in output.splitlines())
    assert "Run summary" in output


def test_an_idle_filter_is_named_during_the_run_and_in_the_summary(tmp_path, random_model_dir):
    # 2 x 4 response tokens per step: no z-score can reach Clip_V's 8.5 sigma (max sqrt(n - 1)),
    # so the filter drops nothing and must be called idle once 20 steps are in.
    done = _train(tmp_path, random_model_dir, "idle", "steps=20", "--method", "clip_v")
    flat = " ".join(done.stderr.split())  # notices: on stderr
    assert flat.count("clip_v is idle: it dropped 0.000% of tokens over the last 20 steps") == 2
    assert "step 20: clip_v is idle" in flat and "note: clip_v is idle" in flat
    assert "mu=8.5, max_frac=0.0001" in flat


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_leaves_the_step_0_evaluation_out_of_the_time_per_step(capsys) -> None:
    clock = _Clock()
    with TrainDisplay(10, 0, eval_every=10, clock=clock) as display:
        display.evaluating(0)
        clock.now = 100.0  # a 100 s evaluation before the first step
        display.evaluated(0, {"eval/avg@4": 0.25, "eval/pass@1": 0.25, "eval/pass@4": 0.5})
        clock.now = 101.0  # then a 1 s step
        display.step(1, {"entropy/mean": 1.0, "reward/accuracy": 0.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step 0/10 | evaluating (validation split)"
    assert lines[1] == "step 0/10 | validation: avg@4=pass@1=0.250 pass@4=0.500"
    # 9 steps at 1 s and the final evaluation at 100 s: 1:49, not 9 x 101 s = 15:09
    assert "1.00 s/step | ETA 1:49" in lines[2]


def test_on_a_terminal_the_bar_shows_eta_rate_and_evaluating(monkeypatch) -> None:
    screen = Console(file=io.StringIO(), force_terminal=True, width=200)
    monkeypatch.setattr(_progress, "console", screen)
    clock = _Clock()
    with TrainDisplay(4, 0, eval_every=2, clock=clock) as display:
        task = display._progress.tasks[0]
        clock.now = 2.0
        display.step(1, {"entropy/mean": 1.0})
        assert task.fields["timing"] == "ETA 0:06 2.00 s/step"  # 3 steps at 2 s (no eval seen)
        display.evaluating(2)
        assert task.fields["status"] == "evaluating (validation split)"


def test_no_cell_repeats_another() -> None:
    cells = eval_cells({"eval/pass@4": 0.5, "eval/pass@1": 0.25, "eval/avg@4": 0.25,
                        "eval/pass@2": 0.4})  # fmt: skip
    assert cells == [("avg@4 = pass@1", 0.25), ("pass@2", 0.4), ("pass@4", 0.5)]


def test_a_grid_off_a_terminal_prints_a_line_per_run_event(capsys) -> None:
    grid = GridProgress(None, 2)
    for event in (
        RunEvent("grpo_s0", "start", 0, 3),
        RunEvent("grpo_s0", "step", 1, 3, {"entropy/mean": 1.0, "reward/accuracy": 0.5}),
        RunEvent("grpo_s0", "step", 3, 3, {"entropy/mean": 0.9, "reward/accuracy": 0.5}),
        RunEvent("grpo_s0", "evaluate", 3, 3),
        RunEvent("grpo_s0", "done", 3, 3),
        RunEvent("clip_b_s0", "failed", 0, 3, message="boom"),
    ):
        grid(event)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "[0/2] grpo_s0: started",
        "[0/2] grpo_s0: step 3/3 | H=0.900 acc=0.500",
        "[0/2] grpo_s0: final evaluation",
        "[1/2] grpo_s0: done",
    ]
    assert captured.err.strip() == "failed: clip_b_s0: boom" and grid.failed == ["clip_b_s0"]
