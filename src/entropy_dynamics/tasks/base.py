"""The ``Task`` protocol: what the trainer needs from a task (problems, prompts, an outcome reward).

A task is three fixed, pairwise disjoint splits of problems plus a deterministic scorer of
completion text. The trainer never looks inside a problem: it passes problems back to the task
that made them. Who reads which split:

- ``train``: the rollouts of training (and the supervised pretraining's examples);
- ``validation``: everything that watches or steers a run — the trainer's in-run evaluations
  (the ``eval/*`` metrics), the forecast's probe set, pretraining's evaluation, ``analyze``, and
  any choice made from results (a sweep's selection);
- ``test``: final evaluations only (``final_eval.json``, ``entropy-dynamics eval``), so that a
  number reported as a result was never used to choose anything.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["SPLITS", "Split", "Task", "TaskReward", "score_all"]

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
"""The splits of every task, in this order."""


@runtime_checkable
class TaskReward(Protocol):
    """The score of one completion; all three values lie in ``[0, 1]``."""

    @property
    def reward(self) -> float:
        """The scalar the advantage estimator sees."""
        ...

    @property
    def correct(self) -> float:
        """1.0 if the answer is right (accuracy, Avg@k and Pass@k count this), else 0.0."""
        ...

    @property
    def format(self) -> float:
        """1.0 if the completion is a well-formed answer, right or wrong, else 0.0."""
        ...


@runtime_checkable
class Task(Protocol):
    """A source of problems and a reward function over completions."""

    name: str
    """Registry name (``countdown``)."""

    def train_problems(self) -> list[Any]:
        """The training split (deterministic, cached; a fresh list on each call)."""
        ...

    def validation_problems(self) -> list[Any]:
        """The validation split (monitoring and selection), disjoint from the other two."""
        ...

    def test_problems(self) -> list[Any]:
        """The test split (final evaluations only), disjoint from the other two."""
        ...

    def prompt(self, problem: Any) -> str:
        """The text the policy continues; the completion is scored by :meth:`score`."""
        ...

    def score(self, problem: Any, completion: str) -> TaskReward:
        """Score the generated text that follows :meth:`prompt` (without the EOS token)."""
        ...

    def reference_solutions(self, problem: Any) -> list[str]:
        """Completions that score as correct (for supervised pretraining and tests)."""
        ...


def score_all(task: Task, problems: list[Any], completions: list[str]) -> list[TaskReward]:
    """``task.score`` of each ``(problem, completion)`` pair; a task that grades better in batches
    (the math task's worker pool) offers ``score_many`` and gets them all at once. A reward is a
    function of its pair, so a pair met again (a group's samples often agree) is scored once."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    many = getattr(task, "score_many", None)
    if callable(many):
        return list(many(problems, completions))
    scored: dict[tuple[int, str], TaskReward] = {}  # (id of the problem object, completion)
    for problem, completion in zip(problems, completions, strict=True):
        key = (id(problem), completion)
        if key not in scored:
            scored[key] = task.score(problem, completion)
    return [scored[(id(p), c)] for p, c in zip(problems, completions, strict=True)]
