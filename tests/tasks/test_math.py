"""The math task (``tasks/math.py``): math-verify grading and the reward, the splits, the prompt,
the config's refusals. Loading the dataset files: ``test_math_problems.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks import TASKS, Task, TaskReward, build_task
from entropy_dynamics.tasks.math import (
    DEFAULT_PROMPT_TEMPLATE,
    MathConfig,
    MathProblem,
    MathTask,
    extract_boxed,
    score,
)
from entropy_dynamics.training.config import load_config

DATA = Path(__file__).parents[1] / "data" / "math"


def _problem(answer: str) -> MathProblem:
    return MathProblem(question="q", answer=answer, source="test:1")




# ---------------------------------------------------------------------------------------------
# Grading


@pytest.mark.parametrize(
    ("gold", "completion"),
    [
        ("\\frac{1}{2}", "so the answer is \\boxed{0.5}"),  # fraction vs decimal
        ("\\frac{1}{2}", "\\boxed{1/2}"),  # LaTeX vs plain fraction
        ("0.5", "\\boxed{\\dfrac{1}{2}}"),  # \dfrac
        ("\\frac34", "\\boxed{\\frac{3}{4}}"),  # braceless \frac in the gold
        ("1000", "\\boxed{1,000}"),  # thousands separator
        ("1,000", "\\boxed{1000}"),
        ("1000", "\\boxed{1{,}000}"),
        ("-3", "It gets colder: \\boxed{-3}."),  # negative
        ("3", "\\boxed{x=3}"),  # an assignment to the answer
        ("3", "\\boxed{3.0}"),
        ("18", "\\boxed{\\$18}"),  # currency sign
        ("5\\sqrt{2}", "\\boxed{\\sqrt{50}}"),  # symbolic equality
        ("\\{1,2\\}", "\\boxed{\\{2, 1\\}}"),  # sets, order-free
        ("(-1,1)", "\\boxed{(-1, 1)}"),  # intervals
        ("x^2+2x+1", "\\boxed{(x+1)^2}"),
        ("75\\%", "\\boxed{75\\%}"),
        ("42", "\\fbox{42}"),  # \fbox
        ("42", "first \\boxed{41}, no wait: \\boxed{42}"),  # the last box counts
        ("42", "The final answer is 42."),  # no box: the text's final answer
        ("42", "Answer: 42"),  # DAPO's own answer format
    ],
)
def test_equivalent_answers_are_correct(gold, completion):
    reward = score(_problem(gold), completion)
    assert (reward.correct, reward.format, reward.reward, reward.error) == (1.0, 1.0, 1.0, None)


@pytest.mark.parametrize(
    ("gold", "completion"),
    [
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}"),
        ("1000", "\\boxed{100}"),
        ("-3", "\\boxed{3}"),
        ("3", "\\boxed{x=4}"),
        ("42", "\\boxed{42} was wrong, it is \\boxed{43}"),  # the last box counts
        ("\\{1,2\\}", "\\boxed{\\{1, 3\\}}"),
        ("x^2+2x+1", "\\boxed{x^2+1}"),
    ],
)
def test_wrong_answers_are_wrong(gold, completion):
    reward = score(_problem(gold), completion)
    assert (reward.correct, reward.format, reward.reward, reward.error) == (
        0.0,
        1.0,
        0.0,
        "wrong answer",
    )


@pytest.mark.parametrize(
    ("completion", "error"),
    [("", "no answer"), ("I do not know.", "no answer"), ("\\boxed{}", "empty answer")],
)
def test_no_answer_has_no_format(completion, error):
    reward = score(_problem("3"), completion)
    assert (reward.correct, reward.format, reward.error) == (0.0, 0.0, error)


def test_format_weight_rewards_a_found_wrong_answer():
    config = MathConfig(format_weight=0.25)
    # reward = correct + w·format·(1 − correct): 0 + 0.25·1·1, 0 + 0.25·0·1, 1
    assert score(_problem("3"), "\\boxed{4}", config).reward == 0.25
    assert score(_problem("3"), "no idea", config).reward == 0.0
    assert score(_problem("3"), "\\boxed{3}", config).reward == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{3}", "3"),
        ("a \\boxed{\\frac{1}{2}} b", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are not structure
        ("\\boxed{\\boxed{3}}", "\\boxed{3}"),  # the box that closes last
        ("\\boxed{5} then \\boxed{12", "5"),  # a truncated box is ignored
        ("\\fbox{7}", "7"),
        ("\\boxed 42.", "42."),
        ("\\boxed {x}", "x"),
        ("no box", None),
        ("\\boxed{" * 5000, None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# ---------------------------------------------------------------------------------------------
# Task and config


def _task(**overrides) -> MathTask:
    return MathTask(MathConfig(path=str(DATA / "dapo.parquet"), **overrides))


def test_math_task_splits_are_seeded_disjoint_and_sized():
    task = _task(eval_size=4, seed=1)
    with pytest.warns(UserWarning):
        train, held_out = task.train_problems(), task.eval_problems()
    assert isinstance(task, Task)
    assert (len(train), len(held_out)) == (12, 4)
    assert not {p.question for p in train} & {p.question for p in held_out}
    assert len(task.issues) == 3
    with pytest.warns(UserWarning):
        again = _task(eval_size=4, seed=1)
        assert again.eval_problems() == held_out
        other = _task(eval_size=4, seed=2)
        assert other.eval_problems() != held_out  # 1820 ways to pick 4 of 16
    assert task.train_problems() is not task.train_problems()  # a fresh list per call
    with pytest.warns(UserWarning):
        assert len(_task(eval_size=4, max_problems=5).train_problems()) == 5
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match=r"task\.math\.eval_size"):
        _task(eval_size=16).train_problems()


def test_math_task_with_eval_file_removes_shared_problems(tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(
        json.dumps({"prompt": "Find the last digit of $7^{100}$.", "solution": "1"}) + "\n"
    )
    task = MathTask(
        MathConfig(path=str(DATA / "dapo.parquet"), eval_path=str(held), on_error="skip")
    )
    with pytest.warns(UserWarning) as caught:
        train = task.train_problems()
    assert any("1 training problem(s) also in" in str(w.message) for w in caught)
    assert len(train) == 15 and len(task.eval_problems()) == 1


def test_prompt_template_and_reward_protocol():
    task = _task(prompt_template="Q: {question}\nA (in \\boxed{}):")
    problem = MathProblem(question="What is {x}?", answer="1", source="s")
    assert task.prompt(problem) == "Q: What is {x}?\nA (in \\boxed{}):"
    assert MathTask().prompt(problem) == DEFAULT_PROMPT_TEMPLATE.replace(
        "{question}", "What is {x}?"
    )
    reward = task.score(problem, "\\boxed{1}")
    assert isinstance(reward, TaskReward)
    assert 0 <= reward.reward <= 1 and reward.extracted == "1"


def test_missing_data_file_is_named():
    task = MathTask(MathConfig(path="does-not-exist.jsonl"))
    with pytest.raises(
        ConfigError, match=r"task\.math\.path: does-not-exist\.jsonl does not exist"
    ):
        task.train_problems()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("task.name=math", "task.math.path"),
        ("task.math.path=data.csv", "task.math.path"),
        ("task.math.eval_size=0", "task.math.eval_size"),
        ("task.math.max_problems=-1", "task.math.max_problems"),
        ("task.math.preset=aime", "task.math.preset"),
        ("task.math.preset=custom", "task.math.prompt_field"),
        ("task.math.on_error=ignore", "task.math.on_error"),
        ("task.math.prompt_template=Solve it.", "task.math.prompt_template"),
        ("task.math.format_weight=2", "task.math.format_weight"),
        ("task.math.grading_timeout=0", "task.math.grading_timeout"),
    ],
)
def test_config_errors_name_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_build_task_from_config():
    overrides = [
        "task.name=math",
        f"task.math.path={DATA / 'gsm8k.jsonl'}",
        "task.math.eval_size=5",
    ]
    config = load_config(overrides=overrides)
    assert "math" in TASKS
    task = build_task(config.task)
    assert isinstance(task, MathTask)
    with pytest.warns(UserWarning):
        assert len(task.train_problems()) + len(task.eval_problems()) == 15
