"""The embedded model's architecture (``models/architecture.py``): sizes that cannot be built are
refused, and a saved model reloads with transformers' auto classes to identical logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from entropy_dynamics.models import (
    ModelSize,
    build_model,
    build_tokenizer,
    count_parameters,
    save_tokenizer,
)

TINY = ModelSize(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


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
