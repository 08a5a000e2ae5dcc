"""The options of analyze and filter-data: checked on creation, mapped to the run's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from entropy_dynamics.study.command_options import AnalyzeOptions, FilterDataOptions, parse_rate
from entropy_dynamics.study.filter_data import default_kept_path
from entropy_dynamics.study.one_step import DEFAULT_LR
from entropy_dynamics.tasks.math import PRESETS
from entropy_dynamics.training.option_fields import field_docs


def test_analyze_defaults_and_config() -> None:
    options = AnalyzeOptions()
    assert (options.problems, options.samples, options.lr) == (8, 4, DEFAULT_LR)
    config = options.run_config()
    assert config.task.name == "countdown" and config.model.dtype == "float32"
    data = AnalyzeOptions(data=Path("d.jsonl"), preset="gsm8k", model=Path("m"), device="cpu")
    config = data.run_config()
    assert config.task.name == "math" and config.task.math.path == "d.jsonl"
    assert config.task.math.preset == "gsm8k"
    assert (config.model.path, config.model.device) == ("m", "cpu")


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"advantage_sign": 2}, "--advantage-sign"), ({"lr": 0.0}, "--lr"),
     ({"samples": 0}, "--samples"), ({"problems": 0}, "--problems")],
)  # fmt: skip
def test_analyze_refuses_with_the_flag_named(values, flag) -> None:
    with pytest.raises(ValueError, match=flag):
        AnalyzeOptions(**values)


def test_filter_data_defaults_and_config() -> None:
    options = FilterDataOptions(data=Path("d.jsonl"), output=Path("out/f.jsonl"))
    assert options.rates == (1 / 16, 15 / 16)
    assert options.kept_path == default_kept_path(Path("out/f.jsonl"))
    assert FilterDataOptions(Path("d.jsonl"), Path("o"), kept_output="k").kept_path == Path("k")
    math = options.run_config().task.math
    assert (math.path, math.on_error, math.grading_timeout) == ("d.jsonl", "skip", 5.0)
    assert options.run_config().model.dtype == "auto"


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"low": "half"}, "--low"), ({"high": "2"}, "--high"), ({"preset": "x"}, "--preset"),
     ({"on_error": "x"}, "--on-error"), ({"preset": "custom"}, "--prompt-field"),
     ({"samples": 0}, "--samples"), ({"max_problems": -1}, "--max-problems")],
)  # fmt: skip
def test_filter_data_refuses_with_the_flag_named(values, flag) -> None:
    with pytest.raises(ValueError, match=flag):
        FilterDataOptions(Path("d.jsonl"), Path("o"), **values)


def test_the_preset_help_lists_every_preset() -> None:
    assert all(name in field_docs(FilterDataOptions)["preset"] for name in PRESETS)


@pytest.mark.parametrize(
    ("text", "value"), [("1/16", 0.0625), ("0.25", 0.25), ("15/16", 0.9375), ("1", 1.0)]
)
def test_parse_rate(text, value):
    assert parse_rate(text, "--low") == value
