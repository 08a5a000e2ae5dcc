"""Rollout: masks, sampling statistics vs an unpadded forward, top-p, determinism, padding."""

from __future__ import annotations

import copy

import pytest
import torch

from entropy_dynamics.training.rollout import generate, response_mask_from_ids
from entropy_dynamics.training.teacher_forcing import response_logits

PROMPTS = ["100 200 300 -> 600: ", "7 -> 7: "]  # different lengths: the second is left-padded


def test_response_mask_runs_through_the_first_eos() -> None:
    eos = 1
    ids = torch.tensor([[5, 6, 1, 0, 0], [5, 1, 1, 7, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]])
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 0, 0, 0],  # a second EOS is padding
            [1, 1, 1, 1, 1],  # no EOS: the whole (truncated) response
            [1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(response_mask_from_ids(ids, eos), expected)
    # Several EOS ids: 9 ends row 2 at its last token, row 1 still ends at its first 1.
    assert torch.equal(response_mask_from_ids(ids, [1, 9]), expected)
    assert torch.equal(response_mask_from_ids(ids, [9])[1], torch.ones(5, dtype=torch.bool))


@pytest.fixture(scope="module")
def eos_prone_lm(tiny_lm):
    """The tiny model with +3 on the EOS logit, so that some responses end early and some not."""
    model, tokenizer = tiny_lm
    model = copy.deepcopy(model)
    bias = torch.zeros(model.config.vocab_size)
    bias[tokenizer.eos_token_id] = 3.0
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + bias)
    return model, tokenizer


def _unpadded_logits(model, tokenizer, prompt: str, response: torch.Tensor) -> torch.Tensor:
    """``(len(response), V)`` float64 logits predicting ``response`` after an unpadded prompt."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + response.tolist()])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    return logits[len(prompt_ids) - 1 : -1]


def test_rollout_layout_and_sampling_statistics(eos_prone_lm) -> None:
    model, tokenizer = eos_prone_lm
    eos, pad, temperature = tokenizer.eos_token_id, tokenizer.pad_token_id, 0.7
    for seed in range(50):  # the first seed whose rollout has both ended and truncated rows
        torch.manual_seed(seed)
        rollout = generate(
            model,
            tokenizer,
            PROMPTS,
            num_samples=4,
            temperature=temperature,
            top_p=0.9,
            max_new_tokens=8,
        )
        if rollout.truncated.any() and (~rollout.truncated).any():
            break
    n, r = rollout.response_ids.shape
    p = rollout.prompt_length
    assert n == 8 and r == 8  # some row is truncated, so R is max_new_tokens
    assert rollout.truncated.any() and (~rollout.truncated).any()  # both cases are exercised
    assert torch.equal(rollout.prompt_index, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    assert rollout.input_ids.shape == rollout.attention_mask.shape == (n, p + r)
    assert torch.equal(rollout.input_ids[:, p:], rollout.response_ids)
    mask = rollout.response_mask
    assert torch.equal(mask, response_mask_from_ids(rollout.response_ids, eos))
    assert torch.equal(rollout.attention_mask[:, p:].bool(), mask)
    assert (rollout.response_ids[~mask] == pad).all()
    ends_with_eos = rollout.response_ids.gather(1, mask.sum(-1, keepdim=True) - 1)[:, 0] == eos
    assert torch.equal(rollout.truncated, ~ends_with_eos)

    for i in range(n):
        prompt = PROMPTS[int(rollout.prompt_index[i])]
        prompt_ids = tokenizer(prompt)["input_ids"]
        # Left padding: pad, then the prompt's own tokens, attended exactly where real.
        assert rollout.input_ids[i, p - len(prompt_ids) : p].tolist() == prompt_ids
        assert rollout.attention_mask[i, :p].tolist() == [0] * (p - len(prompt_ids)) + [1] * len(
            prompt_ids
        )
        length = int(mask[i].sum())
        response = rollout.response_ids[i, :length]
        logits = _unpadded_logits(model, tokenizer, prompt, response) / temperature
        log_p = torch.log_softmax(logits, -1)  # (length, V) float64
        expected_logprobs = log_p.gather(-1, response[:, None])[:, 0]
        expected_entropy = -(log_p.exp() * log_p).sum(-1)
        torch.testing.assert_close(
            rollout.sampling_logprobs[i, :length].double(), expected_logprobs, rtol=0, atol=1e-4
        )
        torch.testing.assert_close(
            rollout.sampling_entropy[i, :length].double(), expected_entropy, rtol=0, atol=1e-4
        )
        assert (rollout.sampling_logprobs[i, length:] == 0).all()
        assert (rollout.sampling_entropy[i, length:] == 0).all()
        # S_k = p_k (H + log p_k) and E_p[S] = Σ p² (H + log p), of the same distribution
        p_all, h = log_p.exp(), expected_entropy[:, None]
        expected_s = expected_logprobs.exp() * (expected_entropy + expected_logprobs)
        expected_es = (p_all**2 * (h + log_p)).sum(-1)
        sampled = rollout.sampling_stats()
        torch.testing.assert_close(
            sampled.discriminator[i, :length].double(), expected_s, rtol=0, atol=1e-5
        )
        torch.testing.assert_close(
            sampled.expected_discriminator[i, :length].double(), expected_es, rtol=0, atol=1e-5
        )
        assert (sampled.discriminator[i, length:] == 0).all()
        # The completion is the text before the EOS.
        answer = response[:-1] if not rollout.truncated[i] else response
        tokens = tokenizer.convert_ids_to_tokens(answer)
        assert rollout.completions[i] == "".join(
            t for t in tokens if t not in tokenizer.all_special_tokens
        )
    assert rollout.sampling_logprobs.dtype == rollout.sampling_entropy.dtype == torch.float32


def test_top_p_samples_only_from_the_nucleus(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    top_p, temperature = 0.3, 1.3

    def outside_nucleus(rollout) -> int:
        """Sampled tokens outside the smallest set of most likely tokens with mass >= top_p."""
        count = 0
        for i in range(rollout.response_ids.shape[0]):
            length = int(rollout.response_mask[i].sum())
            response = rollout.response_ids[i, :length]
            logits = _unpadded_logits(model, tokenizer, PROMPTS[0], response) / temperature
            probs = torch.softmax(logits, -1)  # (length, V) float64
            sampled = probs.gather(-1, response[:, None])  # (length, 1)
            mass_above = (probs * (probs > sampled)).sum(-1)  # mass of more likely tokens
            count += int((mass_above >= top_p).sum())
        return count

    torch.manual_seed(2)
    nucleus = generate(
        model,
        tokenizer,
        PROMPTS[:1],
        num_samples=6,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=6,
    )
    assert outside_nucleus(nucleus) == 0
    torch.manual_seed(2)
    full = generate(
        model, tokenizer, PROMPTS[:1], num_samples=6, temperature=temperature, max_new_tokens=6
    )
    assert outside_nucleus(full) > 0  # without top-p the check does fail


def test_greedy_decoding_follows_the_argmax_and_ignores_padding(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    short = PROMPTS[1]
    alone = generate(model, tokenizer, [short], do_sample=False, max_new_tokens=6)
    batched = generate(model, tokenizer, PROMPTS, do_sample=False, max_new_tokens=6)
    assert batched.completions[1] == alone.completions[0]
    length = int(alone.response_mask[0].sum())
    response = alone.response_ids[0, :length]
    logits = _unpadded_logits(model, tokenizer, short, response)
    assert torch.equal(logits.argmax(-1), response)


def test_same_seed_same_rollout(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    outs = []
    for seed in (123, 123, 124):
        torch.manual_seed(seed)
        outs.append(generate(model, tokenizer, PROMPTS, num_samples=4, max_new_tokens=6))
    assert torch.equal(outs[0].response_ids, outs[1].response_ids)
    assert torch.equal(outs[0].sampling_logprobs, outs[1].sampling_logprobs)
    assert outs[0].completions == outs[1].completions
    assert not torch.equal(outs[0].response_ids, outs[2].response_ids)


def test_model_generation_config_does_not_leak_in(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    poisoned = copy.deepcopy(model)
    config = poisoned.generation_config
    config.top_k, config.repetition_penalty, config.min_p, config.top_p = 1, 5.0, 0.5, 0.1
    outs = []
    for m in (model, poisoned):
        torch.manual_seed(7)
        outs.append(generate(m, tokenizer, PROMPTS, num_samples=3, max_new_tokens=6))
    assert torch.equal(outs[0].response_ids, outs[1].response_ids)
    assert poisoned.generation_config is config and config.repetition_penalty == 5.0


def test_caller_state_is_restored(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"  # ignored: prompts are always left-padded
    model.train()
    try:
        rollout = generate(model, tokenizer, PROMPTS, max_new_tokens=2)
        assert model.training and tokenizer.padding_side == "right"
        assert rollout.attention_mask[1, 0] == 0  # the short prompt is padded on the left
    finally:
        model.eval()


def test_tokenizer_without_pad_pads_with_eos(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    bare = copy.deepcopy(model)
    bare.generation_config.pad_token_id = None
    assert no_pad.pad_token_id is None
    with_pad = generate(model, tokenizer, PROMPTS, do_sample=False, max_new_tokens=5)
    without = generate(bare, no_pad, PROMPTS, do_sample=False, max_new_tokens=5)
    assert without.completions == with_pad.completions
    assert without.input_ids[1, 0] == tokenizer.eos_token_id  # padded with EOS, masked out


def test_tokenizer_without_eos_is_refused(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    no_eos = copy.deepcopy(tokenizer)
    no_eos.pad_token, no_eos.eos_token = None, None
    bare = copy.deepcopy(model)
    bare.generation_config.eos_token_id = None
    bare.generation_config.pad_token_id = None
    with pytest.raises(ValueError, match="EOS"):
        generate(bare, no_eos, PROMPTS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompts": []}, "at least one prompt"),
        ({"prompts": "1 -> 1: "}, "list of strings"),
        ({"prompts": ["1 -> 1: ", ""]}, "prompt 1 encodes to no tokens"),
        ({"num_samples": 0}, "num_samples"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_arguments_are_refused(tiny_lm, kwargs: dict, match: str) -> None:
    model, tokenizer = tiny_lm
    args = {"prompts": ["1 -> 1: "]} | kwargs
    prompts = args.pop("prompts")
    with pytest.raises(ValueError, match=match):
        generate(model, tokenizer, prompts, **args)


def test_chunked_generation_is_one_consistent_rollout(eos_prone_lm) -> None:
    # Three prompts of different lengths, generated two sequences (one group) per call: the
    # joined rollout replays each response exactly as an unpadded forward does, and keeps the
    # recorded sampling statistics, groups and completions of its parts.
    model, tokenizer = eos_prone_lm
    prompts = [*PROMPTS, "1 2 -> 3: "]
    torch.manual_seed(3)
    rollout = generate(model, tokenizer, prompts, num_samples=2, max_new_tokens=6, batch_size=3)
    assert rollout.prompt_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(rollout.completions) == 6 and rollout.truncated.shape == (6,)
    with torch.no_grad():
        logits = response_logits(model, rollout).double()
    for row in range(6):
        length = int(rollout.response_mask[row].sum())
        assert (rollout.response_mask[row, length:] == 0).all()
        prompt = prompts[int(rollout.prompt_index[row])]
        expected = _unpadded_logits(model, tokenizer, prompt, rollout.response_ids[row, :length])
        torch.testing.assert_close(logits[row, :length], expected, rtol=0, atol=1e-4)
        logp = torch.log_softmax(expected, -1)
        logp_k = logp.gather(-1, rollout.response_ids[row, :length, None]).squeeze(-1)
        torch.testing.assert_close(
            rollout.sampling_logprobs[row, :length].double(), logp_k, rtol=0, atol=1e-4
        )
        h = -(logp.exp() * logp).sum(-1)  # (length,)
        expected_s = logp_k.exp() * (h + logp_k)
        sampled = rollout.sampling_stats()  # joined across the calls, padding 0
        torch.testing.assert_close(
            sampled.discriminator[row, :length].double(), expected_s, rtol=0, atol=1e-5
        )
        assert (sampled.expected_discriminator[row, length:] == 0).all()
