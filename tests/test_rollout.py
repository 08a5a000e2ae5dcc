"""Rollout: masks, sampling log-probs vs a teacher-forced forward, determinism, left padding."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.rollout import generate, response_logits, response_mask_from_ids


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
    assert torch.equal(response_mask_from_ids(ids, [1, 9])[2], torch.ones(5, dtype=torch.bool))


def test_sampling_logprobs_match_teacher_forced_forward(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    rollout = generate(
        model,
        tokenizer,
        ["1 2 3 -> 6: ", "10 -> 10: "],
        num_samples=3,
        temperature=0.7,
        max_new_tokens=8,
    )
    n, r = rollout.response_ids.shape
    assert n == 6 and r <= 8
    assert rollout.input_ids.shape == (6, rollout.prompt_length + r)
    assert torch.equal(rollout.prompt_index, torch.tensor([0, 0, 0, 1, 1, 1]))
    with torch.no_grad():
        logits = response_logits(model, rollout).float() / 0.7
    expected = torch.log_softmax(logits, -1).gather(-1, rollout.response_ids[..., None])[..., 0]
    expected = expected * rollout.response_mask
    torch.testing.assert_close(rollout.sampling_logprobs, expected, rtol=0, atol=1e-4)
    assert rollout.sampling_entropy.shape == (n, r)
    # Attention covers the prompt's real tokens and exactly the masked response tokens.
    assert torch.equal(
        rollout.attention_mask[:, rollout.prompt_length :].bool(), rollout.response_mask
    )
    # The decoded completion is the text of the masked tokens.
    for i, text in enumerate(rollout.completions):
        ids = rollout.response_ids[i][rollout.response_mask[i]]
        assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_same_seed_same_rollout(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        outs.append(generate(model, tokenizer, ["7 8 -> 15: "], num_samples=4, max_new_tokens=6))
    assert torch.equal(outs[0].response_ids, outs[1].response_ids)
    assert outs[0].completions == outs[1].completions


def test_left_padding_does_not_change_greedy_output(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    short = "3 -> 3: "
    alone = generate(model, tokenizer, [short], do_sample=False, max_new_tokens=6)
    batched = generate(
        model, tokenizer, ["100 200 300 400 -> 1000: ", short], do_sample=False, max_new_tokens=6
    )
    assert batched.completions[1] == alone.completions[0]


def test_model_mode_is_restored(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    model.train()
    generate(model, tokenizer, ["1 -> 1: "], max_new_tokens=2)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompts": []}, "at least one prompt"),
        ({"num_samples": 0}, "num_samples"),
        ({"temperature": 0.0}, "temperature"),
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
