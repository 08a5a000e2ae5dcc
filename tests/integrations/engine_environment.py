"""The checks of an engine suite's virtual environment (``scripts/test-engines.sh``), shared by
``test_trl_environment.py`` and ``test_verl_environment.py``: it runs the caller's torch, and
nothing of the caller's other packages leaks into it. Outside that script both skip."""

from __future__ import annotations

import os
import sys

import pytest
import torch

__all__ = ["assert_callers_torch", "assert_isolated"]


def assert_callers_torch() -> None:
    expected = os.environ.get("ENTROPY_DYNAMICS_MAIN_TORCH")
    if expected is None:
        pytest.skip("run through scripts/test-engines.sh, which names the caller's torch")
    assert torch.__version__ == expected


def assert_isolated() -> None:
    if os.environ.get("ENTROPY_DYNAMICS_MAIN_TORCH") is None:
        pytest.skip("run through scripts/test-engines.sh, which builds the isolated environment")
    assert sys.prefix != sys.base_prefix  # a virtual environment
    config = os.path.join(sys.prefix, "pyvenv.cfg")
    with open(config) as handle:
        assert "include-system-site-packages = false" in handle.read()
