"""One process per run directory: the lock against a second live process, a dead holder, two
real ``train`` processes, and the printed resume command run exactly as printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.run_lock import LOCK_FILE, RunLock, RunLockedError
from run_helpers import QUICK

TIMEOUT = 600  # generous: a hung process fails loudly, nothing here waits on a clock
_HOLD = (
    "import sys\n"
    "from entropy_dynamics.training.run_lock import RunLock\n"
    "lock = RunLock(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"  # held until the test closes stdin (or kills the process)
)


def _holder(run_dir: Path) -> subprocess.Popen:
    """A second process holding ``run_dir``'s lock, as a running ``train`` would."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    entry = "from entropy_dynamics.cli import main; main()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "40"}
    return subprocess.Popen(
        [sys.executable, "-c", entry, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


def test_a_live_holder_is_named_and_a_dead_ones_lock_taken_over(tmp_path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        with pytest.raises(RunLockedError) as refused:
            RunLock(run_dir)
        message = str(refused.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message
        assert "name=<name>" in message
    finally:
        holder.kill()  # dies holding the lock, as after kill -9
        holder.wait(timeout=TIMEOUT)
    lock = RunLock(run_dir)
    assert lock.taken_over is not None and str(holder.pid) in lock.taken_over
    lock.release()
    assert (run_dir / LOCK_FILE).read_text() == ""  # released: no holder recorded
    with RunLock(run_dir) as again:
        assert again.taken_over is None


def test_train_resume_and_compare_into_a_locked_run_exit_2(tmp_path, random_model_dir) -> None:
    runner = CliRunner()
    args = ["train", f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=r"]
    args += ["steps=2", *QUICK]
    assert runner.invoke(app, args).exit_code == 0
    metrics = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    holder = _holder(tmp_path / "r")
    try:
        for extra in (["--resume", "steps=3"], ["--overwrite"]):
            result = runner.invoke(app, [*args, *extra])
            assert result.exit_code == 2, result.output
            assert f"process {holder.pid}" in " ".join(result.output.split())
        assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == metrics  # untouched
        assert not list(tmp_path.glob("r.old-*"))  # --overwrite moved nothing aside
    finally:
        holder.stdin.close()
        holder.wait(timeout=TIMEOUT)
    assert runner.invoke(app, [*args, "--resume", "steps=3"]).exit_code == 0


def test_two_train_processes_with_one_name_never_both_write(tmp_path, random_model_dir) -> None:
    common = [f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=r", "steps=4"]
    first = _cli(["train", *common, *QUICK, "optim.lr=1e-4"])
    second = _cli(["train", *common, *QUICK, "optim.lr=2e-4"])
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outputs  # one ran; the other was refused (locked, or a finished run)
    steps = [row["step"] for row in read_metrics(tmp_path / "r" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    winner = outputs[0] if first.returncode == 0 else outputs[1]
    lr = "0.0001" if first.returncode == 0 else "0.0002"
    assert f"lr: {lr}" in (tmp_path / "r" / "config.yaml").read_text(), winner


def test_the_printed_resume_command_resumes_when_run_as_printed(tmp_path, random_model_dir):
    # a run name with a space and an override with a quote: both must survive the shell
    args = [f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=my run", "steps=20"]
    args += ["checkpoint_every=1", *QUICK, "algorithm.loss={entropy_coef: 0.0}"]
    process = _cli(["train", *args], cwd=tmp_path)
    run_dir = tmp_path / "my run"
    deadline = time.monotonic() + TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").is_file() and (run_dir / "checkpoints").is_dir():
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM, output
    lines = output.splitlines()
    command = lines[lines.index("resume with:") + 1]  # one line, however narrow the terminal
    assert command.startswith("entropy-dynamics train ") and command.endswith(" --resume")
    resumed = subprocess.run(
        command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, 21))
    assert not (tmp_path / "runs").exists()  # nothing started elsewhere
