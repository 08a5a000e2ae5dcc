"""Pass-rate filter (``study/filter_data.py``): the strict rule, the output format, resuming after a
kill. The command: ``tests/cli/test_data.py``.

A scripted task makes the pass rates exact: problem ``i`` is scored correct on its first ``k_i``
of ``n`` samples whatever the model writes, so the expected decisions are known by hand.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest

from entropy_dynamics.study.command_options import parse_rate
from entropy_dynamics.study.filter_data import (
    default_kept_path,
    filter_by_pass_rate,
    keeps,
    read_decisions,
    write_kept,
)
from entropy_dynamics.tasks.math import MathProblem, MathReward, MathTask, load_problems

DATA = Path(__file__).parents[1] / "data" / "math"
SAMPLES = 16
# correct samples of 16 per problem; kept iff 1/16 < k/16 < 15/16, i.e. 2 <= k <= 14
CORRECT = [0, 1, 2, 8, 14, 15, 16, 3]
KEPT = [False, False, True, True, True, False, False, True]


class ScriptedTask:
    """Scores the first ``k`` samples of problem ``i`` correct (counts every call)."""

    name = "scripted"

    def __init__(self, correct: list[int]) -> None:
        self.correct = correct
        self.calls: Counter[str] = Counter()

    def prompt(self, problem: MathProblem) -> str:
        return f"{problem.question} = "

    def score(self, problem: MathProblem, completion: str) -> MathReward:
        index = int(problem.record["id"])
        right = float(self.calls[problem.source] < self.correct[index])
        self.calls[problem.source] += 1
        return MathReward(format=1.0, correct=right, reward=right, extracted=None, error=None)


def _problems(n: int = len(CORRECT)) -> list[MathProblem]:
    return [
        MathProblem(
            question=f"{i}+{i}",
            answer=str(2 * i),
            source=f"d.jsonl:{i + 1}",
            record={"id": i, "question": f"{i}+{i}"},
        )
        for i in range(n)
    ]


def _run(tiny_lm, task, output, problems=None, **kwargs):
    model, tokenizer = tiny_lm
    options = {"samples": SAMPLES, "max_new_tokens": 2, "batch_prompts": 3} | kwargs
    return filter_by_pass_rate(
        model,
        tokenizer,
        task,
        _problems() if problems is None else problems,
        output=output,
        **options,
    )


@pytest.mark.parametrize(
    ("k", "kept"),
    [(0, False), (1, False), (2, True), (8, True), (14, True), (15, False), (16, False)],
)
def test_keeps_is_strict_at_the_paper_thresholds(k, kept):
    assert keeps(k / 16, 1 / 16, 15 / 16) is kept


def test_keeps_is_strict_at_decimal_thresholds():
    # 1/10 and 9/10 as typed floats equal the pass rates of 1 and 9 correct of 10
    assert not keeps(1 / 10, 0.1, 0.9) and not keeps(9 / 10, 0.1, 0.9)
    assert keeps(2 / 10, 0.1, 0.9)


def test_output_format_and_kept_file(tiny_lm, tmp_path):
    output = tmp_path / "out.jsonl"
    task = ScriptedTask(CORRECT)
    summary = _run(tiny_lm, task, output)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [d["source"] for d in lines] == [p.source for p in _problems()]
    assert [d["correct"] for d in lines] == CORRECT
    assert [d["pass_rate"] for d in lines] == [k / 16 for k in CORRECT]
    assert [d["kept"] for d in lines] == KEPT
    first = lines[0]
    assert first["samples"] == 16 and first["question"] == "0+0" and first["answer"] == "0"
    assert first["record"] == {"id": 0, "question": "0+0"}
    assert first["settings"] == {
        "samples": 16,
        "low": 1 / 16,
        "high": 15 / 16,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 2,
    }
    assert set(task.calls.values()) == {SAMPLES}  # each problem sampled exactly n times
    # kept file: the original records of the kept problems, in order
    assert summary.kept_output == default_kept_path(output) == tmp_path / "out.kept.jsonl"
    kept = [json.loads(line) for line in summary.kept_output.read_text().splitlines()]
    assert [r["id"] for r in kept] == [i for i, k in enumerate(KEPT) if k]
    # counts: too hard p <= 1/16 (k = 0, 1), too easy p >= 15/16 (k = 15, 16)
    assert (summary.total, summary.decided, summary.resumed) == (8, 8, 0)
    assert (summary.kept, summary.too_hard, summary.too_easy) == (4, 2, 2)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_same_result_without_duplicates(tiny_lm, tmp_path):
    reference = tmp_path / "reference.jsonl"
    _run(tiny_lm, ScriptedTask(CORRECT), reference)

    output = tmp_path / "out.jsonl"
    task = ScriptedTask(CORRECT)

    def kill_after_first_batch(decided: int, total: int) -> None:
        if decided >= 3:
            raise _Killed

    with pytest.raises(_Killed):
        _run(tiny_lm, task, output, progress=kill_after_first_batch)
    assert len(output.read_text().splitlines()) == 3  # one batch of 3 problems decided
    assert not default_kept_path(output).exists()  # written only once all are decided
    # a kill in the middle of writing leaves half a line: it is dropped and redone
    with output.open("a") as handle:
        handle.write('{"source": "d.jsonl:4", "pass_')
    seen = []
    with pytest.warns(UserWarning, match="incomplete last line"):
        summary = _run(tiny_lm, task, output, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 8), (6, 8), (8, 8)]
    assert summary.resumed == 3 and summary.decided == 8
    assert set(task.calls.values()) == {SAMPLES}  # no problem sampled twice
    sources = [json.loads(line)["source"] for line in output.read_text().splitlines()]
    assert sorted(sources) == sorted(set(sources)) and len(sources) == 8
    assert read_decisions(output) == read_decisions(reference)
    assert default_kept_path(output).read_text() == default_kept_path(reference).read_text()
    # a third run has nothing left to do
    again = _run(tiny_lm, ScriptedTask(CORRECT), output)
    assert again.resumed == 8 and len(output.read_text().splitlines()) == 8


def test_resume_refuses_other_settings_or_other_data(tiny_lm, tmp_path):
    output = tmp_path / "out.jsonl"
    _run(tiny_lm, ScriptedTask(CORRECT), output, problems=_problems(2))
    with pytest.raises(ValueError, match="same settings"):
        _run(tiny_lm, ScriptedTask(CORRECT), output, samples=8)
    with pytest.raises(ValueError, match="same settings"):
        _run(tiny_lm, ScriptedTask(CORRECT), output, low=0.0)
    other = [
        MathProblem(question="another", answer="1", source=p.source, record=p.record)
        for p in _problems(2)
    ]
    with pytest.raises(ValueError, match="other data"):
        _run(tiny_lm, ScriptedTask(CORRECT), output, problems=other)
    (tmp_path / "junk.jsonl").write_text('{"source": "x"}\n')
    with pytest.raises(ValueError, match=r"junk\.jsonl:1: not a pass-rate decision"):
        _run(tiny_lm, ScriptedTask(CORRECT), tmp_path / "junk.jsonl")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": 0}, "samples"),
        ({"low": 0.5, "high": 0.5}, "low and high"),
        ({"batch_prompts": 0}, "batch_prompts"),
    ],
)
def test_bad_arguments_are_refused(tiny_lm, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _run(tiny_lm, ScriptedTask(CORRECT), tmp_path / "o.jsonl", **kwargs)


def test_real_grading_on_a_fixture(tiny_lm, tmp_path):
    # one-character completions cannot be the 2+-digit gold answers of the first four problems
    # (36, 1245, 120, 750): every pass rate is 0, nothing is kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems, _ = load_problems(DATA / "gsm8k.jsonl")
    output = tmp_path / "gsm8k.filter.jsonl"
    assert [p.answer for p in problems[:4]] == ["36", "1245", "120", "750"]
    summary = _run(tiny_lm, MathTask(), output, problems=problems[:4], samples=2, max_new_tokens=1)
    assert (summary.decided, summary.kept, summary.too_hard) == (4, 0, 4)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [d["record"] for d in lines] == [p.record for p in problems[:4]]
    assert summary.kept_output.read_text() == ""
    # the kept file holds the records of kept lines only: flip one by hand and rebuild it
    lines[1]["kept"] = True
    output.write_text("".join(json.dumps(d) + "\n" for d in lines))
    path, count = write_kept(output)
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == 1 and record == problems[1].record
    assert load_problems(path)[0][0].answer == problems[1].answer  # a dataset again


@pytest.mark.parametrize(
    ("text", "value"), [("1/16", 0.0625), ("0.25", 0.25), ("15/16", 0.9375), ("1", 1.0)]
)
def test_parse_rate(text, value):
    assert parse_rate(text, "--low") == value


@pytest.mark.parametrize("text", ["a", "1/0", "2", "-1/16"])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError, match="--low"):
        parse_rate(text, "--low")


def test_resume_trims_only_a_file_it_wrote(tmp_path):
    foreign = tmp_path / "records.jsonl"
    foreign.write_bytes(b'{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answ')
    before = foreign.read_bytes()
    with pytest.raises(ValueError, match=r"records\.jsonl:1: not a pass-rate decision line"):
        read_decisions(foreign)
    only_partial = tmp_path / "partial.jsonl"
    only_partial.write_bytes(b'{"question": "1+1"')  # no complete line to prove anything
    with pytest.raises(ValueError, match=r"partial\.jsonl:1: not a pass-rate decision line"):
        read_decisions(only_partial)
    assert foreign.read_bytes() == before and only_partial.read_bytes() == b'{"question": "1+1"'
