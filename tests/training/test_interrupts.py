"""Clean stops and kills (``training/interrupts.py``): a first signal is recorded and a second stops
at once; runs stopped at seeded random moments — during rollouts, updates and checkpoint writes
alike — by SIGINT or SIGKILL resume to the final weights and every non-timing metric of an
uninterrupted run. The kill tests run the real command line in a subprocess."""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.metrics import read_metrics
from run_helpers import comparable, run_args, weights


def _wait_until(condition, timeout: float = 60.0) -> None:
    """Run Python code until ``condition()`` holds (signal handlers run between bytecodes, when
    the interpreter next checks), for at most ``timeout`` s: generous, a lost signal fails
    loudly after it instead of a guess at how long delivery takes."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_first_signal_is_recorded_and_a_second_stops_at_once() -> None:
    from entropy_dynamics.training.interrupts import StopRequests

    # Python's own handler as the one to restore: a process started in the background by a shell
    # without job control (nohup ... &) inherits SIGINT ignored, and would then ignore the second
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequests() as stop:
            # raise_signal: delivered to this (the main) thread, not to any thread of the process
            signal.raise_signal(signal.SIGINT)
            _wait_until(lambda: stop.requested is not None)
            assert stop.requested == "SIGINT"
            with pytest.raises(KeyboardInterrupt):  # the previous handler is back
                signal.raise_signal(signal.SIGINT)
                _wait_until(lambda: False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def _command(args: list[str]) -> list[str]:
    entry = "from entropy_dynamics.cli import main; main()"
    return [sys.executable, "-c", entry, "train", *args]


def _steps_logged(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith("}"))


def _run(args: list[str], stop_after: int | None, delay: float, sig: int, run_dir: Path):
    """Start the CLI; once ``run_dir`` has logged ``stop_after`` steps, wait ``delay`` seconds and
    send ``sig`` (``None``: let it finish). Returns ``(exit code, output)``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 600  # generous: a hung run fails loudly below
    while stop_after is not None and process.poll() is None and time.monotonic() < deadline:
        if _steps_logged(run_dir) >= stop_after:
            time.sleep(delay)
            process.send_signal(sig)
            break
        time.sleep(0.005)
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_runs_resume_to_the_uninterrupted_result(tmp_path, random_model_dir, sig):
    steps = 24  # five stops of at most ~3 steps each leave the end unreached
    reference = tmp_path / "reference"
    code, output = _run(
        run_args(random_model_dir, tmp_path, "reference", steps, "checkpoint_every=1"),
        None, 0.0, sig, reference,
    )  # fmt: skip
    assert code == 0, output
    step_time = statistics.median(
        r["perf/step_time"] for r in read_metrics(reference / "metrics.jsonl")
    )
    rng = random.Random(1234 + int(sig))
    victim = tmp_path / "victim"
    args = run_args(random_model_dir, tmp_path, "victim", steps, "checkpoint_every=1")
    codes = []
    for _ in range(5):  # five stops, each at a random moment of the step after a logged one:
        # its rollout, its update, or the checkpoint write that follows its metrics line
        logged = _steps_logged(victim)
        resume = ["--resume"] if latest_checkpoint(victim) else []
        fresh = ["--overwrite"] if not resume and victim.exists() else []
        stop_after = logged + rng.randint(1, 2)  # a step this process runs itself
        delay = rng.uniform(0.0, step_time)
        code, output = _run([*args, *resume, *fresh], stop_after, delay, sig, victim)
        codes.append(code)
        if sig == signal.SIGINT:
            assert code == 130, output  # a clean stop, with a checkpoint and the way back
            assert "resume with:" in output and "--resume" in output
    assert 0 not in codes, codes  # all five stops landed before the end
    code, output = _run([*args, "--resume"], None, 0.0, sig, victim)
    assert code == 0, output
    assert comparable(victim) == comparable(reference)
    assert weights(victim) == weights(reference)
