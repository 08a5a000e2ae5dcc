"""The embedded model: char-level tokenizer, tiny Qwen2, pretraining, and the shipped asset."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from entropy_dynamics.models import (
    ModelSize,
    build_model,
    build_tokenizer,
    count_parameters,
    default_model_path,
    save_tokenizer,
)
from entropy_dynamics.models.tokenizer import SPECIAL_TOKENS, byte_symbols
from entropy_dynamics.tasks.countdown import CountdownConfig, CountdownTask, format_prompt
from entropy_dynamics.training.pretrain import (
    METRICS_FILE,
    PretrainConfig,
    encode_examples,
    lr_schedule,
    pretrain,
)

TINY = ModelSize(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


def _tiny_pretrain_config(seed: int = 0, steps: int = 3, eval_problems: int = 0) -> PretrainConfig:
    return PretrainConfig(
        seed=seed,
        model=TINY,
        task=CountdownConfig(n_train=16, n_eval=4, max_numbers=3),
        steps=steps,
        batch_size=4,
        warmup_steps=1,
        eval_problems=eval_problems,
        eval_samples=2,
        max_new_tokens=12,
    )


# --- tokenizer --------------------------------------------------------------------------------


def test_tokenizer_round_trips_every_printable_ascii_character():
    tokenizer = build_tokenizer()
    printable = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n\t"
    text = printable + "  (3+4) * 5 -> 35: \n\n x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per ASCII character
    assert tokenizer.decode(ids) == text
    # byte b has id b + 2, after <pad> = 0 and <eos> = 1: 258 tokens in all
    assert ids == [ord(c) + 2 for c in text]
    assert len(tokenizer) == 258
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert tokenizer.convert_ids_to_tokens([0, 1]) == list(SPECIAL_TOKENS)


def test_tokenizer_round_trips_non_ascii_text_byte_by_byte():
    tokenizer = build_tokenizer()
    text = "é → 中"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [b + 2 for b in text.encode("utf-8")]
    assert tokenizer.decode(ids) == text


def test_byte_symbols_match_the_byte_level_pre_tokenizer():
    from tokenizers import pre_tokenizers

    symbols = byte_symbols()
    assert len(set(symbols)) == 256
    assert set(symbols) == set(pre_tokenizers.ByteLevel.alphabet())
    assert (symbols[ord(" ")], symbols[ord("\n")], symbols[ord("a")]) == ("Ġ", "Ċ", "a")


def test_completion_ids_with_eos_and_padding_decode_to_the_exact_answer():
    tokenizer = build_tokenizer()
    answer = "(19-6)*4-9"
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    completion = ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * 3
    assert tokenizer.decode(completion, skip_special_tokens=True) == answer


# --- architecture -----------------------------------------------------------------------------


def test_model_size_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="hidden_size"):
        ModelSize(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelSize(num_heads=4, num_kv_heads=3)


def test_saved_model_reloads_with_auto_classes_to_identical_logits(tmp_path):
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = build_model(TINY, tokenizer).eval()
    model.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (tmp_path / name).is_file(), name

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    # transformers >= 5 loads a qwen2 directory's tokenizer as Qwen2Tokenizer, rebuilt from the
    # vocabulary: it must still be the same function of the text
    printable = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n"
    assert reloaded_tokenizer(printable)["input_ids"] == tokenizer(printable)["input_ids"]
    assert reloaded_tokenizer.decode(tokenizer(printable)["input_ids"]) == printable
    assert (reloaded_tokenizer.pad_token_id, reloaded_tokenizer.eos_token_id) == (0, 1)
    prompt = "3 5 7 8 -> 22: (8-5)*7+1"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert reloaded.config.tie_word_embeddings
    assert reloaded.generation_config.eos_token_id == tokenizer.eos_token_id
    assert reloaded.generation_config.pad_token_id == tokenizer.pad_token_id
    # tied embeddings: V·d counted once, not twice
    assert count_parameters(reloaded) == count_parameters(model)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()


# --- pretraining pieces -----------------------------------------------------------------------


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


# --- pretraining runs -------------------------------------------------------------------------


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


# --- the shipped model ------------------------------------------------------------------------


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
    problem = task.eval_problems()[0]
    prompt = task.prompt(problem)
    assert prompt == format_prompt(problem.numbers, problem.target)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, do_sample=False, max_new_tokens=24)
    completion_ids = out[0, ids.shape[1] :].tolist()
    assert tokenizer.eos_token_id in completion_ids  # stops by itself
    completion = tokenizer.decode(completion_ids, skip_special_tokens=True)
    assert task.score(problem, completion).format == 1.0, completion


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


def test_shipped_tokenizer_is_the_built_tokenizer():
    path = default_model_path()
    shipped = AutoTokenizer.from_pretrained(path, local_files_only=True)
    built = build_tokenizer()
    text = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n"
    assert shipped(text)["input_ids"] == built(text)["input_ids"]
    assert (shipped.pad_token_id, shipped.eos_token_id) == (0, 1)
    assert json.loads((path / "tokenizer.json").read_text())["padding"] is None
