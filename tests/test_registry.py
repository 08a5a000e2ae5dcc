"""The name → function registry (``_registry.py``) behind the filters and the policy losses."""

from __future__ import annotations

import pytest

from entropy_dynamics._registry import Registry


def test_a_function_is_registered_once_and_found_by_name() -> None:
    registry: Registry = Registry("widget")

    @registry.register("b")
    def b() -> str:
        return "b"

    registry.register("a")(lambda: "a")
    assert registry.get("b") is b and registry.get("a")() == "a"
    assert registry.names() == ["a", "b"]  # sorted, whatever the order of registration
    assert "a" in registry and "c" not in registry
    with pytest.raises(ValueError, match="widget 'b' is already registered"):
        registry.register("b")(lambda: "again")
    assert registry.get("b") is b  # the first registration stands


def test_an_unknown_name_lists_the_registered_ones() -> None:
    registry: Registry = Registry("policy loss")
    for name in ("ppo", "kl_cov"):
        registry.register(name)(lambda: None)
    with pytest.raises(KeyError, match="unknown policy loss 'pp'; registered: kl_cov, ppo"):
        registry.get("pp")
