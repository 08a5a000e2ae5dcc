"""The one held-out evaluation: seeded, its two files in their formats, the run's own settings."""

from __future__ import annotations

import json

import pytest

from entropy_dynamics.study.evaluation import (
    FINAL_EVAL_FILE,
    EvalSettings,
    final_eval_current,
    final_evaluation,
    held_out_evaluation,
)
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.setup import RunSetup
from entropy_dynamics.training.trainer import Trainer

SMALL = [
    "steps=1",
    "eval.every=0",
    "eval.problems=2",
    "eval.k=3",
    "tensorboard=false",
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_model_dir):
    """A one-step run and the trainer that ran it."""
    out = tmp_path_factory.mktemp("evaluation")
    config = load_config(None, [f"model.path={random_model_dir}", f"output_dir={out}", "name=r",
                                *SMALL])  # fmt: skip
    trainer = Trainer(config, config.run_dir)
    trainer.train()
    return config, trainer


def test_eval_json_keeps_its_keys_and_repeats_with_the_seed(trained, tmp_path) -> None:
    config, trainer = trained
    settings = EvalSettings(problems=3, k=2, temperature=1.0, seed=5, ks=(1, 2))
    first = held_out_evaluation(trainer.setup, settings, eval_file=tmp_path / "a.json")
    again = held_out_evaluation(trainer.setup, settings, eval_file=tmp_path / "b.json")
    assert first == again
    record = json.loads((tmp_path / "a.json").read_text())
    assert list(record) == ["model", "problems", "k", "temperature", "seed", "metrics",
                            "per_problem_correct"]  # fmt: skip
    assert record["model"] == str(config.model.path) and record["problems"] == 3
    assert record["metrics"] == first.to_metrics("eval") and len(record["per_problem_correct"]) == 3
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_final_evaluation_uses_the_runs_settings(trained) -> None:
    config, trainer = trained
    assert not final_eval_current(config.run_dir, 1)
    record = final_evaluation(config.run_dir, setup=trainer.setup)  # the trainer's model
    assert list(record) == ["step", "k", "problems", "temperature", "avg_at_k", "pass_at",
                            "correct", "format_rate", "mean_entropy"]  # fmt: skip
    assert (record["step"], record["k"], record["problems"]) == (1, 3, 2)
    assert list(record["pass_at"]) == ["1", "3"]
    assert json.loads((config.run_dir / FINAL_EVAL_FILE).read_text()) == record
    assert final_eval_current(config.run_dir, 1)
    reloaded = final_evaluation(config.run_dir)  # from the checkpoint: the same numbers
    assert reloaded == record
    assert EvalSettings.of_run(config) == EvalSettings(2, 3, 1.0, 0, None, 4)


def test_a_run_without_checkpoint_has_no_final_evaluation(trained, tmp_path) -> None:
    _, trainer = trained
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        held_out_evaluation(trainer.setup, EvalSettings(problems=1, k=1), run_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        RunSetup.from_run(tmp_path)
