"""The shipped model (``models/__init__.py``: ``default_model_path``): small, pretrained to a
partial success rate as its record says, answering in the task's format, with the built
tokenizer."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from entropy_dynamics.models import build_tokenizer, default_model_path
from entropy_dynamics.tasks.countdown import CountdownTask, format_prompt
from entropy_dynamics.training.pretrain import METRICS_FILE


def test_shipped_model_is_small_and_records_its_provenance():
    path = default_model_path()
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert total <= 10 * 2**20
    record = json.loads((path / METRICS_FILE).read_text())
    assert record["command"].startswith("entropy-dynamics pretrain")
    metrics = record["metrics"]
    k = record["config"]["eval_samples"]
    # the reason the model exists: partial success, room to explore, entropy to lose
    assert 0.10 <= metrics["eval/pass@1"] <= 0.50
    assert metrics[f"eval/pass@{k}"] > metrics["eval/pass@1"] + 0.2
    assert metrics["eval/entropy"] > 0.05


def test_shipped_model_generates_a_well_formed_answer():
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    task = CountdownTask()
    problem = task.validation_problems()[0]
    prompt = task.prompt(problem)
    assert prompt == format_prompt(problem.numbers, problem.target)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=24)
    completion_ids = out[0, ids.shape[1] :].tolist()
    assert tokenizer.eos_token_id in completion_ids  # stops by itself
    completion = tokenizer.decode(completion_ids, skip_special_tokens=True)
    assert task.score(problem, completion).format == 1.0, completion


def test_shipped_tokenizer_is_the_built_tokenizer():
    path = default_model_path()
    shipped = AutoTokenizer.from_pretrained(path, local_files_only=True)
    built = build_tokenizer()
    text = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n"
    assert shipped(text)["input_ids"] == built(text)["input_ids"]
    assert (shipped.pad_token_id, shipped.eos_token_id) == (0, 1)
    assert json.loads((path / "tokenizer.json").read_text())["padding"] is None
