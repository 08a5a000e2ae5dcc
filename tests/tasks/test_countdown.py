"""Countdown (``tasks/countdown.py``): the reward (rules, hostile input), the generator, the task.
The solver against an independent brute force: ``test_countdown_solver.py``."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from entropy_dynamics.tasks import (
    SPLITS,
    CountdownConfig,
    CountdownProblem,
    CountdownTask,
    Task,
    TaskReward,
    build_task,
    format_prompt,
    generate_problems,
    score,
    solve,
)


def problem(numbers, target):
    return CountdownProblem(numbers=tuple(numbers), target=target, num_solutions=1)


# ----------------------------------------------------------------------------------------------
# Reward.


def test_prompt_format():
    assert format_prompt((3, 5, 7, 8), 22) == "3 5 7 8 -> 22: "
    assert problem((3, 5, 7, 8), 22).prompt == "3 5 7 8 -> 22: "


@pytest.mark.parametrize("answer", ["(8-5)*7+1", "1+7*(8-5)", "8*3-(7-5)", "((8-5))*7+1"])
def test_correct_answers(answer):
    # (8-5)*7+1 = 22; 8*3-(7-5) = 24-2 = 22
    result = score(problem((3, 5, 7, 8, 1), 22), answer)
    assert (result.format, result.correct, result.reward, result.error) == (1.0, 1.0, 1.0, None)


def test_non_integer_intermediates_are_allowed():
    # (1 + 7/2) * 2 = 9/2 * 2 = 9 exactly
    assert score(problem((1, 7, 2, 2), 9), "(1+7/2)*2").correct == 1.0
    # 7/2 + 1 = 4.5, not an integer target
    assert score(problem((1, 7, 2), 4), "7/2+1").error == "wrong value"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("3+5", "wrong value"),  # 8 != 22
        ("8+8", "number reused"),
        ("8+9", "number not available"),
        ("22", "number not available"),
        ("8/(5-5)", "number reused"),
    ],
)
def test_rule_violations_are_well_formed_but_wrong(answer, error):
    result = score(problem((3, 5, 7, 8), 22), answer)
    assert (result.format, result.correct, result.reward, result.error) == (1.0, 0.0, 0.0, error)


def test_repeated_numbers_may_be_used_as_often_as_given():
    assert score(problem((5, 5, 2), 12), "5+5+2").correct == 1.0
    assert score(problem((5, 5, 2), 17), "5+5+5+2").error == "number reused"


def test_division_by_zero():
    result = score(problem((3, 3, 5), 1), "5/(3-3)")
    assert (result.format, result.correct, result.error) == (1.0, 0.0, "division by zero")


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "abc",
        "3+",
        "3 5",
        "(3+5",
        "3+5)",
        "-3+5",
        "3+-5",
        "+3",
        "2**3",
        "8//2",
        "8%3",
        "3.0+5",
        "1e3",
        "0x10",
        "03+5",
        "3_0",
        "[3]",
        "__import__('os')",
        "()",
    ],
)
def test_malformed(answer):
    result = score(problem((3, 5, 8, 30, 10), 8), answer)
    assert (result.format, result.correct, result.reward, result.error) == (
        0.0,
        0.0,
        0.0,
        "malformed",
    )


def test_huge_exponent_is_rejected_fast():
    start = time.perf_counter()
    result = score(problem((2, 999999), 4), "2**999999")
    assert result.error == "malformed" and result.correct == 0.0
    assert time.perf_counter() - start < 0.1


def test_deep_nesting_and_long_garbage_are_refused_fast():
    config = CountdownConfig(max_answer_chars=1024)
    p = problem((1, 2, 3), 1)
    start = time.perf_counter()
    assert score(p, "(" * 10000 + "1" + ")" * 10000).error == "too long"
    assert score(p, "(" * 10000 + "1" + ")" * 10000, config).error == "too long"
    assert score(p, "(" * 17 + "1" + ")" * 17, config).error == "too deep"
    assert score(p, "(" * 500 + "1" + ")" * 500, config).error == "too deep"
    assert score(p, "(" * 16 + "1" + ")" * 16, config).correct == 1.0  # the depth limit is 16
    assert score(p, "9" * 1_000_000).error == "too long"
    assert score(p, "x" * 65).error == "too long"
    # 500 literals in a left-deep chain: parsed without recursion trouble, then refused by count
    assert score(p, "+".join(["1"] * 500), config).error == "number reused"
    assert time.perf_counter() - start < 1.0


def test_length_limit_applies_to_the_stripped_first_line():
    config = CountdownConfig(max_answer_chars=5)
    p = problem((3, 5), 8)
    assert score(p, "   3+5   \n" + "x" * 100, config).correct == 1.0
    assert score(p, "3 + 5 ", config).correct == 1.0  # "3 + 5" after stripping: 5 chars
    assert score(p, "3  + 5", config).error == "too long"  # 6 chars


def test_whitespace_and_newlines():
    p = problem((3, 5, 7), 15)
    assert score(p, " 3 + 5 + 7 ").correct == 1.0
    assert score(p, "3+5+7\nthat is 15, so 3+5+7 works").correct == 1.0
    assert score(p, "\n\n  3+5+7\r\n").correct == 1.0  # leading blank lines are stripped
    assert score(p, "3+5\n+7").error == "wrong value"  # only the first line counts
    assert score(p, "3+\n5+7").error == "malformed"
    assert score(p, "   \n ").error == "malformed"


def test_use_all_numbers():
    config = CountdownConfig(use_all_numbers=True)
    p = problem((3, 5, 7, 1), 15)
    assert score(p, "3+5+7").correct == 1.0  # at most once: fine by default
    assert score(p, "3+5+7", config).error == "not all numbers used"
    assert score(p, "(3+5+7)*1", config).correct == 1.0


def test_format_weight_shapes_the_reward():
    config = CountdownConfig(format_weight=0.25)
    p = problem((3, 5), 8)
    assert score(p, "3+5", config).reward == 1.0
    assert score(p, "3*5", config).reward == 0.25  # well-formed, wrong value
    assert score(p, "3+3", config).reward == 0.25  # well-formed, number reused
    assert score(p, "3+", config).reward == 0.0  # malformed


# ----------------------------------------------------------------------------------------------
# Generator and task.

SMALL = CountdownConfig(n_train=100, n_validation=40, n_test=30, seed=3)


def _keys(problems) -> list[tuple[tuple[int, ...], int]]:
    return [(tuple(sorted(p.numbers)), p.target) for p in problems]


def _fingerprint(problems) -> str:
    records = [[list(p.numbers), p.target, p.num_solutions] for p in problems]
    return hashlib.sha256(json.dumps(records).encode()).hexdigest()


def test_the_training_split_is_the_one_before_validation_and_test():
    """Training must not change when the held-out split became two. The fingerprint is that of
    ``generate_problems(CountdownConfig(), "train")`` on main before the change (commit 5f5b3be),
    computed as :func:`_fingerprint` does: sha256 of the JSON list of [numbers, target,
    num_solutions] of each problem in order."""
    train = generate_problems(CountdownConfig(), "train")
    assert len(train) == 2000
    assert train[0] == CountdownProblem((6, 1, 3), 7, 1)
    assert train[-1] == CountdownProblem((4, 5, 7), 27, 1)
    assert _fingerprint(train) == "f3d90300e96cb767ae0b1d8406990cf4480ac3ca9060062fd559fbaf76e13776"
    task = CountdownTask(CountdownConfig(n_validation=7, n_test=0))  # whatever their sizes
    assert task.train_problems() == train


@pytest.mark.parametrize("config", [CountdownConfig(), SMALL])
def test_the_three_splits_are_disjoint_deterministic_and_sized(config):
    splits = {split: generate_problems(config, split) for split in SPLITS}
    assert splits == {split: generate_problems(config, split) for split in SPLITS}
    sizes = (config.n_train, config.n_validation, config.n_test)
    assert tuple(len(splits[split]) for split in SPLITS) == sizes
    keys = {split: _keys(problems) for split, problems in splits.items()}
    for split, split_keys in keys.items():
        assert len(set(split_keys)) == len(split_keys), split  # no key twice in a split
    for first, second in itertools.combinations(SPLITS, 2):
        assert not set(keys[first]) & set(keys[second]), (first, second)
    task = CountdownTask(config)
    assert task.validation_problems() == splits["validation"]
    assert task.test_problems() == splits["test"]
    other = generate_problems(replace(config, seed=config.seed + 1), "validation")
    assert other != splits["validation"]


def test_each_split_draws_its_own_stream():
    """A split's problems do not depend on the other splits' sizes, and a larger split extends
    a smaller one (its first problems are the same)."""
    base = generate_problems(SMALL, "validation")
    assert generate_problems(replace(SMALL, n_test=5, n_train=10), "validation") == base
    assert generate_problems(replace(SMALL, n_validation=50), "validation")[:40] == base
    assert generate_problems(replace(SMALL, n_validation=0), "validation") == []


FOUR = CountdownConfig(
    max_numbers=4, max_value=12, max_target=60, n_train=40, n_validation=15, n_test=15
)
ALL = CountdownConfig(use_all_numbers=True, n_validation=30, n_test=30)


@pytest.mark.parametrize("config", [SMALL, FOUR, ALL])
def test_generated_problems_follow_the_config_and_are_solvable(config):
    problems = generate_problems(config, "validation") + generate_problems(config, "test")
    if config.n_train <= 100:
        problems += generate_problems(config, "train")
    for p in problems:
        assert config.min_numbers <= len(p.numbers) <= config.max_numbers
        assert all(config.min_value <= n <= config.max_value for n in p.numbers)
        assert 1 <= p.target <= config.max_target and p.target not in p.numbers
        solutions = solve(p.numbers, p.target, use_all=config.use_all_numbers)
        assert p.num_solutions == len(solutions) >= 1
        for text in solutions:
            assert score(p, text, config).correct == 1.0, (p, text)
    assert {len(p.numbers) for p in problems} == set(
        range(config.min_numbers, config.max_numbers + 1)
    )


def test_solution_count_window():
    config = CountdownConfig(n_train=40, n_validation=5, min_solutions=2, max_solutions=3)
    assert all(2 <= p.num_solutions <= 3 for p in generate_problems(config, "train"))


def test_too_small_problem_space_is_reported():
    # pairs from {1, 2}: (1,1), (1,2), (2,2); times targets 1..4 = 12 keys, all drawn, then stop
    config = CountdownConfig(min_numbers=2, max_numbers=2, max_value=2, max_target=4, n_train=50)
    with pytest.raises(ValueError, match=r"n_train: .* in all 12 \(numbers, target\) keys"):
        generate_problems(config, "train")
    # every number exactly once: fewer solvable problems than the 3/4 share of the 56·30 = 1680
    # keys (3-multisets of 1..6 times targets 1..30) in training; found out without 1.5M draws
    config = CountdownConfig(use_all_numbers=True, max_value=6, max_target=30, n_train=1500)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"n_train: .* all 1680 .*use_all_numbers"):
        generate_problems(config, "train")
    assert time.perf_counter() - start < 3.0
    with pytest.raises(ValueError, match="split"):
        generate_problems(SMALL, "eval")  # the one held-out split of older versions


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_numbers", 1),
        ("max_numbers", 2),
        ("max_numbers", 7),
        ("min_value", 0),
        ("max_value", 0),
        ("max_target", 0),
        ("n_train", 0),
        ("n_validation", -1),
        ("n_test", -1),
        ("min_solutions", 0),
        ("max_solutions", 0),
        ("format_weight", 1.5),
        ("max_answer_chars", 0),
        ("use_all_numbers", "yes"),
        ("seed", 1.5),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CountdownConfig(**{field: value})


def test_task_and_build_task():
    task = build_task(SimpleNamespace(name="countdown", countdown=SMALL))
    assert isinstance(task, CountdownTask) and isinstance(task, Task)
    assert task.name == "countdown" and task.config is SMALL
    train = task.train_problems()
    assert train == generate_problems(SMALL, "train")
    assert task.train_problems()[0] is train[0]  # cached, not regenerated
    assert (len(task.validation_problems()), len(task.test_problems())) == (40, 30)
    p = train[0]
    assert task.prompt(p) == p.prompt
    result = task.score(p, task.reference_solutions(p)[0])
    assert isinstance(result, TaskReward) and result.correct == 1.0
    with pytest.raises(ValueError, match="countdown"):
        build_task(SimpleNamespace(name="gsm8k", countdown=SMALL))


def test_build_task_from_the_training_config():
    from entropy_dynamics.training.config import TaskConfig

    task = build_task(TaskConfig(countdown=SMALL))
    assert isinstance(task, CountdownTask) and task.config == SMALL
