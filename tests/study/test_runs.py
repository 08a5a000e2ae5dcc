"""Runs on disk as data (``study/runs.py``): a run directory read with its config and final
evaluation, runs grouped by config over seeds, the scores of a run, and an incomplete run said."""

from __future__ import annotations

import json

import pytest
import yaml

from entropy_dynamics.study.runs import (
    Group,
    final_record,
    find_runs,
    group_runs,
    idle_notes,
    load_runs,
    pass_rates,
    record_split,
    run_scores,
    swept_keys,
)
from entropy_dynamics.training.config import load_config, save_config
from report_helpers import write_run, write_sweep_run


def _run(root, name: str, overrides: list[str], correct: list[int] | None):
    config = load_config(None, [f"name={name}", f"output_dir={root}", "steps=1", *overrides])
    config.run_dir.mkdir(parents=True)
    save_config(config, config.run_dir / "config.yaml")
    row = {"step": 1, "entropy/mean": 1.0, "eval/avg@4": 0.25, "eval/pass@1": 0.25}
    (config.run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    if correct is not None:
        final = {"step": 1, "k": 2, "correct": correct}
        (config.run_dir / "final_eval.json").write_text(json.dumps(final))
    return config.run_dir


def test_runs_are_read_grouped_and_scored(tmp_path) -> None:
    _run(tmp_path, "grpo-seed1", ["seed=1"], [2, 0])
    _run(tmp_path, "grpo-seed0", ["seed=0"], None)
    _run(tmp_path, "clip_b-seed0", ["algorithm.method=clip_b"], [1, 1])
    assert [p.name for p in find_runs([tmp_path])] == ["clip_b-seed0", "grpo-seed0", "grpo-seed1"]
    runs = load_runs([tmp_path])
    assert [r.method for r in runs] == ["clip_b", "grpo", "grpo"]
    assert runs[0].config["algorithm.method"] == "clip_b"  # the config, flattened
    groups = group_runs(runs)
    assert [(g.label, [r.seed for r in g.runs]) for g in groups] == [
        ("clip_b", [0]),
        ("grpo", [0, 1]),  # by seed, whatever the order on disk
    ]
    # final_eval.json: Avg@2 = (2 + 0) / 4; pass@1 = mean of c / n = 0.5; pass@2 = 1/2
    scores = {"avg": 0.5, "pass@1": 0.5, "pass@2": 0.5}
    assert run_scores(groups[1].runs[1], ks=(1, 2)) == (2, scores)
    # without one, the last logged evaluation
    assert run_scores(groups[1].runs[0], ks=(1, 2)) == (4, {"avg": 0.25, "pass@1": 0.25})
    assert pass_rates(groups[1]) == ([1.0, 0.0], {2})


def test_an_incomplete_run_is_reported_with_a_warning(tmp_path, random_model_dir) -> None:
    from entropy_dynamics.training.trainer import Trainer

    config = load_config(
        None,
        [f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=short", "steps=2",
         "eval.every=0", "tensorboard=false", "rollout.prompts_per_step=1",
         "rollout.group_size=2", "rollout.max_new_tokens=4"],
    )  # fmt: skip
    Trainer(config, config.run_dir).train()
    path = config.run_dir / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**saved, "steps": 5}))  # as if stopped at step 2 of 5
    with pytest.warns(UserWarning, match=r"incomplete run \(2 of 5 steps\)"):
        load_runs([config.run_dir])


def test_each_record_names_its_split(tmp_path) -> None:
    write_run(tmp_path, "grpo", 0, split=None)  # an older file: no "split"
    write_sweep_run(tmp_path, 1.0, 0)  # test and validation records
    old, new = sorted(load_runs([tmp_path]), key=lambda r: r.method != "grpo")
    assert record_split(final_record(old)) == "held-out"  # never called test
    assert final_record(old, "validation") is None
    assert record_split(final_record(new)) == "test"
    assert record_split(final_record(new, "validation")) == "validation"
    assert final_record(new, "validation")["correct"] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="test or validation"):
        final_record(new, "train")


def test_swept_keys_per_method() -> None:
    groups = [
        Group("grpo", "grpo", {"steps": 200}),
        Group("clip_b (mu=1)", "clip_b", {"steps": 20, "mu": 1.0}),
        Group("clip_b (mu=2)", "clip_b", {"steps": 20, "mu": 2.0}),
    ]
    assert swept_keys(groups) == ["mu"]  # steps differs only between methods
    assert swept_keys(groups, "clip_b") == ["mu"] and swept_keys(groups, "grpo") == []


def test_idle_notes_name_the_groups_whose_filter_dropped_nothing(tmp_path) -> None:
    for seed in range(2):
        write_run(tmp_path, "grpo", seed)  # no filter: never idle
        run = write_run(tmp_path, "clip_b", seed)
        if seed == 1:  # this seed's filter dropped nothing over its 25 steps
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            text = "".join(json.dumps({**r, "actor/frac_kept": 1.0}) + "\n" for r in rows)
            (run / "metrics.jsonl").write_text(text)
    notes = idle_notes(group_runs(load_runs([tmp_path])))
    assert list(notes) == ["clip_b"]
    assert notes["clip_b"].startswith("clip_b (idle in 1 of 2 seeds; seed 1): clip_b is idle")


def test_two_runs_of_one_config_and_seed_leave_one_out_with_a_warning(tmp_path) -> None:
    # the whole folder used to be refused; now the rest is reported and both runs are named
    _run(tmp_path, "a", ["seed=0"], [2, 0])
    _run(tmp_path, "b", ["seed=0"], [1, 1])  # the same config and seed under another name
    _run(tmp_path, "c", ["seed=1"], [0, 0])
    with pytest.warns(UserWarning, match="same config and seed 0") as caught:
        groups = group_runs(load_runs([tmp_path]))
    message = str(caught[0].message)
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message
    assert [[r.path.name for r in g.runs] for g in groups] == [["a", "c"]]


def test_pass_rates_fall_back_to_the_counts_of_eval_run(tmp_path) -> None:
    run = _run(tmp_path, "r", [], None)
    record = {"split": "test", "k": 4, "per_problem_correct": [4, 1, 0]}  # eval --run's eval.json
    (run / "eval.json").write_text(json.dumps(record))
    group = group_runs(load_runs([tmp_path]))[0]
    assert pass_rates(group) == ([1.0, 0.25, 0.0], {4})
    (run / "eval.json").write_text("{}")  # no counts in it: no data, not an error
    assert pass_rates(group_runs(load_runs([tmp_path]))[0]) == ([], set())
