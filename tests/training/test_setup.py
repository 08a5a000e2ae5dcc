"""One run's setup, built once: from a config, from a run directory, and its context check."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.setup import RunSetup
from entropy_dynamics.training.trainer import Trainer

SMALL = [
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
    "eval.every=0",
    "eval.problems=3",
    "tensorboard=false",
    "task.countdown.n_train=12",
    "task.countdown.n_validation=5",
    "task.countdown.n_test=5",
]


def _config(tmp_path, model_dir, extra=()):
    args = [f"model.path={model_dir}", f"output_dir={tmp_path}", "name=r", "steps=1", *SMALL]
    return load_config(None, [*args, *extra])


def test_build_holds_the_run_objects(tmp_path, random_model_dir) -> None:
    config = _config(tmp_path, random_model_dir, ["model.device=cpu"])
    setup = RunSetup.build(config)
    assert setup.model_path == random_model_dir and setup.checkpoint is None
    assert setup.device == torch.device("cpu") and setup.model.training
    assert setup.valid_vocab is None  # the tiny model's head has one row per token
    assert len(setup.train_problems) == 12
    assert len(setup.validation_problems) == len(setup.test_problems) == 5
    assert setup.eval_problems == setup.validation_problems[:3]  # eval.problems, of validation
    assert setup.problems("test") is setup.test_problems  # built once
    assert setup.problems("train") is setup.train_problems
    with pytest.raises(ValueError, match="split"):
        setup.problems("eval")
    assert setup.task.prompt(setup.train_problems[0]).endswith(": ")  # plain prompt, no chat
    assert setup.stats is setup.stats and setup.stats.fused  # built once, on first use
    assert setup.stats.temperature == config.rollout.temperature
    assert setup.context_problem() is None
    setup.check_context()


def test_a_device_override_wins(tmp_path, random_model_dir) -> None:
    setup = RunSetup.build(_config(tmp_path, random_model_dir, ["model.device=auto"]), device="cpu")
    assert setup.device == torch.device("cpu")


def test_context_check_names_the_option(tmp_path, random_model_dir) -> None:
    setup = RunSetup.build(_config(tmp_path, random_model_dir, ["rollout.max_new_tokens=100000"]))
    assert "rollout.max_new_tokens" in setup.context_problem()
    with pytest.raises(ConfigError, match="context"):
        setup.check_context()


def test_from_run_loads_the_newest_checkpoint_with_the_runs_config(tmp_path, random_model_dir):
    config = _config(tmp_path, random_model_dir, ["eval.problems=2"])
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        RunSetup.from_run(config.run_dir)
    trainer = Trainer(config, config.run_dir)
    trainer.train()
    setup = RunSetup.from_run(config.run_dir)
    assert setup.checkpoint is not None and setup.checkpoint.name == "step_000001"
    assert setup.model_path == setup.checkpoint / "model"
    assert setup.config.eval.problems == 2  # the run's config.yaml
    trained = dict(trainer.model.named_parameters())
    for name, param in setup.model.named_parameters():
        assert torch.equal(param, trained[name]), name
    other = RunSetup.from_run(config.run_dir, _config(tmp_path, random_model_dir))
    assert other.config.eval.problems == 3  # a config given wins


def test_the_trainer_keeps_its_setup(tmp_path, random_model_dir) -> None:
    config = _config(tmp_path, random_model_dir)
    trainer = Trainer(config, config.run_dir)
    setup = trainer.setup
    assert trainer.model is setup.model and trainer.forward is setup.stats
    assert trainer.train_problems == setup.train_problems
    assert trainer.eval_problems == setup.eval_problems
