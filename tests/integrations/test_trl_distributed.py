"""The TRL plug-in in two processes (CPU, gloo): the keep-mask is the whole batch's (issue 12).

``trl_two_processes.py`` runs under ``torch.distributed.run`` with a different local generation
batch (and completion width) on each rank; every rank's mask must equal ``select_tokens`` on the
concatenated batch, which here differs from what each rank would decide alone, and
``num_items_in_batch`` must count the kept tokens of both ranks. With ``entropy_target``'s
controller and the monitor, both ranks' targets, keep-masks and controller states equal our
trainer's controller run on the whole batches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")


def test_two_processes_decide_one_mask_on_the_gathered_batch(tmp_path) -> None:
    script = Path(__file__).with_name("trl_two_processes.py")
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--standalone", str(script), str(out)]  # --standalone: a free local port
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["dropped"] > 0
    assert result["local_decision_differs"]
    assert result["masks_equal"]
    assert result["num_items"] == [result["kept_total"]] * 2


def test_two_processes_run_one_controller_on_the_gathered_batches(tmp_path) -> None:
    # entropy_target's controller and the monitor: both ranks decide the same, as ours would on
    # the whole batches (trl_two_processes.py, mode "control")
    script = Path(__file__).with_name("trl_two_processes.py")
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--standalone", str(script), str(out), "control"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["same"] and result["dropped"] > 0, result
    assert result["state"]["integral"] != 0
