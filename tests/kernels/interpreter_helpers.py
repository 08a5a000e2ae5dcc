"""Run a test module's Triton checks through Triton's CPU interpreter, in a fresh interpreter.

``TRITON_INTERPRET=1`` must be set before triton is first imported (its own reductions are jit'd
at import), so the checks cannot run in the pytest process, which may have imported triton
already; they run in a child Python that imports the test module from this folder.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_under_interpreter(module: str, function: str = "_triton_checks") -> None:
    """``module.function()`` under ``TRITON_INTERPRET=1``; skips without triton, fails with the
    child's output (bounded by a generous timeout that fails loudly)."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed: the kernels are tested only through its interpreter")
    code = f"import sys; sys.path.insert(0, sys.argv[1]); import {module}; {module}.{function}()"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
