"""Every float option of every config and options dataclass refuses inf, -inf and nan, naming it.

The cases are collected from the dataclasses' annotations (``finite.float_fields``), so a float
field added later is tested without a line here; the count check below keeps that honest.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.finite import check_finite_fields, float_fields
from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.methods import METHODS
from entropy_dynamics.study.command_options import AnalyzeOptions, FilterDataOptions
from entropy_dynamics.training.config import TrainConfig, load_config
from entropy_dynamics.training.pretrain import PretrainConfig

VALUES = {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}  # YAML spellings for key=value


def _train_config_paths(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    paths = [prefix + name for name in float_fields(cls)]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            paths += _train_config_paths(hints[f.name], f"{prefix}{f.name}.")
    return paths


CONFIG_CASES = [[path] for path in _train_config_paths()]
CONFIG_CASES += [[f"algorithm.loss.{name}"] for name in float_fields(PolicyLossConfig)]
CONFIG_CASES += [
    [f"algorithm.method={method.name}", f"algorithm.control.{name}"]
    for method in METHODS.values()
    if method.controller.options_type is not None
    for name in float_fields(method.controller.options_type)
]


def test_the_cases_cover_every_kind_of_float_option() -> None:
    flat = {case[-1] for case in CONFIG_CASES}
    expected = {"optim.lr", "rollout.temperature", "eval.temperature", "optim.grad_clip"}
    expected |= {"algorithm.loss.entropy_coef", "algorithm.loss.dual_clip_c"}
    expected |= {"algorithm.control.ki", "algorithm.control.target", "task.math.format_weight"}
    assert expected <= flat, expected - flat
    assert len(CONFIG_CASES) >= 30


@pytest.mark.parametrize("value", sorted(VALUES))
@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda case: case[-1])
def test_a_config_float_refuses_non_finite_values(case: list[str], value: str) -> None:
    *extra, path = case
    with pytest.raises(ConfigError) as refused:
        load_config(None, [*extra, f"{path}={VALUES[value]}"])
    assert path.rsplit(".", 1)[-1] in str(refused.value)


OPTION_CASES = [
    (cls, name, required)
    for cls, required in (
        (AnalyzeOptions, {}),
        (FilterDataOptions, {"data": "d.jsonl", "output": "o.jsonl"}),
        (PretrainConfig, {}),
    )
    for name in float_fields(cls)
]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("cls,name,required", OPTION_CASES, ids=lambda x: getattr(x, "__name__", x))
def test_an_options_float_refuses_non_finite_values(cls, name, required, value) -> None:
    with pytest.raises(ValueError) as refused:
        cls(**required, **{name: value})
    assert name.replace("_", "-") in str(refused.value) or name in str(refused.value)


def test_optional_floats_may_stay_unset_and_an_opt_out_is_honoured() -> None:
    check_finite_fields(PolicyLossConfig(dual_clip_c=None, loss_agg_norm=None))

    @dataclasses.dataclass
    class Band:
        low: float = 0.0
        high: float = dataclasses.field(default=math.inf, metadata={"finite": False})

    assert float_fields(Band) == ("low",)
    check_finite_fields(Band())
    with pytest.raises(ValueError, match="low must be a finite number, got 'x'"):
        check_finite_fields(Band(low="x"))  # type: ignore[arg-type]
