"""``countdown_search`` (``tasks/countdown_search.py``): a trace graded by its final line (correct,
wrong, truncated, no final line, gave up), Countdown's problems and disjoint splits, the solver's
traces as reference solutions, the config. The traces' arithmetic: ``test_countdown_traces.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from entropy_dynamics.tasks import (
    CountdownConfig,
    CountdownProblem,
    CountdownSearchConfig,
    CountdownSearchTask,
    CountdownTask,
    Task,
    TaskReward,
    build_task,
    score_trace,
)
from entropy_dynamics.tasks.countdown_search import STRATEGIES, parse_trace, search_prompt

SMALL = CountdownConfig(n_train=100, n_validation=40, n_test=30, seed=3)
PROBLEM = CountdownProblem(numbers=(3, 5, 7, 8), target=22, num_solutions=1)
TRACE = "7*3=21 [5 8 21]\nback [3 5 7 8]\n8*3=24 [5 7 24]\n7-5=2 [2 24]\n24-2=22 [22]\n"


def graded(completion, config=None, countdown=None):
    result = score_trace(PROBLEM, completion, config, countdown)
    return (result.format, result.correct, result.reward, result.error)


def test_prompt_is_countdowns_on_its_own_line():
    assert search_prompt(PROBLEM) == "3 5 7 8 -> 22:\n"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (TRACE + "answer: 8*3-(7-5)", (1.0, 1.0, 1.0, None)),
        (TRACE + "answer: 8*3-(7-5)\n\n", (1.0, 1.0, 1.0, None)),  # trailing blank lines
        ("answer: (8-5)*7+1", (1.0, 0.0, 0.0, "number not available")),  # no 1 in 3 5 7 8
        (TRACE + "answer: 8*3-7-5", (1.0, 0.0, 0.0, "wrong value")),  # 24-7-5 = 12
        (TRACE + "answer: 8*8+3", (1.0, 0.0, 0.0, "number reused")),
        (TRACE + "answer: 8*3-(7-5", (0.0, 0.0, 0.0, "malformed")),
        (TRACE + "answer: none", (0.0, 0.0, 0.0, "gave up")),
        (TRACE, (0.0, 0.0, 0.0, "no final line")),
        (TRACE + "answer: 8*3-(7-5)\n24-2=22 [22]", (0.0, 0.0, 0.0, "no final line")),
        ("", (0.0, 0.0, 0.0, "no final line")),
    ],
)
def test_the_final_line_is_graded_by_the_exact_grader(completion, expected):
    assert graded(completion) == expected


def test_a_trace_cut_at_the_response_cap_is_truncated():
    config = CountdownSearchConfig(max_response_chars=40, max_trace_chars=40)
    cut = TRACE[:40]  # what the rollout leaves when it stops at 40 tokens
    assert graded(cut, config) == (0.0, 0.0, 0.0, "truncated")
    assert graded(cut[:-1], config) == (0.0, 0.0, 0.0, "no final line")
    # an answer past the cap is not read: the grader sees the first 40 characters only
    assert graded(TRACE + "answer: 8*3-(7-5)", config)[3] == "truncated"
    assert graded("24-2=22 [22]\nanswer: 8*3-(7-5)", config)[1] == 1.0  # 31 characters


def test_countdown_rules_of_the_answer_apply():
    use_all = CountdownConfig(use_all_numbers=True, format_weight=0.25)
    assert graded("answer: 8*3-(7-5)", countdown=use_all)[1] == 1.0
    assert graded("answer: 8*7-5-3", countdown=use_all) == (1.0, 0.0, 0.25, "wrong value")
    assert graded("answer: 3*7", countdown=use_all)[3] == "not all numbers used"
    assert graded("answer: none", countdown=use_all)[2] == 0.0  # no format, no format reward


def test_same_problems_and_disjoint_splits_as_countdown():
    task, countdown = CountdownSearchTask(SMALL), CountdownTask(SMALL)
    splits = [task.train_problems(), task.validation_problems(), task.test_problems()]
    assert splits == [countdown.train_problems(), countdown.validation_problems(),
                      countdown.test_problems()]  # fmt: skip
    keys = [{(tuple(sorted(p.numbers)), p.target) for p in split} for split in splits]
    assert [len(k) for k in keys] == [100, 40, 30]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_task_protocol_and_reference_traces():
    task = build_task(
        SimpleNamespace(name="countdown_search", countdown=SMALL,
                        countdown_search=CountdownSearchConfig(seed=1))
    )  # fmt: skip
    assert isinstance(task, CountdownSearchTask) and isinstance(task, Task)
    assert task.name == "countdown_search" and task.countdown.config is SMALL
    problems = task.train_problems()
    gave_up = 0
    for problem in problems[:40]:
        assert task.prompt(problem) == search_prompt(problem)
        traces = task.search_traces(problem)
        assert list(traces) == list(STRATEGIES)
        assert traces == task.search_traces(problem)  # deterministic
        references = task.reference_solutions(problem)
        assert len(references) == len(set(references))
        for trace in traces.values():
            result = task.score(problem, trace)
            assert isinstance(result, TaskReward)
            assert len(trace) <= task.config.max_trace_chars
            assert (result.correct == 1.0) == (trace in references)
            assert parse_trace(trace).answer is not None
            gave_up += result.error == "gave up"
    assert gave_up > 0  # some traces end without a solution at the default caps


def test_training_config_selects_the_task():
    from entropy_dynamics.training.config import TaskConfig

    config = TaskConfig(name="countdown_search", countdown=SMALL)
    task = build_task(config)
    assert isinstance(task, CountdownSearchTask) and task.config == CountdownSearchConfig()
    assert isinstance(build_task(TaskConfig(countdown=SMALL)), CountdownTask)  # the default


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_response_chars", 8),
        ("max_trace_chars", 600),  # above the response cap
        ("max_trace_chars", 8),
        ("max_nodes", 0),
        ("max_nodes", 2.5),
        ("strategies", ("breadth_first",)),
        ("strategies", ()),
        ("seed", "0"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CountdownSearchConfig(**{field: value})
