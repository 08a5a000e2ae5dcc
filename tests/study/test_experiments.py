"""Running grids (``study/experiments.py``): complete metrics, interrupted-and-resumed grids, worker
processes, ``compare`` and ``report`` over a grid. The plan itself: ``test_grid.py``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli.experiments import compare_command, report_command
from entropy_dynamics.study.experiments import RunEvent, metrics_complete, run_grid, run_status
from entropy_dynamics.study.grid import plan_grid
from entropy_dynamics.training.metrics import read_metrics
from run_helpers import FAST


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


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


@pytest.mark.parametrize("takes_term", [True, False], ids=["stops on SIGTERM", "ignores it"])
def test_a_worker_whose_grid_is_gone_stops(takes_term) -> None:
    # A worker's parent is the grid's process; this one is told its parent is another (-1), as
    # after the grid was killed: it signals itself, and exits after the grace whatever it does.
    ignore = "" if takes_term else "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    script = (
        f"import signal, time\n{ignore}"
        "from entropy_dynamics.study.experiments import stop_when_orphaned\n"
        "stop_when_orphaned(-1, poll_s=0.01, grace_s=1.0)\n"
        "time.sleep(600)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True)
    assert done.returncode == (-signal.SIGTERM if takes_term else 1), done.stderr
