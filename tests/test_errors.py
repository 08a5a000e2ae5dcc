"""The exception types every room shares (``errors.py``): a bad configuration value is a
``ConfigError``, a ``ValueError`` whose message names the field."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import entropy_dynamics.errors as errors
from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import load_config


def test_a_config_error_is_a_value_error_naming_the_field() -> None:
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=r"task\.math\.test_size") as caught:
        load_config(overrides=["task.math.test_size=-1"])
    with pytest.raises(ValueError):  # callers that catch ValueError catch it too
        raise caught.value


def test_the_module_imports_nothing() -> None:
    # every room imports it, so it may import nothing of theirs (nor anything else)
    tree = ast.parse(Path(errors.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [getattr(n, "module", None) for n in imports] == ["__future__"]
