"""The embedded model: char-level tokenizer, tiny Qwen2, pretraining, and the shipped asset."""

from __future__ import annotations

import json

import pytest
import torch
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
from entropy_dynamics.tasks.countdown import CountdownTask, format_prompt
from entropy_dynamics.training.pretrain import (
    METRICS_FILE,
)

TINY = ModelSize(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


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


# --- pretraining runs -------------------------------------------------------------------------


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


def test_shipped_tokenizer_is_the_built_tokenizer():
    path = default_model_path()
    shipped = AutoTokenizer.from_pretrained(path, local_files_only=True)
    built = build_tokenizer()
    text = "".join(chr(code) for code in range(0x20, 0x7F)) + "\n"
    assert shipped(text)["input_ids"] == built(text)["input_ids"]
    assert (shipped.pad_token_id, shipped.eos_token_id) == (0, 1)
    assert json.loads((path / "tokenizer.json").read_text())["padding"] is None
