"""Sampling from each distinct prompt prefilled once equals sampling from full prefills."""

from __future__ import annotations

import torch

from entropy_dynamics.training.prompt_cache import (
    cache_keyword,
    check_shared_prefill,
    shared_prefill,
)
from entropy_dynamics.training.rollout import _left_padded
from entropy_dynamics.training.sampler import hf_decode

PROMPTS = ["1 2 -> 3: ", "12 7 3 -> 16: "]  # different lengths: left padding


def test_the_shared_prefill_continues_as_a_full_prefill(tiny_lm) -> None:
    model, _ = tiny_lm
    assert check_shared_prefill(model) == ""
    assert cache_keyword(model) in ("cache", "past_key_values")
    ids = torch.tensor([[5, 6, 7, 8]])
    cached = shared_prefill(model, ids, torch.ones_like(ids), 3)
    assert cached.get_seq_length() == 3  # all but the last prompt token, for three rows
    assert shared_prefill(model, ids[:, :1], torch.ones_like(ids[:, :1]), 3) is None


def test_generate_continues_a_shared_prefill_as_a_full_one(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    ids, mask = _left_padded(tokenizer, PROMPTS, tokenizer.pad_token_id)
    options = {"num_samples": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6,
               "do_sample": False, "eos_ids": [tokenizer.eos_token_id],
               "pad_id": tokenizer.pad_token_id, "valid_vocab": None}  # fmt: skip
    model.eval()
    shared = hf_decode(model, ids, mask, share_prefill=True, **options)
    full = hf_decode(model, ids, mask, share_prefill=False, **options)
    model.train()
    assert torch.equal(shared[0], full[0])  # greedy: the same tokens
    torch.testing.assert_close(shared[1].logprobs, full[1].logprobs, rtol=1e-5, atol=1e-5)
