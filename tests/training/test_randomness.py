"""Evaluation never changes training: the training rows of a run are bit-identical whatever its
evaluation settings, and a side stream leaves torch's global generator exactly as it found it."""

from __future__ import annotations

import torch

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.randomness import side_stream
from entropy_dynamics.training.trainer import Trainer

TINY = [
    "steps=3",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=6",
    "tensorboard=false",
    "threads=1",
    "task.countdown.n_train=40",
    "task.countdown.n_validation=20",
    "task.countdown.n_test=20",
    "algorithm.method=entropy_bonus",  # a gradient even without reward on a random model
    "optim.lr=1e-3",
]


def _training_rows(run_dir) -> list[dict]:
    return [
        {k: v for k, v in row.items() if not k.startswith(("eval/", "perf/"))}
        for row in read_metrics(run_dir / "metrics.jsonl")
        if any(not k.startswith(("eval/", "perf/", "step")) for k in row)  # not the step-0 eval
    ]


def test_training_rows_do_not_depend_on_the_evaluation_settings(tmp_path, random_model_dir):
    settings = {
        "no_eval": ["eval.every=0"],
        "every_step": ["eval.every=1", "eval.problems=16", "eval.k=2"],
        "default": [],
    }
    rows = {}
    for name, extra in settings.items():
        config = load_config(
            None, [f"model.path={random_model_dir}", f"output_dir={tmp_path}", f"name={name}",
                   *TINY, *extra],
        )  # fmt: skip
        Trainer(config, config.run_dir).train()
        rows[name] = _training_rows(config.run_dir)
    assert len(rows["no_eval"]) == 3
    assert rows["every_step"] == rows["no_eval"]
    assert rows["default"] == rows["no_eval"]
    evaluated = read_metrics(tmp_path / "every_step" / "metrics.jsonl")
    assert sum("eval/avg@2" in row for row in evaluated) == 4  # steps 0, 1, 2, 3


def test_a_side_stream_is_seeded_and_leaves_the_global_stream_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with side_stream(7):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)  # as if nothing had been drawn
    with side_stream(7):
        assert torch.equal(torch.rand(2), inside)  # the same seed, the same draws
