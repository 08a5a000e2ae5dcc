"""The plan of a grid of training runs: methods × seeds × swept config values, one validated
config and one run directory each.

``plan_grid(["grpo", "clip_b"], [0, 1, 2], {"optim.lr": ["1e-4", "2e-4"]})`` plans one run per
combination, named ``{method}-{key=value...}-seed{seed}`` under ``output_dir``; each run's config
is loaded and checked here, before anything runs. A sweep key may be scoped to one method with
``method:key`` (``clip_b:algorithm.loss.filter_options.mu``), so one grid can sweep Clip_B's μ
next to unswept baselines. :func:`parse_grid_args` reads the command line's ``key=value`` and
``key=v1,v2`` arguments into fixed overrides and sweeps. Running the plan:
:mod:`entropy_dynamics.study.experiments`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import TrainConfig, load_config

__all__ = ["RunSpec", "parse_grid_args", "plan_grid", "split_top_level"]

_RESERVED = {
    "name": "the grid names its runs",
    "output_dir": "pass output_dir to the grid instead",
    "seed": "pass seeds to the grid instead",
    "algorithm.method": "pass methods to the grid instead",
}


@dataclass(frozen=True)
class RunSpec:
    """One planned run: its name, method, seed, swept values and the full config."""

    name: str
    method: str
    seed: int
    sweep: dict[str, str]
    """Swept key → raw value, for the keys this run's method sweeps over more than one value."""
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets, braces and quotes: ``"1,{a: 1, b: 2}"`` → 2 parts."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_grid_args(args: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split CLI ``key=value`` arguments into fixed overrides and sweeps.

    A value with a top-level comma (``optim.lr=1e-4,2e-4``) is a sweep over its parts; commas
    inside ``[...]``/``{...}`` or quotes do not split (write a list-valued field as ``[a, b]``).
    A key prefixed ``method:`` applies to that method only and is always kept as a sweep entry
    (with one value if it has no comma).
    """
    fixed: list[str] = []
    sweeps: dict[str, list[str]] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"argument {arg!r}: expected key=value or key=v1,v2,...")
        values = split_top_level(raw)
        if len(values) > 1 and any(not v for v in values):
            raise ValueError(f"argument {arg!r}: empty value in the comma-separated sweep")
        if len(values) > 1 or ":" in key:
            if key in sweeps:
                raise ValueError(f"argument {arg!r}: {key} is given twice")
            sweeps[key] = values
        else:
            fixed.append(f"{key}={raw}")
    return fixed, sweeps


def _scope(key: str) -> tuple[str | None, str]:
    method, sep, rest = key.partition(":")
    return (method.strip(), rest.strip()) if sep else (None, key.strip())


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """Last dotted component of each key, or the whole key where two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _name_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def plan_grid(
    methods: Sequence[str],
    seeds: Sequence[int],
    sweeps: Mapping[str, Sequence[str]] | None = None,
    base_overrides: Sequence[str] = (),
    output_dir: str | Path = "runs",
    config_path: str | Path | None = None,
) -> list[RunSpec]:
    """Every (method × seed × sweep combination) as a validated :class:`RunSpec`.

    Args:
        methods: registered method names (``methods.available_methods()``).
        seeds: seeds, each run once per combination.
        sweeps: ``key`` or ``method:key`` → values (raw strings, parsed as YAML like overrides).
        base_overrides: ``key=value`` overrides for every run (after ``config_path``).
        output_dir: parent directory of the run directories.
        config_path: optional YAML config all runs start from.
    """
    from entropy_dynamics.methods import available_methods

    methods, seeds = list(methods), list(seeds)
    if not methods:
        raise ValueError("methods: give at least one method")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: duplicates in {methods}")
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ValueError(
            f"methods: unknown {', '.join(unknown)}; available: {', '.join(available_methods())}"
        )
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: need at least one seed and no duplicates, got {seeds}")
    for override in base_overrides:
        key = override.partition("=")[0].strip()
        if key in _RESERVED:
            raise ValueError(f"override {override!r}: {key} is set by the grid; {_RESERVED[key]}")
    axes: list[tuple[str | None, str, list[str]]] = []
    for raw_key, values in (sweeps or {}).items():
        method, key = _scope(raw_key)
        values = [str(v) for v in values]
        if not key or not values:
            raise ValueError(f"sweeps: {raw_key!r} needs a key and at least one value")
        if key in _RESERVED:
            raise ValueError(f"sweeps: {key} is set by the grid; {_RESERVED[key]}")
        if method is not None and method not in methods:
            raise ValueError(f"sweeps: {raw_key!r} is scoped to {method!r}, not in methods")
        if len(set(values)) != len(values):
            raise ValueError(f"sweeps: {raw_key!r} has duplicate values {values}")
        axes.append((method, key, values))
    names = _short_names(sorted({key for _, key, values in axes if len(values) > 1}))

    specs: list[RunSpec] = []
    for method in methods:
        mine = [(key, values) for scope, key, values in axes if scope in (None, method)]
        keys = [key for key, _ in mine]
        if len(set(keys)) != len(keys):
            raise ValueError(f"sweeps: a key is swept twice for method {method!r}: {keys}")
        for combo in itertools.product(*(values for _, values in mine)):
            sweep = {k: v for (k, values), v in zip(mine, combo, strict=True) if len(values) > 1}
            label = "-".join(_name_part(f"{names[k]}={v}") for k, v in sweep.items())
            for seed in seeds:
                name = "-".join(p for p in (method, label, f"seed{seed}") if p)
                overrides = [
                    *base_overrides,
                    *(f"{k}={v}" for k, v in zip(keys, combo, strict=True)),
                    f"algorithm.method={method}",
                    f"seed={seed}",
                    f"name={name}",
                    f"output_dir={output_dir}",
                ]
                try:
                    config = load_config(config_path, overrides)
                except ConfigError as exc:
                    raise ConfigError(f"run {name}: {exc}") from None
                specs.append(RunSpec(name, method, int(seed), sweep, config))
    return specs
