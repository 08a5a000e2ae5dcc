"""Math problems from dataset files (``tasks/math_problems.py``): each layout, malformed records,
the preset's detection and the loading's refusals.

Fixtures: ``tests/data/math`` (written by ``make_fixtures.py`` there); the malformed records sit at
the lines / items / rows named below.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from entropy_dynamics.tasks.math import MathTask
from entropy_dynamics.tasks.math_problems import detect_preset, gsm8k_final_answer, load_problems

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
