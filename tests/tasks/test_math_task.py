"""Math task: dataset layouts, malformed records, math-verify grading and its time bound.

Fixtures: ``tests/data/math`` (written by ``make_fixtures.py`` there); the malformed records sit at
the lines / items / rows named below.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks import TASKS, Task, TaskReward, build_task
from entropy_dynamics.tasks.math import (
    DEFAULT_PROMPT_TEMPLATE,
    MathConfig,
    MathProblem,
    MathTask,
    detect_preset,
    extract_boxed,
    gsm8k_final_answer,
    load_problems,
    score,
)
from entropy_dynamics.training.config import load_config

DATA = Path(__file__).parents[1] / "data" / "math"

# file: (preset, problems kept, {source suffix: reason fragment} of the malformed records)
FIXTURES = {
    "gsm8k.jsonl": (
        "gsm8k",
        15,
        {
            "gsm8k.jsonl:4": "invalid JSON",
            "gsm8k.jsonl:8": "missing field 'answer'",
            "gsm8k.jsonl:12": "no '#### <answer>' line",
            "gsm8k.jsonl:16": "expected text or a list of chat messages",
            "gsm8k.jsonl:19": "expected a JSON object, got list",
        },
    ),
    "math.jsonl": (
        "math",
        15,
        {
            "math.jsonl:3": "no \\boxed{...} answer",
            "math.jsonl:9": "missing field 'answer' / 'solution'",
            "math.jsonl:14": "invalid JSON",
            "math.jsonl:18": "field 'problem' is empty",
        },
    ),
    "aime.json": (
        "math",
        6,
        {
            "aime.json: item 2": "expected text or a number, got bool",
            "aime.json: item 5": "missing field 'answer' / 'solution'",
        },
    ),
    "dapo.parquet": (
        "dapo",
        16,
        {
            "dapo.parquet: row 3": "'reward_model.ground_truth' is empty",
            "dapo.parquet: row 7": "without a 'user' message",
            "dapo.parquet: row 11": "missing field 'reward_model.ground_truth'",
        },
    ),
}


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 3*12=36\n#### 36", "36"),
        ("#### 1,245", "1245"),
        ("#### 250,000", "250000"),
        ("#### 1,2345", "1,2345"),  # not a thousands separator
        ("#### -3", "-3"),
        ("a #### 1 #### 2", "2"),
        ("no marker", None),
        ("#### ", None),
    ],
)
def test_gsm8k_final_answer(text, expected):
    assert gsm8k_final_answer(text) == expected


# ---------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixtures_load_with_auto_preset_and_report_every_malformed_record(name):
    preset, kept, malformed = FIXTURES[name]
    path = DATA / name
    with open(path, "rb") as handle:
        first = handle.read()
    assert first  # a shipped fixture
    with pytest.warns(UserWarning, match=f"skipped {len(malformed)} unusable record") as caught:
        problems, issues = load_problems(path)
    assert len(problems) == kept
    assert [i.source for i in issues] == [f"{path.parent}/{s}" for s in malformed]
    for issue, reason in zip(issues, malformed.values(), strict=True):
        assert reason in issue.reason
        assert issue.source in str(caught[0].message)  # the warning names each file:line
    assert all(p.question and p.answer for p in problems)
    # explicit preset = auto-detected preset
    with pytest.warns(UserWarning):
        assert load_problems(path, preset=preset)[0] == problems


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_on_error_refuse_names_the_first_bad_record(name):
    _, _, malformed = FIXTURES[name]
    first = next(iter(malformed))
    with pytest.raises(ValueError, match=f"{first}: ") as caught:
        load_problems(DATA / name, on_error="refuse")
    assert "on_error" in str(caught.value)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reference_solutions_score_correct(name):
    task = MathTask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems, _ = load_problems(DATA / name)
    for problem in problems:
        (solution,) = task.reference_solutions(problem)
        assert task.score(problem, solution).correct == 1.0, problem


def test_gold_answers_of_each_layout():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm8k = load_problems(DATA / "gsm8k.jsonl")[0]
        math = load_problems(DATA / "math.jsonl")[0]
        dapo = load_problems(DATA / "dapo.parquet")[0]
    assert [p.answer for p in gsm8k[:2]] == ["36", "1245"]  # "#### 1,245"
    assert gsm8k[-1].answer == "250000"
    assert gsm8k[0].source.endswith("gsm8k.jsonl:1") and gsm8k[3].source.endswith(":5")
    by_question = {p.question: p.answer for p in math}
    assert by_question["Simplify $\\frac{6}{8}$."] == "\\frac34"  # the last of two boxes
    assert by_question["Evaluate $\\dfrac{3}{5}\\cdot 10$."] == "6"  # \fbox
    assert by_question["What is $6\\cdot 7$?"] == "42"  # \boxed 42
    assert by_question["What is 8/2?"] == "4"  # an answer field wins over the solution
    # DAPO: the instruction wrapper is removed, the gold is reward_model.ground_truth
    assert dapo[0].question == "Let $a+b=10$ and $a-b=4$. Find $ab$."
    assert dapo[0].answer == "21" and dapo[0].source.endswith("dapo.parquet: row 0")
    assert dapo[0].record["extra_info"] == {"index": "fixture-0"}


def test_field_overrides_dotted_paths_and_processed_dapo(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "What is 1+1?", "solution": "2"},  # open-r1 processed layout
        {
            "prompt": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "2*3?"},
            ],
            "solution": 6,
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    problems, issues = load_problems(path)
    assert [(p.question, p.answer) for p in problems] == [("What is 1+1?", "2"), ("2*3?", "6")]
    assert issues == []
    custom = tmp_path / "c.json"
    custom.write_text(json.dumps([{"meta": {"q": "3+4?", "gold": "\\boxed{7}"}}]))
    (problem,), _ = load_problems(
        custom, preset="custom", prompt_field="meta.q", answer_field="meta.gold"
    )
    assert (problem.question, problem.answer) == ("3+4?", "7")
    # a preset's field override keeps the preset's rule: gsm8k reads after ####
    other = tmp_path / "g.jsonl"
    other.write_text(json.dumps({"question": "q", "worked": "#### 5"}))
    (problem,), _ = load_problems(other, preset="gsm8k", answer_field="worked")
    assert problem.answer == "5"


def test_detect_preset_and_undetectable_files(tmp_path):
    assert detect_preset({"question": 1, "answer": 2}) == "gsm8k"
    assert detect_preset({"problem": 1, "solution": 2}) == "math"
    assert detect_preset({"prompt": 1, "reward_model": 2}) == "dapo"
    assert detect_preset({"text": 1}) is None
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "hi", "label": 1}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:1: cannot detect .*\['label', 'text'\]"):
        load_problems(path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "q,a", "unsupported file type '.csv'"),
        ("missing.jsonl", None, "no such file"),
        ("bad.json", "[{", "bad.json:1: invalid JSON"),
        ("scalar.json", "3", "expected a JSON list"),
        ("bad.parquet", "not parquet", "cannot read as Parquet"),
        ("empty.jsonl", "\n\n", "no usable problem"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_problems(path)


def test_invalid_utf8_line_is_a_record_issue(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "\xff"}\n')
    with pytest.warns(UserWarning, match="u.jsonl:2: not UTF-8"):
        problems, issues = load_problems(path)
    assert len(problems) == 1 and len(issues) == 1


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
