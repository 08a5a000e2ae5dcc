"""The math task (``tasks/math.py``): math-verify grading and the reward, the splits, the prompt,
the config's refusals. Loading the dataset files: ``test_math_problems.py``."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks import SPLITS, TASKS, Task, TaskReward, build_task
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


def _questions(problems) -> set[str]:
    return {p.question for p in problems}


def _splits(task: MathTask) -> dict[str, list[MathProblem]]:
    return {split: getattr(task, f"{split}_problems")() for split in SPLITS}


def _assert_disjoint(splits: dict[str, list[MathProblem]]) -> None:
    for first, second in itertools.combinations(SPLITS, 2):
        assert not _questions(splits[first]) & _questions(splits[second]), (first, second)


def test_math_task_splits_are_seeded_disjoint_and_sized():
    task = _task(validation_size=3, test_size=2, seed=1)
    with pytest.warns(UserWarning):
        splits = _splits(task)
    assert isinstance(task, Task)
    assert {split: len(_questions(p)) for split, p in splits.items()} == {
        "train": 11, "validation": 3, "test": 2
    }  # fmt: skip
    _assert_disjoint(splits)
    assert len(task.issues) == 3
    with pytest.warns(UserWarning):
        assert _splits(_task(validation_size=3, test_size=2, seed=1)) == splits
        other = _splits(_task(validation_size=3, test_size=2, seed=2))
    assert other["test"] != splits["test"]  # 16 · 15 / 2 = 120 ways to pick 2 of 16
    assert task.train_problems() is not task.train_problems()  # a fresh list per call
    with pytest.warns(UserWarning):
        assert len(_task(max_problems=5, validation_size=2, test_size=2).train_problems()) == 5
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match=r"validation_size"):
        _task(validation_size=8, test_size=8).train_problems()


def test_math_training_problems_are_those_of_the_older_held_out_split():
    """Held out: the first ``validation_size + test_size`` distinct questions of the file after
    the seeded shuffle of older versions (there: ``eval_size``), so training is unchanged."""
    with pytest.warns(UserWarning):
        task = _task(validation_size=2, test_size=3, seed=1)
        problems = _task(validation_size=0, test_size=0).train_problems()  # the whole file
    questions = list(dict.fromkeys(p.question for p in problems))
    random.Random("math|1").shuffle(questions)  # the older eval_size=5 split, written out
    held = set(questions[:5])
    with pytest.warns(UserWarning):
        assert task.train_problems() == [p for p in problems if p.question not in held]
        assert _questions(task.validation_problems() + task.test_problems()) == held


def _write(path: Path, questions: list[str]) -> Path:
    lines = [json.dumps({"prompt": q, "solution": str(i)}) for i, q in enumerate(questions)]
    path.write_text("\n".join(lines) + "\n")
    return path


QUESTIONS = [f"What is {i} + {i}?" for i in range(10)]


def test_an_eval_file_is_divided_by_the_hash_of_each_question(tmp_path):
    """Older configs' ``eval_path``: half of its questions validation, the rest test, by a hash
    of the text: the same division whatever the order of the file."""
    forward = _write(tmp_path / "forward.jsonl", QUESTIONS)
    backward = _write(tmp_path / "backward.jsonl", QUESTIONS[::-1])
    with pytest.warns(UserWarning):  # the records the parquet file skips
        splits = _splits(_task(eval_path=str(forward)))
        again = _splits(_task(eval_path=str(backward)))
        other = _splits(_task(eval_path=str(forward), seed=1))
    assert (len(splits["validation"]), len(splits["test"])) == (5, 5)
    _assert_disjoint(splits)
    assert _questions(splits["validation"] + splits["test"]) == set(QUESTIONS)
    assert _questions(again["validation"]) == _questions(splits["validation"])
    assert _questions(other["validation"]) != _questions(splits["validation"])  # 252 ways
    assert len(splits["train"]) == 16  # the whole training file: nothing else held out


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
    assert len(train) == 15
    assert (len(task.validation_problems()), len(task.test_problems())) == (0, 1)


def test_named_validation_and_test_files_are_used_whole_and_kept_disjoint(tmp_path):
    validation = _write(tmp_path / "validation.jsonl", QUESTIONS[:6])
    test = _write(tmp_path / "test.jsonl", QUESTIONS[4:])
    task = _task(validation_path=str(validation), test_path=str(test))
    with pytest.warns(UserWarning) as caught:
        splits = _splits(task)
    assert any("2 problem(s) also in" in str(w.message) for w in caught)
    assert _questions(splits["test"]) == set(QUESTIONS[4:])  # the test file wins
    assert _questions(splits["validation"]) == set(QUESTIONS[:4])
    assert len(splits["train"]) == 16
    _assert_disjoint(splits)
    only_test = _task(test_path=str(test), validation_size=4)  # validation held out of path
    with pytest.warns(UserWarning):
        splits = _splits(only_test)
    assert len(_questions(splits["validation"])) == 4 and len(splits["train"]) == 12
    _assert_disjoint(splits)
    with pytest.raises(ConfigError, match="eval_path"):
        _task(eval_path=str(test), validation_path=str(validation))


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
        ("task.math.validation_size=-1", "task.math.validation_size"),
        ("task.math.test_size=x", "task.math.test_size"),
        ("task.math.eval_size=-1", "task.math.eval_size"),
        ("task.math.test_path=test.csv", "task.math.test_path"),
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
        "task.math.validation_size=2",
        "task.math.test_size=3",
    ]
    config = load_config(overrides=overrides)
    assert "math" in TASKS
    task = build_task(config.task)
    assert isinstance(task, MathTask)
    with pytest.warns(UserWarning):
        sizes = [len(task.train_problems()), len(task.validation_problems())]
    assert [*sizes, len(task.test_problems())] == [10, 2, 3]
