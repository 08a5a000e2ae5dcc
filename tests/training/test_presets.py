"""``--task NAME`` presets (``training/presets.py``): settings under the user's config."""

from __future__ import annotations

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.models import EMBEDDED_MODELS, default_model_path
from entropy_dynamics.tasks.countdown_search import CountdownSearchConfig
from entropy_dynamics.training.config import TrainConfig, load_config
from entropy_dynamics.training.presets import TASK_PRESETS, task_preset, under


def test_countdown_search_preset_samples_as_far_as_the_grader_reads() -> None:
    cfg = load_config(None, [], task="countdown_search")
    assert cfg.task.name == "countdown_search"
    assert cfg.rollout.max_new_tokens == CountdownSearchConfig().max_response_chars == 512
    assert cfg.algorithm.micro_batch_tokens == 2048
    # no model.path: the task's own embedded model
    assert cfg.model.path == ""
    assert cfg.model.resolved_path(cfg.task.name).name == "countdown-search-tiny"


def test_countdown_preset_is_the_default_config() -> None:
    assert load_config(None, [], task="countdown") == TrainConfig()


def test_the_users_yaml_and_overrides_win_over_the_preset(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  max_new_tokens: 300\n")
    assert load_config(path, [], task="countdown_search").rollout.max_new_tokens == 300
    cfg = load_config(path, ["rollout.max_new_tokens=200"], task="countdown_search")
    assert cfg.rollout.max_new_tokens == 200
    assert under({"rollout": {"group_size": 4}}, ["rollout.group_size=8", "steps=3"]) == {
        "rollout": {"group_size": 4},
        "steps": 3,
    }


def test_a_task_the_config_contradicts_or_an_unknown_one_is_refused(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  name: countdown\n")
    with pytest.raises(ConfigError, match=r"--task countdown_search: .*c\.yaml.*name=countdown"):
        load_config(path, [], task="countdown_search")
    with pytest.raises(ConfigError, match=r"task\.name=math"):
        load_config(None, ["task.name=math"], task="countdown")
    with pytest.raises(ConfigError, match="unknown task 'sudoku'; choose from countdown, "):
        task_preset("sudoku")


def test_every_task_has_a_preset_and_the_embedded_models_are_tasks() -> None:
    from typing import get_args, get_type_hints

    from entropy_dynamics.training.config import TaskConfig

    names = get_args(get_type_hints(TaskConfig)["name"])
    assert set(TASK_PRESETS) == set(names)
    assert set(EMBEDDED_MODELS) <= set(names)
    assert default_model_path("math") == default_model_path("countdown") == default_model_path()
