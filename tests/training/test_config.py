"""TrainConfig: defaults, YAML + overrides, validation messages that name the field."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import TrainConfig, load_config, save_config


def test_defaults_resolve_to_plain_grpo() -> None:
    config = load_config()
    loss = config.algorithm.policy_loss()
    assert config.algorithm.method == "grpo" and loss.filter == "none"
    assert loss.eps_low == loss.eps_high == 0.2
    assert config.run_name == "grpo-seed0"


def test_method_and_loss_overrides() -> None:
    config = load_config(None, ["algorithm.method=clip_b", "algorithm.loss.filter_options={mu: 2}"])
    loss = config.algorithm.policy_loss()
    assert loss.filter == "clip_b" and loss.filter_options == {"mu": 2}
    higher = load_config(None, ["algorithm.method=clip_higher"]).algorithm.policy_loss()
    assert higher.eps_high == 0.28


def test_yaml_then_overrides_and_round_trip(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("steps: 7\nrollout:\n  group_size: 4\n")
    config = load_config(path, ["rollout.group_size=6"])
    assert config.steps == 7 and config.rollout.group_size == 6
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["rollout.group_size=1"], r"rollout\.group_size must be >= 2"),
        (["rollout.top_p=0"], r"rollout\.top_p"),
        (["algorithm.method=nope"], r"algorithm\.method.*clip_b"),
        (["algorithm.loss={eps: 1}"], r"unknown loss option 'eps'"),
        (["algorithm.advantage=nope"], r"algorithm\.advantage.*grpo"),
        (["optim.lr=-1"], r"optim\.lr must be > 0"),
        (["model.dtype=int8"], r"model\.dtype: must be one of"),
        (["task.countdown.n_train=0"], r"task\.countdown: n_train must be >= 1"),
        (["rollout.group_sise=4"], r"did you mean 'group_size'"),
        (["steps=many"], r"steps: expected an integer"),
    ],
)
def test_invalid_values_name_the_field(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  group_size: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: rollout\.group_size"):
        load_config(path)


def test_default_model_path_is_the_embedded_model() -> None:
    path = TrainConfig().model.resolved_path()
    assert path.name == "countdown-tiny"


ENGINE_CONFIGS = ("trl", "verl")
"""Folders of configs/ that hold an engine's own configs (tested in that engine's suite)."""


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml")
        if p.parent.name not in ENGINE_CONFIGS
    ),
    ids=str,
)
def test_shipped_configs_load(path) -> None:
    # Every recipe of our trainer under configs/ names only real fields and valid values;
    # pretrain_*.yaml are `pretrain --config` files (PretrainConfig's fields)
    if path.name.startswith("pretrain_"):
        from entropy_dynamics.training.config_io import from_dict, load_yaml
        from entropy_dynamics.training.pretrain import PretrainConfig

        assert from_dict(PretrainConfig, load_yaml(path)).steps >= 1
        return
    config = load_config(path)
    assert config.steps >= 1 and config.algorithm.policy_loss() is not None


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "a\\b", "/abs"])
def test_a_run_name_is_a_name_not_a_path(name, tmp_path) -> None:
    with pytest.raises(ConfigError, match="is a path, not a run name"):
        load_config(None, [f"name={name}"])
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    out = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", f"output_dir={out}", f"name={name}", "steps=1"])
    assert result.exit_code == 2 and "not a run name" in " ".join(result.output.split())
    assert not any(tmp_path.rglob("*"))  # nothing written anywhere


def test_an_older_config_yaml_with_one_held_out_split_loads(tmp_path) -> None:
    """Older configs held out one split (``task.countdown.n_eval``, ``task.math.eval_size``);
    their ``config.yaml`` (the older defaults written out) loads as today's defaults, silently."""
    older = tmp_path / "config.yaml"
    older.write_text("task:\n  countdown:\n    n_eval: 200\n  math:\n    eval_size: 64\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_config(older)
    assert config.task == TrainConfig().task


def test_older_held_out_sizes_are_read_as_validation_and_test_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="n_eval=50 .* n_validation=50, n_test=50"):
        config = load_config(None, ["task.countdown.n_eval=50"])
    assert (config.task.countdown.n_validation, config.task.countdown.n_test) == (50, 50)
    with pytest.warns(FutureWarning, match="eval_size=5 .* validation_size=2, test_size=3"):
        config = load_config(None, ["task.math.eval_size=5"])
    assert (config.task.math.validation_size, config.task.math.test_size) == (2, 3)
    with pytest.warns(FutureWarning):  # today's field, given too, wins
        config = load_config(None, ["task.countdown.n_eval=50", "task.countdown.n_test=7"])
    assert (config.task.countdown.n_validation, config.task.countdown.n_test) == (50, 7)
    with pytest.raises(ConfigError, match=r"task\.countdown\.n_eval"):
        load_config(None, ["task.countdown.n_eval=-1"])
