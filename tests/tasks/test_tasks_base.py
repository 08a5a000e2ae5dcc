"""The ``Task`` protocol (``tasks/base.py``): both tasks satisfy it, and ``score_all`` grades a
batch through ``score_many`` where a task offers it, else one ``score`` per pair."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from entropy_dynamics.tasks import CountdownConfig, CountdownTask, MathTask, Task
from entropy_dynamics.tasks.base import score_all


class _Counting:
    """A task that counts how it was asked to score (a ``Task`` without the rest)."""

    def __init__(self, batched: bool) -> None:
        self.calls: list[str] = []
        if batched:
            self.score_many = self._score_many

    def score(self, problem, completion):
        self.calls.append("score")
        return SimpleNamespace(reward=float(problem == completion))

    def _score_many(self, problems, completions):
        self.calls.append("score_many")
        pairs = zip(problems, completions, strict=True)
        return [SimpleNamespace(reward=float(p == c)) for p, c in pairs]


def test_both_tasks_are_tasks() -> None:
    assert isinstance(CountdownTask(CountdownConfig(n_train=10, n_validation=5, n_test=5)), Task)
    assert isinstance(MathTask(), Task)  # loads its data on first use, not here


@pytest.mark.parametrize("batched", [False, True])
def test_score_all_batches_where_the_task_can(batched: bool) -> None:
    task = _Counting(batched)
    rewards = score_all(task, ["a", "b", "c"], ["a", "x", "c"])
    assert [r.reward for r in rewards] == [1.0, 0.0, 1.0]
    assert task.calls == (["score_many"] if batched else ["score"] * 3)
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        score_all(task, ["a", "b"], ["a"])


def test_score_all_scores_a_repeated_pair_once() -> None:
    task = _Counting(batched=False)
    problem, other = "a", "b"  # a group: one problem object, its samples, some alike
    rewards = score_all(task, [problem] * 4 + [other], ["a", "x", "a", "a", "a"])
    assert [r.reward for r in rewards] == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert task.calls == ["score"] * 3  # (a, a), (a, x), (b, a)
