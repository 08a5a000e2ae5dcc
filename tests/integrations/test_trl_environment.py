"""The trl suite's virtual environment (scripts/test-engines.sh) runs the caller's torch, and
nothing of the caller's other packages leaks into it (checks in engine_environment.py)."""

from __future__ import annotations

from engine_environment import assert_callers_torch, assert_isolated


def test_the_engine_environment_has_the_callers_torch() -> None:
    assert_callers_torch()


def test_the_engine_environment_is_isolated() -> None:
    assert_isolated()
