"""The decoding loop: transformers' sampling rules, the same tokens and statistics as
``model.generate``, rows independent of the batch they were sampled in, and the fallback."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.training import rollout as rollout_module
from entropy_dynamics.training.rollout import _left_padded, generate
from entropy_dynamics.training.sampler import decode, hf_decode, nucleus

PROMPTS = ["1 2 -> 3: ", "12 7 3 -> 16: ", "4 -> 4: "]  # different lengths: left padding


def _options(tokenizer, **changes):
    options = {"num_samples": 3, "temperature": 0.8, "top_p": 1.0, "max_new_tokens": 6,
               "do_sample": False, "eos_ids": [tokenizer.eos_token_id],
               "pad_id": tokenizer.pad_token_id, "valid_vocab": None}  # fmt: skip
    return options | changes


@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95, 1.0])
def test_nucleus_equals_transformers_top_p(top_p: float) -> None:
    from transformers import TopPLogitsWarper

    scores = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    expected = TopPLogitsWarper(top_p)(torch.zeros(5, 1, dtype=torch.long), scores.clone())
    assert torch.equal(nucleus(scores, top_p), expected)


def test_greedy_decoding_equals_model_generate(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    ids, mask = _left_padded(tokenizer, PROMPTS, tokenizer.pad_token_id)
    model.eval()
    ours = decode(model, ids, mask, **_options(tokenizer))
    theirs = hf_decode(model, ids, mask, **_options(tokenizer))
    model.train()
    valid = torch.ones_like(ours[0], dtype=torch.bool)
    for row in range(ours[0].shape[0]):  # compare up to each row's EOS (theirs pads after it)
        ends = (ours[0][row] == tokenizer.eos_token_id).nonzero()
        if len(ends):
            valid[row, ends[0, 0] + 1 :] = False
    width = ours[0].shape[1]
    assert torch.equal(ours[0][valid], theirs[0][:, :width][valid])
    for field in ("logprobs", "entropy", "discriminator", "expected_discriminator"):
        a, b = getattr(ours[1], field), getattr(theirs[1], field)[:, :width]
        torch.testing.assert_close(a[valid], b[valid], rtol=1e-5, atol=1e-5, msg=field)


def test_a_row_is_sampled_as_if_alone(tiny_lm) -> None:
    # greedy rows do not depend on the rows beside them, nor on when those ended
    model, tokenizer = tiny_lm
    ids, mask = _left_padded(tokenizer, PROMPTS, tokenizer.pad_token_id)
    model.eval()
    together, _ = decode(model, ids, mask, **_options(tokenizer, num_samples=1))
    for row, prompt in enumerate(PROMPTS):
        alone_ids, alone_mask = _left_padded(tokenizer, [prompt], tokenizer.pad_token_id)
        alone, _ = decode(model, alone_ids, alone_mask, **_options(tokenizer, num_samples=1))
        width = alone.shape[1]
        assert torch.equal(together[row, :width], alone[0])
        assert (together[row, width:] == tokenizer.pad_token_id).all()
    model.train()


def test_generate_falls_back_to_model_generate(tiny_lm, monkeypatch) -> None:
    model, tokenizer = tiny_lm
    monkeypatch.setattr(rollout_module, "_cache_shares", lambda _model: False)
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=6,
                       do_sample=False)  # fmt: skip
    monkeypatch.setattr(rollout_module, "_cache_shares", lambda _model: True)
    own = generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=6, do_sample=False)
    assert torch.equal(rollout.response_ids, own.response_ids)
    assert torch.equal(rollout.response_mask, own.response_mask)
    assert rollout.completions == own.completions


def test_sampled_tokens_follow_the_distribution(tiny_lm) -> None:
    # the exponential race picks token i with probability p_i: a chi-square test on 4,000 draws
    # of one fixed distribution (the model's first-token one), seeded
    from scipy.stats import chisquare

    model, tokenizer = tiny_lm
    ids, mask = _left_padded(tokenizer, ["12 7 3 -> 16: "], tokenizer.pad_token_id)
    torch.manual_seed(0)
    model.eval()
    tokens, stats = decode(model, ids, mask, **_options(tokenizer, num_samples=4000,
                                                       do_sample=True, max_new_tokens=1))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double() / 0.8, -1)
    model.train()
    counts = torch.bincount(tokens[:, 0], minlength=probs.numel()).double()
    likely = probs * 4000 >= 5  # chi-square needs expected counts of at least 5; the rest pooled
    observed, expected = counts[likely], probs[likely] * 4000
    if (~likely).any():
        observed = torch.cat([observed, counts[~likely].sum()[None]])
        expected = torch.cat([expected, probs[~likely].sum()[None] * 4000])
    expected = expected * observed.sum() / expected.sum()  # the valid vocabulary's mass only
    assert likely.sum() >= 3
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3
    torch.testing.assert_close(stats.logprobs[:, 0].double(), probs[tokens[:, 0]].log(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
