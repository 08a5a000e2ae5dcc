"""Sampling from each distinct prompt prefilled once equals sampling from full prefills."""

from __future__ import annotations

import torch

from entropy_dynamics.training import rollout as rollout_module
from entropy_dynamics.training.prompt_cache import (
    cache_keyword,
    check_shared_prefill,
    shared_prefill,
)
from entropy_dynamics.training.rollout import generate

PROMPTS = ["1 2 -> 3: ", "12 7 3 -> 16: "]  # different lengths: left padding


def test_the_shared_prefill_continues_as_a_full_prefill(tiny_lm) -> None:
    model, _ = tiny_lm
    assert check_shared_prefill(model) == ""
    assert cache_keyword(model) in ("cache", "past_key_values")
    ids = torch.tensor([[5, 6, 7, 8]])
    cached = shared_prefill(model, ids, torch.ones_like(ids), 3)
    assert cached.get_seq_length() == 3  # all but the last prompt token, for three rows
    assert shared_prefill(model, ids[:, :1], torch.ones_like(ids[:, :1]), 3) is None


def test_sampling_is_the_same_with_and_without_the_shared_prefill(tiny_lm, monkeypatch) -> None:
    model, tokenizer = tiny_lm
    outs = []
    for shared in (True, False):
        monkeypatch.setattr(rollout_module, "_prefill_shares", lambda _model, s=shared: s)
        torch.manual_seed(0)
        outs.append(generate(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=6))
    with_cache, without = outs
    assert torch.equal(with_cache.response_ids, without.response_ids)
    for a, b in zip(
        (with_cache.sampling_stats().logprobs, with_cache.sampling_stats().entropy),
        (without.sampling_stats().logprobs, without.sampling_stats().entropy),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
