"""Option dataclasses: field docs read from attribute docstrings, flags and bounds declared once."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.option_fields import check_bounds, field_docs, flags_of, option


@dataclass
class _Base:
    path: str = option(...)  # required: no default
    size: int = option(2, "-s", "--size", min=1, max=8)
    """How many.

    A second paragraph."""
    name: str = ""


@dataclass
class _Toy(_Base):
    rate: float = option(0.5, min=0.0, min_open=True)
    """A rate."""

    def __post_init__(self) -> None:
        check_bounds(self)


def test_field_docs_reads_the_docstring_under_each_field() -> None:
    docs = field_docs(_Toy)
    assert docs == {"size": "How many.\n\nA second paragraph.", "rate": "A rate."}
    assert field_docs(TrainConfig)["seed"] == "Seed of sampling, data order and everything random."


def test_flags_and_required_fields() -> None:
    by_name = {f.name: f for f in fields(_Toy)}
    assert flags_of(by_name["size"]) == ("-s", "--size")
    assert flags_of(by_name["rate"]) == ("--rate",)
    with pytest.raises(TypeError):
        _Toy()  # type: ignore[call-arg]
    assert _Toy(path="p").size == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"size": 0}, "--size must be >= 1, got 0"),
        ({"size": 9}, "--size must be <= 8, got 9"),
        ({"rate": 0.0}, "--rate must be > 0.0, got 0.0"),
        ({"rate": float("nan")}, "--rate must be > 0.0"),
    ],
)
def test_bounds_are_checked_with_the_flag_named(values, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        _Toy(path="p", **values)
