"""Grids of runs: argument parsing, planning, interrupted-and-resumed grids, the CLI commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli.experiments import (
    compare_command,
    parse_seeds,
    report_command,
    validate_signs_command,
)
from entropy_dynamics.study.experiments import (
    RunEvent,
    metrics_complete,
    parse_grid_args,
    plan_grid,
    run_grid,
    run_status,
    split_top_level,
)
from entropy_dynamics.training.metrics import read_metrics

FAST = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "eval.every=2",
    "eval.problems=3",
    "eval.k=2",
    "checkpoint_every=1",
    "tensorboard=false",
    "threads=1",
    "task.countdown.n_train=40",
    "task.countdown.n_eval=10",
    "steps=2",
    # A random model earns no reward; the entropy bonus still moves the weights.
    "algorithm.loss.entropy_coef=0.05",
    "optim.lr=1e-3",
]


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


# ------------------------------------------------------------------------------ parsing


def test_split_top_level_keeps_brackets_and_quotes() -> None:
    assert split_top_level("1e-4, 2e-4") == ["1e-4", "2e-4"]
    assert split_top_level("{a: 1, b: 2},[1, 2],'x,y'") == ["{a: 1, b: 2}", "[1, 2]", "'x,y'"]
    assert split_top_level("plain") == ["plain"]


def test_parse_grid_args_separates_fixed_and_sweeps() -> None:
    fixed, sweeps = parse_grid_args(
        [
            "steps=5",
            "optim.lr=1e-4,2e-4",
            "algorithm.loss.filter_options={sample_sign: negative, keep: s_positive}",
            "clip_b:algorithm.loss.filter_options.mu=2.5",
        ]
    )
    assert fixed == [
        "steps=5",
        "algorithm.loss.filter_options={sample_sign: negative, keep: s_positive}",
    ]
    assert sweeps == {
        "optim.lr": ["1e-4", "2e-4"],
        "clip_b:algorithm.loss.filter_options.mu": ["2.5"],
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_grid_args(["steps"])
    with pytest.raises(ValueError, match="empty value"):
        parse_grid_args(["optim.lr=1e-4,"])


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,7") == [0, 5, 7]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("two")


def test_plan_grid_names_configs_and_scoped_sweeps(tmp_path) -> None:
    specs = plan_grid(
        ["grpo", "clip_b"],
        [0, 1],
        {"optim.lr": ["1e-4", "2e-4"], "clip_b:algorithm.loss.filter_options.mu": ["2.0", "3.0"]},
        ["steps=3"],
        tmp_path,
    )
    # grpo: 2 lr × 2 seeds; clip_b: 2 lr × 2 mu × 2 seeds.
    assert len(specs) == 4 + 8
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    assert "grpo-lr=1e-4-seed0" in names
    assert "clip_b-lr=2e-4-mu=3.0-seed1" in names
    spec = specs[names.index("clip_b-lr=2e-4-mu=3.0-seed1")]
    config = spec.config
    assert (config.seed, config.steps, config.optim.lr) == (1, 3, 2e-4)
    # The dotted override reaches into the loss-options mapping.
    assert config.algorithm.loss == {"filter_options": {"mu": 3.0}}
    assert config.algorithm.policy_loss().filter_options == {"mu": 3.0}
    assert spec.run_dir == tmp_path / spec.name
    assert spec.sweep == {"optim.lr": "2e-4", "algorithm.loss.filter_options.mu": "3.0"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["grpo", "nope"]}, "methods: unknown nope"),
        ({"methods": []}, "at least one method"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"base_overrides": ["seed=3"]}, "seed is set by the grid"),
        ({"base_overrides": ["name=x"]}, "name is set by the grid"),
        ({"sweeps": {"clip_v:optim.lr": ["1", "2"]}}, "scoped to 'clip_v'"),
        ({"sweeps": {"optim.lr": ["1", "1"]}}, "duplicate values"),
        # Every run is validated before anything starts: grpo has no filter options.
        ({"sweeps": {"algorithm.loss.filter_options.mu": ["2", "3"]}}, "run grpo-mu=2-seed0"),
    ],
)
def test_plan_grid_refuses_bad_input(tmp_path, kwargs, message) -> None:
    arguments = {"methods": ["grpo"], "seeds": [0], "output_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_grid(**arguments)


def test_metrics_complete_and_repair(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2)))
    assert metrics_complete(tmp_path, 2, eval_at_start=True)
    assert not metrics_complete(tmp_path, 2, eval_at_start=False)  # step 0 unexpected
    assert not metrics_complete(tmp_path, 3, eval_at_start=True)  # step 3 missing
    path.write_text(path.read_text() + json.dumps({"step": 2}) + "\n")
    assert not metrics_complete(tmp_path, 2, eval_at_start=True)  # step 2 twice
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "entr')  # killed mid-write
    assert not metrics_complete(tmp_path, 2, eval_at_start=True)  # the resume repairs it
    # (tests/training/test_metrics.py: MetricsWriter drops a torn last line on resume)


# ------------------------------------------------------------------------------ grids


class _Interrupt:
    """Progress callback that stops the grid (like Ctrl-C) at one run's given step."""

    def __init__(self, run: str, step: int):
        self.run, self.step, self.events = run, step, []

    def __call__(self, event: RunEvent) -> None:
        self.events.append((event.run, event.kind, event.step))
        if (event.run, event.kind, event.step) == (self.run, "step", self.step):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def grid(tmp_path_factory, model_dir):
    """A 2-method × 2-seed grid of 2 steps, interrupted in its third run, then rerun."""
    out = tmp_path_factory.mktemp("grid")
    args = (["grpo", "clip_b"], [0, 1], {}, [f"model.path={model_dir}", *FAST], out)
    # Step 2's metrics line is written, its checkpoint is not (the callback runs first).
    stop = _Interrupt("clip_b-seed0", 2)
    with pytest.raises(KeyboardInterrupt):
        run_grid(*args, progress=stop)
    first = {n: (out / n / "metrics.jsonl").read_text() for n in ("grpo-seed0", "grpo-seed1")}
    events: list[RunEvent] = []
    results = run_grid(*args, progress=events.append)
    return out, stop.events, first, results, events


def test_interrupted_grid_resumes_to_complete_results(grid) -> None:
    out, before, first, results, events = grid
    assert ("clip_b-seed0", "step", 2) in before
    assert not any(run == "clip_b-seed1" for run, _, _ in before)
    statuses = {r.name: r.status for r in results}
    assert statuses == {
        "grpo-seed0": "skipped",
        "grpo-seed1": "skipped",
        "clip_b-seed0": "resumed",
        "clip_b-seed1": "completed",
    }
    starts = [(e.run, e.step) for e in events if e.kind == "start"]
    assert starts == [("clip_b-seed0", 1), ("clip_b-seed1", 0)]  # resumed from step 1
    for result in results:
        rows = read_metrics(result.run_dir / "metrics.jsonl")
        assert [r["step"] for r in rows] == [0, 1, 2], result.name
        assert "eval/pass@2" in rows[-1] and "entropy/mean" in rows[-1]
        final = json.loads((result.run_dir / "final_eval.json").read_text())
        assert final["step"] == 2 and final["k"] == 2 and len(final["correct"]) == 3
    for name, text in first.items():  # finished runs were left alone
        assert (out / name / "metrics.jsonl").read_text() == text
    manifest = json.loads((out / "grid.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == list(statuses)


def test_grid_refuses_a_directory_of_another_config(grid, model_dir) -> None:
    out = grid[0]
    overrides = [f"model.path={model_dir}", *FAST, "optim.lr=5e-4"]
    with pytest.raises(ValueError, match=r"different config \(optim.lr: 0.001 → 0.0005\)"):
        run_grid(["grpo"], [0], {}, overrides, out)
    # More steps extend a finished run: it is resumed, not refused.
    spec = plan_grid(["grpo"], [0], {}, [f"model.path={model_dir}", *FAST, "steps=3"], out)[0]
    assert run_status(spec) == "partial"


def test_grid_killed_by_sigkill_resumes(tmp_path, model_dir) -> None:
    overrides = [f"model.path={model_dir}", *FAST, "steps=3"]
    script = (
        "from entropy_dynamics.study.experiments import run_grid\n"
        f"run_grid(['grpo', 'clip_b'], [0], {{}}, {overrides!r}, {str(tmp_path)!r})\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first_checkpoint = tmp_path / "clip_b-seed0" / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists():  # the second run has saved step 1
        assert child.poll() is None, "the grid ended before it could be killed"
        assert time.monotonic() < deadline, "the grid did not reach its second run in time"
        time.sleep(0.02)
    child.kill()
    child.wait()
    assert not (tmp_path / "clip_b-seed0" / "final_eval.json").exists()
    results = run_grid(["grpo", "clip_b"], [0], {}, overrides, tmp_path)
    assert [(r.name, r.status) for r in results] == [
        ("grpo-seed0", "skipped"),
        ("clip_b-seed0", "resumed"),
    ]
    for r in results:
        assert [row["step"] for row in read_metrics(r.run_dir / "metrics.jsonl")] == [0, 1, 2, 3]
        assert json.loads((r.run_dir / "final_eval.json").read_text())["step"] == 3


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("compare")(compare_command)
    app.command("validate-signs")(validate_signs_command)
    app.command("report")(report_command)
    return app


def test_cli_compare_dry_run_and_report(grid, model_dir, tmp_path) -> None:
    out = grid[0]
    runner = CliRunner()
    args = ["compare", "--methods", "grpo,clip_b", "--seeds", "2", "-o", str(out), "--dry-run"]
    result = runner.invoke(_app(), [*args, f"model.path={model_dir}", *FAST])
    assert result.exit_code == 0, result.output
    assert result.output.count("done") == 4
    # --evaluate-missing recomputes a deleted final_eval.json (seeded: the same numbers).
    final = out / "grpo-seed1" / "final_eval.json"
    saved = final.read_text()
    final.unlink()
    args = ["report", str(out), "-o", str(tmp_path), "--ks", "1,2", "--evaluate-missing"]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(final.read_text()) == json.loads(saved)
    text = (tmp_path / "report.md").read_text()
    assert "| grpo | 2 |" in text and "| clip_b | 2 |" in text
    bad = runner.invoke(_app(), ["compare", "--methods", "nope", "-o", str(tmp_path)])
    assert bad.exit_code == 2 and "methods: unknown nope" in bad.output


@pytest.mark.slow
def test_grid_in_worker_processes(tmp_path, model_dir) -> None:
    events: list[RunEvent] = []
    overrides = [f"model.path={model_dir}", *FAST, "steps=1", "eval.every=0"]
    results = run_grid(["grpo", "clip_b"], [0], {}, overrides, tmp_path, 2, events.append)
    assert [r.status for r in results] == ["completed", "completed"], results
    assert {(e.run, e.kind) for e in events} >= {("grpo-seed0", "done"), ("clip_b-seed0", "done")}
    for r in results:
        assert [row["step"] for row in read_metrics(r.run_dir / "metrics.jsonl")] == [1]


def test_cli_validate_signs_runs_four_interventions(tmp_path, model_dir) -> None:
    overrides = [f"model.path={model_dir}", *FAST, "steps=1"]
    result = CliRunner().invoke(
        _app(), ["validate-signs", "-o", str(tmp_path), *overrides], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "signs.json").read_text())
    assert [(r["sample_sign"], r["keep"]) for r in rows] == [
        ("positive", "s_positive"),
        ("positive", "s_negative"),
        ("negative", "s_positive"),
        ("negative", "s_negative"),
    ]
    lines = (tmp_path / "signs.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in lines) == 5  # header + 4 rows
