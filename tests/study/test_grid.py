"""The plan of a grid (``study/grid.py``): the command line's sweeps, run names, scoped sweeps,
every run's config validated before anything runs."""

from __future__ import annotations

import pytest

from entropy_dynamics.study.grid import parse_grid_args, plan_grid, split_top_level


def test_split_top_level_keeps_brackets_and_quotes() -> None:
    assert split_top_level("1e-4, 2e-4") == ["1e-4", "2e-4"]
    assert split_top_level("{a: 1, b: 2},[1, 2],'x,y'") == ["{a: 1, b: 2}", "[1, 2]", "'x,y'"]
    assert split_top_level("plain") == ["plain"]


def test_parse_grid_args_separates_fixed_and_sweeps() -> None:
    fixed, sweeps = parse_grid_args(
        [
            "steps=5",
            "optim.lr=1e-4,2e-4",
            "algorithm.loss.filter_options={sample_sign: negative, keep: s_positive}",
            "clip_b:algorithm.loss.filter_options.mu=2.5",
        ]
    )
    assert fixed == [
        "steps=5",
        "algorithm.loss.filter_options={sample_sign: negative, keep: s_positive}",
    ]
    assert sweeps == {
        "optim.lr": ["1e-4", "2e-4"],
        "clip_b:algorithm.loss.filter_options.mu": ["2.5"],
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_grid_args(["steps"])
    with pytest.raises(ValueError, match="empty value"):
        parse_grid_args(["optim.lr=1e-4,"])


def test_plan_grid_names_configs_and_scoped_sweeps(tmp_path) -> None:
    specs = plan_grid(
        ["grpo", "clip_b"],
        [0, 1],
        {"optim.lr": ["1e-4", "2e-4"], "clip_b:algorithm.loss.filter_options.mu": ["2.0", "3.0"]},
        ["steps=3"],
        tmp_path,
    )
    # grpo: 2 lr × 2 seeds; clip_b: 2 lr × 2 mu × 2 seeds.
    assert len(specs) == 4 + 8
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    assert "grpo-lr=1e-4-seed0" in names
    assert "clip_b-lr=2e-4-mu=3.0-seed1" in names
    spec = specs[names.index("clip_b-lr=2e-4-mu=3.0-seed1")]
    config = spec.config
    assert (config.seed, config.steps, config.optim.lr) == (1, 3, 2e-4)
    # The dotted override reaches into the loss-options mapping.
    assert config.algorithm.loss == {"filter_options": {"mu": 3.0}}
    assert config.algorithm.policy_loss().filter_options == {"mu": 3.0}
    assert spec.run_dir == tmp_path / spec.name
    assert spec.sweep == {"optim.lr": "2e-4", "algorithm.loss.filter_options.mu": "3.0"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["grpo", "nope"]}, "methods: unknown nope"),
        ({"methods": []}, "at least one method"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"base_overrides": ["seed=3"]}, "seed is set by the grid"),
        ({"base_overrides": ["name=x"]}, "name is set by the grid"),
        ({"sweeps": {"clip_v:optim.lr": ["1", "2"]}}, "scoped to 'clip_v'"),
        ({"sweeps": {"optim.lr": ["1", "1"]}}, "duplicate values"),
        # Every run is validated before anything starts: grpo has no filter options.
        ({"sweeps": {"algorithm.loss.filter_options.mu": ["2", "3"]}}, "run grpo-mu=2-seed0"),
    ],
)
def test_plan_grid_refuses_bad_input(tmp_path, kwargs, message) -> None:
    arguments = {"methods": ["grpo"], "seeds": [0], "output_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_grid(**arguments)
