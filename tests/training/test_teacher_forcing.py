"""Teacher forcing with each distinct prompt run once equals the full forward, values and
gradients, for the decoder's hidden states and the model's logits."""

from __future__ import annotations

import copy

import pytest
import torch

from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.teacher_forcing import (
    check_shared_prompts,
    distinct_prompts,
    full_outputs,
    narrowed,
    response_logits,
    shared_prompt_outputs,
)


def shortened(rollout, lengths: list[int]):
    """``rollout`` with row ``i``'s response ending after ``lengths[i]`` tokens (padding after)."""
    import dataclasses

    width = rollout.response_ids.shape[1]
    mask = torch.arange(width) < torch.tensor(lengths)[:, None]  # (N, R)
    attention = rollout.attention_mask.clone()
    attention[:, rollout.prompt_length :] = mask.long()
    return dataclasses.replace(
        rollout,
        response_ids=rollout.response_ids * mask,
        response_mask=mask,
        attention_mask=attention,
        input_ids=torch.cat([rollout.input_ids[:, : rollout.prompt_length],
                             rollout.response_ids * mask], 1),
    )  # fmt: skip


@pytest.fixture(scope="module")
def rollout(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    prompts = ["1 2 -> 3: ", "12 7 3 -> 16: ", "4 -> 4: "]  # different lengths: left padding
    return generate(model, tokenizer, prompts, num_samples=3, max_new_tokens=6)


@pytest.mark.parametrize("mode", ["auto", "never"], ids=["hidden states", "logits"])
@pytest.mark.parametrize("rows", [None, [0, 2, 4, 5, 7]], ids=["all", "part of groups"])
def test_shared_prompts_equal_the_full_forward(tiny_lm, rollout, mode, rows) -> None:
    model = copy.deepcopy(tiny_lm[0])
    stats = ResponseStats(model, 1.0, mode, shared_prompts=False)
    index = None if rows is None else torch.tensor(rows)
    mask = rollout.response_mask if index is None else rollout.response_mask[index]
    weights = torch.randn(*mask.shape, 1, generator=torch.Generator().manual_seed(1))
    results = []
    for forward in (full_outputs, shared_prompt_outputs):
        model.zero_grad()
        outputs = forward(stats._run, rollout, index)  # (n, R, ·)
        assert outputs.shape[:2] == mask.shape
        (outputs * weights)[mask].sum().backward()  # a loss over the valid positions only
        results.append((outputs.detach()[mask], [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (shared, shared_grads) = results
    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(shared_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_check_passes_here_and_names_what_stops_it(tiny_lm) -> None:
    model = copy.deepcopy(tiny_lm[0])
    stats = ResponseStats(model, 1.0)
    assert stats.shares_prompts and check_shared_prompts(stats._run, model) == ""
    model.gradient_checkpointing_enable()
    assert "checkpointing" in check_shared_prompts(stats._run, model)
    assert ResponseStats(model, 1.0, shared_prompts=False).prompt_reason == "off"


def test_groups_in_order_repeat_and_any_other_rows_are_gathered() -> None:
    a, b, c = [1, 2], [3, 4], [5, 6]
    runs, owner = distinct_prompts(torch.tensor([a, a, a, b, b, b, a, a, a]))
    assert owner == 3 and runs.tolist() == [a, b, a]  # a group's prompt may come again
    prompts, owner = distinct_prompts(torch.tensor([b, a, a, c, b]))  # runs of 1, 2, 1, 1
    assert prompts[owner].tolist() == [b, a, a, c, b] and len(prompts) == 3
    single, owner = distinct_prompts(torch.tensor([c]))
    assert owner == 1 and single.tolist() == [c]


def test_the_check_sees_a_cache_that_repeats_wrongly(tiny_lm, monkeypatch) -> None:
    from transformers.cache_utils import DynamicCache

    model = copy.deepcopy(tiny_lm[0])
    stats = ResponseStats(model, 1.0)

    def tiled(self, repeats: int) -> None:  # (u, ·) → (u·G, ·) in the wrong order: a, b, a, b
        for layer in self.layers:
            layer.keys, layer.values = (
                x.repeat(repeats, 1, 1, 1) for x in (layer.keys, layer.values)
            )

    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", tiled)
    assert "differs from the full one" in check_shared_prompts(stats._run, model)


def test_response_logits_match_an_unpadded_forward(tiny_lm, rollout) -> None:
    model, tokenizer = tiny_lm
    prompts = ["1 2 -> 3: ", "12 7 3 -> 16: ", "4 -> 4: "]
    with torch.no_grad():
        logits = response_logits(model, rollout, rows=slice(2, 6)).double()  # rows 2 to 5
    assert logits.shape == (4, rollout.response_ids.shape[1], model.config.vocab_size)
    for row in range(2, 6):
        length = int(rollout.response_mask[row].sum())
        prompt = tokenizer(prompts[int(rollout.prompt_index[row])], return_tensors="pt").input_ids
        ids = torch.cat([prompt[0], rollout.response_ids[row, :length]])[None]  # no padding
        with torch.no_grad():
            expected = model(input_ids=ids).logits[0, prompt.shape[1] - 1 : -1].double()
        torch.testing.assert_close(logits[row - 2, :length], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["auto", "never"], ids=["hidden states", "logits"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared prompts", "full forward"])
def test_rows_run_only_up_to_their_longest_response(tiny_lm, rollout, mode, shared) -> None:
    model = copy.deepcopy(tiny_lm[0])
    lengths = [6, 2, 3, 1, 6, 2, 3, 3, 1]
    short = shortened(rollout, lengths)
    rows = torch.tensor([1, 2, 5, 8])  # longest 3 of R = 6
    cut, cut_rows = narrowed(short, rows)
    assert cut_rows is None and cut.response_ids.shape == (4, 3)
    assert cut.input_ids.shape[1] == short.prompt_length + 3
    assert torch.equal(cut.response_mask, short.response_mask[rows, :3])
    same, same_rows = narrowed(short, torch.tensor([0, 1]))  # row 0 is as long as R
    assert same is short and same_rows.tolist() == [0, 1]
    stats = ResponseStats(model, 1.0, mode, shared_prompts=shared)
    mask = short.response_mask[rows]
    weights = torch.randn(*mask.shape, 1, generator=torch.Generator().manual_seed(2))
    results = []
    calls = (lambda: full_outputs(stats._run, short, rows), lambda: stats.features(short, rows))
    for forward in calls:
        model.zero_grad()
        outputs = forward()  # (n, R, ·) both
        assert outputs.shape[:2] == mask.shape
        (outputs * weights)[mask].sum().backward()
        results.append((outputs.detach(), [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (narrow, narrow_grads) = results
    full = full[..., : narrow.shape[-1]]  # logits: the valid vocabulary, as features has it
    torch.testing.assert_close(narrow[mask], full[mask], rtol=1e-5, atol=1e-5)
    assert not narrow[:, 3:].any()  # the columns no row reaches were never run
    for a, b in zip(narrow_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
