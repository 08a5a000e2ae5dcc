"""The config reference: generated from the config dataclasses, every option with its type,
default, valid values and meaning; ``docs/config.md`` is current; ``entropy-dynamics config``."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.config_reference import config_reference, field_bounds

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _leaves(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        nested = f.default_factory() if callable(f.default_factory) else None
        if is_dataclass(nested):
            out.extend(_leaves(type(nested), f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_docs_config_md_is_current() -> None:
    regenerate = "entropy-dynamics config > docs/config.md"
    assert DOC.read_text() == config_reference(), f"docs/config.md is stale: run `{regenerate}`"


def test_every_option_is_listed_with_its_default_and_meaning() -> None:
    text = config_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if "| `" in line}
    for key in _leaves(TrainConfig):
        assert key in rows, key
    for f in fields(PolicyLossConfig):
        assert f"algorithm.loss.{f.name}" in rows, f.name
    assert rows["steps"].split(" | ")[1:3] == ["int", "`200`"]
    assert "Training steps" in rows["steps"]
    assert "`steps >= 1`" in rows["steps"]  # the validation's range
    assert "one of `constant`, `linear`, `cosine`" in rows["optim.schedule"]
    assert "`1e-05 <= temperature < inf`" in rows["eval.temperature"]  # constants resolved
    assert "`2 <= min_numbers <= 6`" in rows["task.countdown.min_numbers"]  # a bounds table
    assert "`coef >= 0`" in rows["algorithm.kl.coef"]


def test_field_bounds_read_the_checks_of_post_init() -> None:
    from entropy_dynamics.errors import ConfigError

    @dataclass
    class Options:
        size: int = 1
        rate: float = 0.5
        label: str = "a"

        def __post_init__(self) -> None:
            if not self.size >= 1:
                raise ConfigError("size must be >= 1")
            if not 0 < self.rate <= 1:
                raise ConfigError("rate in (0, 1]")
            if self.label == "b" and self.size > 2:  # conditional: not a range
                raise ConfigError("b is small")

    assert field_bounds(Options) == {"size": ["size >= 1"], "rate": ["0 < rate <= 1"]}


def test_config_command_prints_the_reference() -> None:
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0
    assert result.output == config_reference()
