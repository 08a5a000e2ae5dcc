"""Pass@k against exact enumeration; evaluate() on tasks whose scores are known."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from math import comb

import pytest
import torch

from entropy_dynamics.training.evaluate import evaluate, pass_at_k
from entropy_dynamics.training.rollout import generate


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_subset_enumeration(n: int) -> None:
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            hits = sum(any(samples[i] for i in subset) for subset in subsets)
            assert abs(pass_at_k(n, c, k) - hits / len(subsets)) <= 1e-12, (n, c, k)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(500, 100) ~ 1e107: the product form must still match the exact rational value.
    for n, c, k in [(500, 10, 100), (500, 1, 1), (1000, 3, 999), (300, 150, 5)]:
        exact = 1 - Fraction(comb(n - c, k), comb(n, k))
        assert abs(pass_at_k(n, c, k) - float(exact)) <= 1e-12, (n, c, k)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 7, 4) == 1.0  # n - c = 3 < k: every 4-subset holds a correct sample
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)  # Pass@1 = c / n
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(4, 5, 1)


@dataclass(frozen=True)
class _Score:
    reward: float
    correct: float
    format: float


class _ByProblemTask:
    """Problems ``"yes<i>"`` are always right, ``"no<i>"`` never; format iff the digit is even."""

    def __init__(self) -> None:
        self.scored: list[tuple[str, str]] = []

    def prompt(self, problem: str) -> str:
        return f"{problem} -> "

    def score(self, problem: str, completion: str) -> _Score:
        self.scored.append((problem, completion))
        ok = float(problem.startswith("yes"))
        return _Score(reward=ok, correct=ok, format=float(int(problem[-1]) % 2 == 0))


def test_evaluate_on_known_scores(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    task = _ByProblemTask()
    problems = ["yes0", "no1", "yes2", "no3", "yes4"]
    calls: list[tuple[int, int]] = []
    result = evaluate(
        model,
        tokenizer,
        task,
        problems,
        k=3,
        ks=(1, 2, 3),
        max_new_tokens=3,
        batch_size=7,  # 7 // 3 = 2 problems per generate call
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert sorted(p for p, _ in task.scored) == sorted(problems * 3)  # each problem k times
    assert result.per_problem_correct == [3, 0, 3, 0, 3]
    assert result.per_problem_pass_rate == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert result.avg_at_k == pytest.approx(9 / 15)
    # All-or-nothing problems: Pass@k' is the fraction of solvable problems for every k'.
    assert result.pass_at == pytest.approx({1: 0.6, 2: 0.6, 3: 0.6})
    assert result.format_rate == pytest.approx(9 / 15)  # yes0, yes2, yes4 have even digits
    metrics = result.to_metrics("heldout")
    assert metrics["heldout/avg@3"] == result.avg_at_k
    assert {"heldout/pass@1", "heldout/pass@2", "heldout/pass@3"} <= set(metrics)
    shown = {"heldout/format_rate", "heldout/response_length", "heldout/entropy"}
    assert shown | {"heldout/response_length_median"} <= set(metrics)


class _FirstCharTask:
    """Correct iff the completion starts with a character of the problem: sample-dependent."""

    def prompt(self, problem: str) -> str:
        return f"{problem}: "

    def score(self, problem: str, completion: str) -> _Score:
        ok = float(completion[:1] != "" and completion[0] in problem)
        return _Score(reward=ok, correct=ok, format=float(len(completion) > 1))


def test_evaluate_matches_a_direct_rollout(tiny_lm) -> None:
    """One batch: evaluate() must score exactly the rollout generate() draws from the same seed."""
    model, tokenizer = tiny_lm
    task, problems, k = _FirstCharTask(), ["abcdefghij", "0123456789", "+-*/ ()="], 8
    torch.manual_seed(5)
    result = evaluate(model, tokenizer, task, problems, k=k, max_new_tokens=4, temperature=0.8)
    torch.manual_seed(5)
    rollout = generate(
        model,
        tokenizer,
        [task.prompt(p) for p in problems],
        num_samples=k,
        temperature=0.8,
        max_new_tokens=4,
    )
    scores = [task.score(problems[i // k], text) for i, text in enumerate(rollout.completions)]
    groups = [scores[j * k : (j + 1) * k] for j in range(len(problems))]
    correct = [int(sum(s.correct for s in group)) for group in groups]
    assert result.per_problem_correct == correct
    assert sum(correct) > 0 and min(correct) < k  # the scores are not all equal
    assert result.avg_at_k == pytest.approx(sum(correct) / (k * len(problems)))
    assert set(result.pass_at) == {1, k}
    assert result.pass_at[1] == pytest.approx(result.avg_at_k)  # Pass@1 = Avg@k
    expected_pass = sum(pass_at_k(k, c, k) for c in correct) / len(problems)
    assert result.pass_at[k] == pytest.approx(expected_pass)
    assert result.format_rate == pytest.approx(sum(s.format for s in scores) / len(scores))
    mask = rollout.response_mask
    assert result.mean_response_length == pytest.approx(float(mask.sum()) / len(scores))
    lengths = sorted(mask.sum(dim=1).tolist())
    middle = (lengths[(len(lengths) - 1) // 2] + lengths[len(lengths) // 2]) / 2
    assert result.median_response_length == middle
    entropy = rollout.sampling_entropy[mask].double().mean()
    assert result.mean_entropy == pytest.approx(float(entropy), rel=1e-6)
    assert result.truncated_rate == pytest.approx(float(rollout.truncated.float().mean()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ks": (4,)}, "ks: every Pass@k"),
        ({"ks": (0, 1)}, "ks: every Pass@k"),
        ({"ks": ()}, "ks: every Pass@k"),
        ({"k": 0}, "k must be >= 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"problems": []}, "at least one problem"),
    ],
)
def test_evaluate_refuses_bad_arguments(tiny_lm, kwargs: dict, match: str) -> None:
    model, tokenizer = tiny_lm
    args = {"problems": ["a"], "k": 2} | kwargs
    problems = args.pop("problems")
    with pytest.raises(ValueError, match=match):
        evaluate(model, tokenizer, _FirstCharTask(), problems, **args)
