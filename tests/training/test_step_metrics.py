"""What a training step measures beside its loss (``training/step_metrics.py``): rewards scored
against each response's own problem, the share of groups without reward variance and the notice
when none has any, the rollout's statistics, the dynamics' positions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from entropy_dynamics.stats import TokenStats
from entropy_dynamics.training.step_metrics import (
    dynamics_positions,
    frac_zero_std,
    logits_at,
    reward_metrics,
    rollout_metrics,
    zero_variance_notice,
)


class _EchoTask:
    """Correct when the completion is the problem; formatted when it is not empty."""

    def score(self, problem, completion):
        correct = float(problem == completion)
        return SimpleNamespace(reward=2 * correct, correct=correct, format=float(bool(completion)))


def test_each_response_is_scored_against_its_own_prompts_problem() -> None:
    rollout = SimpleNamespace(prompt_index=torch.tensor([0, 0, 1, 1]),
                              completions=["a", "b", "b", ""])  # fmt: skip
    reward, metrics = reward_metrics(_EchoTask(), ["a", "b"], rollout)
    assert reward.tolist() == [2.0, 0.0, 2.0, 0.0] and reward.dtype == torch.float32
    assert metrics["reward/mean"].item() == 1.0
    assert metrics["reward/accuracy"].item() == 0.5
    assert metrics["reward/format"].item() == 0.75
    assert metrics["reward/frac_zero_std"].item() == 0.0  # each group has a right and a wrong


def test_the_share_of_groups_without_reward_variance() -> None:
    # TRL's frac_reward_zero_std: groups 0 and 2 score alike (nothing to learn), group 1 does not
    reward = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5])
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    assert frac_zero_std(reward, index).item() == pytest.approx(2 / 3)
    # prompts absent from a batch (indices 0 and 1 here) are not counted as groups
    assert frac_zero_std(torch.tensor([0.0, 0.0]), torch.tensor([2, 2])).item() == 1.0


def test_a_run_without_any_reward_variance_is_told_why_it_does_not_learn() -> None:
    flat = [{"reward/frac_zero_std": 1.0, "reward/accuracy": 0.0}] * 5
    assert zero_variance_notice(flat[:4], window=5) is None  # too early to tell
    text = zero_variance_notice(flat, window=5)
    assert text is not None and "every advantage is zero" in text and "too hard" in text
    assert "rollout.group_size" in text
    assert zero_variance_notice([*flat[:4], {"reward/frac_zero_std": 0.5}], window=5) is None


def test_rollout_metrics_and_the_dynamics_positions() -> None:
    mask = torch.tensor([[True, True, False], [True, False, False]])  # (N, R) = (2, 3)
    rollout = SimpleNamespace(response_mask=mask, truncated=torch.tensor([True, False]))
    old = TokenStats(*(torch.zeros(2, 3) for _ in range(4)))
    metrics = rollout_metrics(rollout, old, torch.tensor([[1.0, -3.0, 9.0], [2.0, 0.0, 0.0]]))
    assert metrics["advantage/abs_mean"].item() == pytest.approx(2.0)  # (1 + 3 + 2) / 3, not 9
    assert metrics["response/length_mean"].item() == 1.5
    assert metrics["response/truncated_frac"].item() == 0.5
    assert "entropy/mean" in metrics
    rows, cols = dynamics_positions(mask, limit=2)  # the first two valid positions, row-major
    assert rows.tolist() == [0, 0] and cols.tolist() == [0, 1]


@pytest.mark.parametrize("tokens", [0, 8], ids=["one pass", "packed by length"])
def test_the_logits_after_the_step_come_from_the_rows_that_hold_a_position(tiny_lm, tokens):
    from entropy_dynamics.training.forward import ResponseStats
    from entropy_dynamics.training.rollout import generate

    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, ["1 2 -> 3: ", "12 7 3 -> 16: "], num_samples=3,
                       max_new_tokens=6)  # fmt: skip
    forward = ResponseStats(model, 1.0)
    rows, cols = dynamics_positions(rollout.response_mask, 7)  # the first 7: a few rows only
    assert len(torch.unique(rows)) < rollout.response_mask.shape[0]
    with torch.no_grad():
        expected = forward.logits(forward.features(rollout)[rows, cols])  # the whole batch
    calls = []
    features = forward.features
    forward.features = lambda r, chunk=None: calls.append(chunk) or features(r, chunk)
    after = logits_at(forward, rollout, (rows, cols), micro_batch_tokens=tokens)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    ran = torch.cat(calls)
    assert sorted(ran.tolist()) == torch.unique(rows).tolist()  # every holder once, no other
    assert (len(calls) > 1) == (tokens > 0)
