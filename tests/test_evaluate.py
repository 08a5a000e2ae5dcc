"""Pass@k against exact enumeration; evaluate() on a task whose answers are known."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb

import pytest

from entropy_dynamics.evaluate import evaluate, pass_at_k


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 1), (5, 2, 2), (6, 1, 3), (8, 3, 4), (4, 0, 2)])
def test_pass_at_k_equals_subset_enumeration(n: int, c: int, k: int) -> None:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in subset) for subset in subsets)
    assert len(subsets) == comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(hits / len(subsets), abs=1e-12)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 7, 4) == 1.0  # n - c = 3 < k: every 4-subset holds a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(4, 5, 1)


@dataclass(frozen=True)
class _Score:
    reward: float
    correct: float
    format: float


class _FirstCharTask:
    """Correct iff the answer starts with the problem's character: the pass rate is computable."""

    def prompt(self, problem: str) -> str:
        return f"{problem} -> "

    def score(self, problem: str, completion: str) -> _Score:
        ok = float(completion.startswith(problem))
        return _Score(reward=ok, correct=ok, format=1.0)


def test_evaluate_aggregates_scores(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    result = evaluate(
        model,
        tokenizer,
        _FirstCharTask(),
        ["a", "b", "c"],
        k=4,
        ks=(1, 2, 4),
        max_new_tokens=3,
        batch_size=8,
    )
    assert len(result.per_problem_pass_rate) == 3
    assert result.avg_at_k == pytest.approx(sum(result.per_problem_pass_rate) / 3)
    assert set(result.pass_at) == {1, 2, 4}
    assert result.pass_at[1] == pytest.approx(result.avg_at_k)  # Pass@1 = Avg@k, unbiased
    assert result.pass_at[1] <= result.pass_at[2] <= result.pass_at[4]
    assert result.format_rate == 1.0
    assert 0 < result.mean_response_length <= 3 and result.mean_entropy > 0
    metrics = result.to_metrics()
    assert {"eval/avg@4", "eval/pass@1", "eval/pass@4", "eval/entropy"} <= set(metrics)


def test_evaluate_refuses_bad_ks(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="Pass@k"):
        evaluate(model, tokenizer, _FirstCharTask(), ["a"], k=2, ks=(4,))
    with pytest.raises(ValueError, match="at least one problem"):
        evaluate(model, tokenizer, _FirstCharTask(), [], k=2)
