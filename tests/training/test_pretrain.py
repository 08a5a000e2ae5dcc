"""Supervised pretraining of the embedded model: schedule, labels, errors, determinism, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from entropy_dynamics.models import ModelSize, build_tokenizer, count_parameters
from entropy_dynamics.tasks.countdown import CountdownConfig
from entropy_dynamics.tasks.countdown_search import CountdownSearchConfig, parse_trace
from entropy_dynamics.training.pretrain import (
    METRICS_FILE,
    PretrainConfig,
    encode_examples,
    example_stream,
    lr_schedule,
    pretrain,
)

TINY = ModelSize(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


def _tiny_pretrain_config(seed: int = 0, steps: int = 3, eval_problems: int = 0) -> PretrainConfig:
    return PretrainConfig(
        seed=seed,
        model=TINY,
        task=CountdownConfig(n_train=16, n_validation=4, n_test=4, max_numbers=3),
        steps=steps,
        batch_size=4,
        warmup_steps=1,
        eval_problems=eval_problems,
        eval_samples=2,
        max_new_tokens=12,
    )


def test_lr_schedule_warmup_then_cosine():
    kwargs = {"steps": 10, "warmup_steps": 2, "min_lr_ratio": 0.1}
    assert lr_schedule(0, **kwargs) == pytest.approx(0.5)  # (0 + 1) / 2
    assert lr_schedule(1, **kwargs) == pytest.approx(1.0)
    assert lr_schedule(2, **kwargs) == pytest.approx(1.0)  # cosine starts at its peak
    # halfway through the cosine (step 6 of 2..10): 0.1 + 0.9 · (1 + cos(π/2)) / 2 = 0.55
    assert lr_schedule(6, **kwargs) == pytest.approx(0.55)
    assert lr_schedule(10, **kwargs) == pytest.approx(0.1)
    assert lr_schedule(4, **kwargs) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))


def test_encode_examples_labels_only_the_completion_and_eos():
    tokenizer = build_tokenizer()
    input_ids, attention_mask, labels = encode_examples(
        tokenizer, ["1 2 -> 3: ", "1 -> 1: "], ["1+2", "1"]
    )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    # row 0: 10 prompt characters, 3 answer characters, EOS → length 14, no padding
    assert input_ids.shape == (2, 14)
    assert tokenizer.decode(input_ids[0, :13]) == "1 2 -> 3: 1+2"
    assert labels[0, :10].eq(-100).all()
    assert labels[0, 10:].tolist() == tokenizer("1+2")["input_ids"] + [eos]
    # row 1: 8 prompt characters, "1", EOS, then 4 pads (right padding)
    assert attention_mask[1].tolist() == [1] * 10 + [0] * 4
    assert input_ids[1, 10:].eq(pad).all()
    assert labels[1].tolist() == [-100] * 8 + tokenizer("1")["input_ids"] + [eos] + [-100] * 4


def test_pretrain_config_names_the_bad_field():
    with pytest.raises(ValueError, match=r"PretrainConfig\.steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"PretrainConfig\.min_lr_ratio"):
        PretrainConfig(min_lr_ratio=1.5)


def test_pretrain_config_refuses_an_unknown_task_or_trace_choice():
    with pytest.raises(ValueError, match=r"PretrainConfig\.task_name"):
        PretrainConfig(task_name="math")
    with pytest.raises(ValueError, match=r"PretrainConfig\.search_traces"):
        PretrainConfig(search_traces="some")
    assert PretrainConfig(search={"max_nodes": 5}).search == CountdownSearchConfig(max_nodes=5)


def _search_config(search_traces: str, max_nodes: int) -> PretrainConfig:
    return PretrainConfig(
        task=CountdownConfig(n_train=40, n_validation=4, n_test=4),
        task_name="countdown_search",
        search=CountdownSearchConfig(max_nodes=max_nodes),
        search_traces=search_traces,
    )


def test_countdown_search_examples_are_solving_traces_of_solved_problems():
    # max_nodes=3: many strategies give up, so some problems have no solving trace at all
    task, stream = example_stream(_search_config("solved", max_nodes=3))
    train = task.train_problems()
    assert 0 < len(stream.problems) < len(train)  # the unsolved ones are skipped
    assert all(task.reference_solutions(p) for p in stream.problems)
    prompts, completions = stream.sample(64)
    by_prompt = {task.prompt(p): p for p in stream.problems}
    for prompt, completion in zip(prompts, completions, strict=True):
        assert prompt.endswith(":\n")  # countdown_search's prompt, not Countdown's
        problem = by_prompt[prompt]
        assert task.score(problem, completion).correct == 1.0
        assert completion in task.search_traces(problem).values()  # a solver trace, verbatim
    # the same seed, the same stream
    assert example_stream(_search_config("solved", max_nodes=3))[1].sample(64) == (
        prompts,
        completions,
    )


def test_countdown_search_all_traces_include_those_that_give_up():
    _, stream = example_stream(_search_config("all", max_nodes=3))
    solved = example_stream(_search_config("solved", max_nodes=3))[1]
    assert stream.problems == solved.problems  # still only problems some strategy solves
    _, completions = stream.sample(200)
    answers = [parse_trace(c).answer for c in completions]
    assert "none" in answers and any(a not in (None, "none") for a in answers)


def test_countdown_examples_are_unchanged_by_the_task_option():
    # the default is Countdown: prompts "a b c -> t: ", one solution each (no trace)
    _, stream = example_stream(PretrainConfig(task=CountdownConfig(n_train=20)))
    prompts, completions = stream.sample(8)
    assert all(prompt.endswith(": ") for prompt in prompts)
    assert all("\n" not in c and "answer" not in c for c in completions)


@pytest.mark.slow
def test_short_pretrain_writes_a_loadable_model_and_metrics(tmp_path):
    phases = []
    metrics = pretrain(
        _tiny_pretrain_config(steps=5, eval_problems=2),
        tmp_path,
        progress=lambda phase, done, total, info: phases.append((phase, done, total)),
        provenance={"command": "test"},
    )
    assert ("train", 5, 5) in phases and phases[-1][0] == "eval"
    record = json.loads((tmp_path / METRICS_FILE).read_text())
    assert record["command"] == "test"
    assert record["config"]["steps"] == 5
    assert record["metrics"] == pytest.approx(metrics)
    assert 0 <= metrics["eval/pass@1"] <= metrics["eval/pass@2"] <= 1
    assert metrics["eval/entropy"] > 0
    # a 5-step model is near uniform over 258 tokens: its first loss is close to log 258 ≈ 5.55
    assert metrics["train/loss_first"] == pytest.approx(math.log(258), abs=0.3)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert count_parameters(model) == metrics["model/parameters"]
    AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    # evaluation pads batches on the left; that state must not leak into the saved tokenizer
    assert json.loads((tmp_path / "tokenizer.json").read_text())["padding"] is None


@pytest.mark.slow
def test_pretrain_is_bitwise_deterministic_in_the_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        pretrain(_tiny_pretrain_config(seed=seed), tmp_path / name)
    a, b, c = (load_file(tmp_path / name / "model.safetensors") for name in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)  # the seed matters


@pytest.mark.slow
def test_pretrain_cli_writes_a_model_directory(tmp_path):
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    output = tmp_path / "model"
    args = ["pretrain", "--output", str(output), "--steps", "2", "--batch-size", "2"]
    args += ["--hidden-size", "32", "--num-layers", "1", "--eval-problems", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((output / METRICS_FILE).read_text())
    assert record["command"].startswith("entropy-dynamics")
    assert record["config"]["model"]["hidden_size"] == 32
    assert (output / "model.safetensors").is_file()
    bad = CliRunner().invoke(app, ["pretrain", "--output", str(output), "--hidden-size", "30"])
    assert bad.exit_code == 2 and "hidden_size" in bad.output
