"""Generic config machinery: coercion, overrides, and errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config_io import (
    apply_overrides,
    from_dict,
    load_yaml,
    to_dict,
)


@dataclass
class Inner:
    size: int = 2
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("size must be >= 1")


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_overrides_are_typed_and_nested() -> None:
    data = apply_overrides({}, ["inner.size=4", "inner.rate=1e-3", "flag=true", "inner.tags=a,b"])
    config = from_dict(Outer, data)
    assert config.inner.size == 4 and config.inner.rate == 1e-3 and config.flag is True
    assert config.inner.tags == ("a", "b")
    assert to_dict(config)["inner"]["tags"] == ["a", "b"]


def test_optional_accepts_null_and_numbers() -> None:
    assert from_dict(Outer, apply_overrides({}, ["inner.limit=null"])).inner.limit is None
    assert from_dict(Outer, apply_overrides({}, ["inner.limit=3"])).inner.limit == 3.0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("inner.size=abc", r"inner\.size: expected an integer"),
        ("inner.mode=c", r"inner\.mode: must be one of 'a', 'b'"),
        ("inner.sise=3", r"inner\.sise: unknown field \(did you mean 'size'\?\)"),
        ("flag=maybe", r"flag: expected true or false"),
        ("inner.size=0", r"inner: size must be >= 1"),
        ("novalue", r"section\.field=value"),
    ],
)
def test_errors_name_the_field(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_dict(Outer, apply_overrides({}, [override]))


def test_yaml_errors_name_the_file_and_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ok\ninner: {size: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(listing)


def test_overrides_do_not_mutate_the_input() -> None:
    data = {"inner": {"size": 2}}
    apply_overrides(data, ["inner.size=5"])
    assert data == {"inner": {"size": 2}}


def test_a_flow_mapping_without_a_space_says_how_to_write_it() -> None:
    with pytest.raises(ConfigError, match=r"algorithm\.loss\.filter_options\.mu=2\.0"):
        apply_overrides({}, ["algorithm.loss.filter_options={mu:2.0}"])
    with pytest.raises(ConfigError, match=r"a space must follow"):
        apply_overrides({}, ["algorithm.loss={filter_options: {mu:2.0}}"])
    assert apply_overrides({}, ["a={mu: 2.0}"]) == {"a": {"mu": 2.0}}
