"""The evaluation of a named split: seeded, its two files in their formats (each naming its split),
the run's own settings; the final evaluation on the test split with the validation split beside
it, the in-run evaluations on the validation split."""

from __future__ import annotations

import json
from types import SimpleNamespace

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
    "eval.every=1",
    "eval.problems=2",
    "eval.k=3",
    "tensorboard=false",
    "rollout.prompts_per_step=1",
    "rollout.group_size=2",
    "rollout.max_new_tokens=4",
]
RECORD_KEYS = ["split", "step", "k", "problems", "temperature", "avg_at_k", "pass_at", "correct",
               "format_rate", "mean_entropy"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_model_dir):
    """A one-step run (evaluated in-run at steps 0 and 1), the trainer and its history."""
    out = tmp_path_factory.mktemp("evaluation")
    config = load_config(None, [f"model.path={random_model_dir}", f"output_dir={out}", "name=r",
                                *SMALL])  # fmt: skip
    trainer = Trainer(config, config.run_dir)
    history = trainer.train()
    return config, trainer, history


def test_eval_json_names_its_split_and_repeats_with_the_seed(trained, tmp_path) -> None:
    config, trainer, _ = trained
    settings = EvalSettings(problems=3, k=2, temperature=1.0, seed=5, ks=(1, 2))
    first = held_out_evaluation(trainer.setup, settings, eval_file=tmp_path / "a.json")
    again = held_out_evaluation(trainer.setup, settings, eval_file=tmp_path / "b.json")
    assert first == again
    record = json.loads((tmp_path / "a.json").read_text())
    assert list(record) == ["model", "split", "problems", "k", "temperature", "seed", "metrics",
                            "per_problem_correct"]  # fmt: skip
    assert record["split"] == "test"  # the default: a result
    assert record["model"] == str(config.model.path) and record["problems"] == 3
    assert record["metrics"] == first.to_metrics("eval") and len(record["per_problem_correct"]) == 3
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    validation = EvalSettings(problems=3, k=2, seed=5, split="validation")
    held_out_evaluation(trainer.setup, validation, eval_file=tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text())["split"] == "validation"
    with pytest.raises(ValueError, match="split"):
        EvalSettings(split="train")  # type: ignore[arg-type]


def test_each_split_is_evaluated_on_its_own_problems(trained, monkeypatch) -> None:
    """A scorer that calls every test problem right and every other wrong: the test record is
    all right, the validation record all wrong."""
    _, trainer, _ = trained
    setup = trainer.setup
    test = set(setup.test_problems)
    monkeypatch.setattr(setup.task, "score", lambda problem, completion: SimpleNamespace(
        reward=1.0, correct=float(problem in test), format=1.0))  # fmt: skip
    for split, right in (("test", 4), ("validation", 0)):
        result = held_out_evaluation(setup, EvalSettings(problems=5, k=4, split=split))
        assert result.per_problem_correct == [right] * 5, split


def test_final_evaluation_reports_the_test_split_and_validation_beside_it(trained) -> None:
    config, trainer, history = trained
    assert not final_eval_current(config.run_dir, 1)
    record = final_evaluation(config.run_dir, setup=trainer.setup)  # the trainer's model
    assert list(record) == [*RECORD_KEYS, "validation"]
    assert record["split"] == "test" and list(record["validation"]) == RECORD_KEYS
    assert record["validation"]["split"] == "validation"
    for split in (record, record["validation"]):
        assert (split["step"], split["k"], split["problems"]) == (1, 3, 2)
        assert list(split["pass_at"]) == ["1", "3"] and len(split["correct"]) == 2
    # the validation record is the run's own in-run evaluation of its final model
    last = history[-1]
    assert record["validation"]["avg_at_k"] == last["eval/avg@3"]
    assert record["validation"]["mean_entropy"] == last["eval/entropy"]
    assert json.loads((config.run_dir / FINAL_EVAL_FILE).read_text()) == record
    assert final_eval_current(config.run_dir, 1)
    reloaded = final_evaluation(config.run_dir)  # from the checkpoint: the same numbers
    assert reloaded == record
    assert EvalSettings.of_run(config) == EvalSettings(2, 3, 1.0, 0, None, 4, "test")


def test_an_older_final_evaluation_is_not_current(trained, tmp_path) -> None:
    """A file without "split" was evaluated on the one held-out split of older versions."""
    older = {"step": 1, "k": 3, "problems": 2, "correct": [0, 0]}
    (tmp_path / FINAL_EVAL_FILE).write_text(json.dumps(older))
    assert not final_eval_current(tmp_path, 1)
    (tmp_path / FINAL_EVAL_FILE).write_text(json.dumps({**older, "split": "test"}))
    assert not final_eval_current(tmp_path, 1)  # no validation record beside it
    (tmp_path / FINAL_EVAL_FILE).write_text("[1]")
    assert not final_eval_current(tmp_path, 1)


def test_a_run_without_checkpoint_has_no_final_evaluation(trained, tmp_path) -> None:
    _, trainer, _ = trained
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        final_evaluation(tmp_path, setup=trainer.setup)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        RunSetup.from_run(tmp_path)
