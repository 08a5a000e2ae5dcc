"""Math problems from a dataset file: the record layouts, their detection, and loading.

The paper trains on DAPO-Math-17k and evaluates on AIME24/25, AMC23 and DAPO500; any file in one
of these layouts works (``.jsonl``, ``.json`` or ``.parquet``, see :mod:`._records`):

- ``gsm8k``: ``question``; gold = the text after the last ``####`` of ``answer``, thousands
  separators removed (``#### 1,000`` → ``1000``).
- ``math``: ``problem``; gold = ``answer`` when the record has one (MATH-500, AIME), else the
  last ``\\boxed{...}`` / ``\\fbox{...}`` of ``solution`` (Hendrycks MATH).
- ``dapo``: ``prompt``, a string or a list of chat messages (the last ``user`` message is
  taken; DAPO's own instruction wrapper around the problem is removed so that our template
  applies); gold = ``reward_model.ground_truth``, else ``solution``, else ``answer``
  (BytedTsinghua-SIA/DAPO-Math-17k and its processed variants).
- ``custom``: ``prompt_field`` and ``answer_field`` (dotted paths reach nested fields); the gold
  is the field's value, or the content of its last ``\\boxed{}`` if it has one.

``preset: auto`` picks from the first readable record's keys (``prompt`` → dapo; ``problem`` with
``solution`` or ``answer`` → math; ``question`` with ``answer`` → gsm8k). A record that cannot be
used — invalid JSON, not an object, a missing, empty or wrongly typed field, a gold answer that
cannot be extracted — is never dropped silently: ``on_error: skip`` warns with the count and each
``file:line`` and reason, ``on_error: refuse`` raises on the first one.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from entropy_dynamics.tasks._math_grading import extract_boxed
from entropy_dynamics.tasks._records import MAX_RECORD_BYTES, DataIssue, read_records

__all__ = [
    "PRESETS",
    "DataIssue",
    "MathProblem",
    "detect_preset",
    "gsm8k_final_answer",
    "load_problems",
]

PRESETS = ("auto", "gsm8k", "math", "dapo", "custom")
"""The record layouts (module docstring); ``auto`` detects one from the first record."""

# preset: (prompt fields, [(answer field, extraction rule)]) tried in order; rules:
# "hash" = after the last "####", "boxed" = last \boxed{}, "plain" = the value (or its last box)
_LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "gsm8k": (("question",), (("answer", "hash"),)),
    "math": (("problem",), (("answer", "plain"), ("solution", "boxed"))),
    "dapo": (
        ("prompt",),
        (("reward_model.ground_truth", "plain"), ("solution", "plain"), ("answer", "plain")),
    ),
    "custom": ((), ()),
}
_OVERRIDE_RULE = {"gsm8k": "hash", "math": "boxed", "dapo": "plain", "custom": "plain"}

# DAPO-Math-17k wraps every problem in its own answer-format instruction ("Answer: $Answer")
_DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of "
    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
_DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MAX_ISSUES_SHOWN = 10


@dataclass(frozen=True)
class MathProblem:
    """One problem: its text, the gold answer, where it came from and the record itself."""

    question: str
    """The problem text, before the prompt template."""
    answer: str
    """The gold answer (LaTeX or plain), as extracted by the preset."""
    source: str
    """``"file:LINE"``, ``"file: item N"`` or ``"file: row N"``."""
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The original record, for writing filtered datasets back out."""


def gsm8k_final_answer(text: str) -> str | None:
    """The text after the last ``####`` with thousands separators removed; None without one."""
    _, sep, tail = text.rpartition("####")
    if not sep:
        return None
    answer = _THOUSANDS.sub("", tail.strip())
    return answer or None


def detect_preset(record: dict[str, Any]) -> str | None:
    """The preset whose fields ``record`` has (module docstring), or None."""
    if "prompt" in record:
        return "dapo"
    if "problem" in record and ("solution" in record or "answer" in record):
        return "math"
    if "question" in record and "answer" in record:
        return "gsm8k"
    return None


_MISSING = object()
_ABSENT = (_MISSING, None)  # a field that is missing or null: the next candidate field is tried


def _lookup(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _question_text(value: Any, name: str) -> str:
    """The problem text of a prompt field: a string, or the last user turn of a chat."""
    if isinstance(value, list):
        if not all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
            raise ValueError(f"field {name!r}: expected text or a list of chat messages")
        turns = [m for m in value if m["role"] == "user"]
        if not turns:
            raise ValueError(f"field {name!r}: a message list without a 'user' message")
        value = turns[-1].get("content")
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: expected text, got {type(value).__name__}")
    text = value.strip()
    if text.startswith(_DAPO_PREFIX.strip()) and text.endswith(_DAPO_SUFFIX.strip()):
        text = text[len(_DAPO_PREFIX.strip()) : -len(_DAPO_SUFFIX.strip())].strip()
    if not text:
        raise ValueError(f"field {name!r} is empty")
    return text


def _gold_answer(value: Any, name: str, rule: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"field {name!r}: expected text or a number, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise ValueError(f"field {name!r} is empty")
    if rule == "hash":
        answer = gsm8k_final_answer(text)
        if answer is None:
            raise ValueError(f"field {name!r}: no '#### <answer>' line")
    else:
        answer = extract_boxed(text)
        if answer is None and rule == "boxed":
            raise ValueError(f"field {name!r}: no \\boxed{{...}} answer")
        answer = text if answer is None else answer.strip()
    if not answer:
        raise ValueError(f"field {name!r}: the answer is empty")
    return answer


def _problem(record: Any, source: str, preset: str, prompt_field: str, answer_field: str):
    """A :class:`MathProblem` from one record, or the :class:`DataIssue` that prevents it."""
    if not isinstance(record, dict):
        return DataIssue(source, f"expected a JSON object, got {type(record).__name__}")
    prompt_fields, answer_rules = _LAYOUTS[preset]
    if prompt_field:
        prompt_fields = (prompt_field,)
    if answer_field:
        answer_rules = ((answer_field, _OVERRIDE_RULE[preset]),)
    try:
        prompt_name = next((f for f in prompt_fields if _lookup(record, f) is not _MISSING), None)
        if prompt_name is None:
            raise ValueError(f"missing field {prompt_fields[0]!r}")
        question = _question_text(_lookup(record, prompt_name), prompt_name)
        present = [(f, r) for f, r in answer_rules if _lookup(record, f) not in _ABSENT]
        rule = present[0] if present else None
        if rule is None:
            raise ValueError(f"missing field {' / '.join(repr(f) for f, _ in answer_rules)}")
        answer = _gold_answer(_lookup(record, rule[0]), *rule)
    except ValueError as exc:
        return DataIssue(source, str(exc))
    return MathProblem(question=question, answer=answer, source=source, record=record)


def load_problems(
    path: str | Path,
    preset: str = "auto",
    prompt_field: str = "",
    answer_field: str = "",
    on_error: Literal["skip", "refuse"] = "skip",
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> tuple[list[MathProblem], list[DataIssue]]:
    """Every usable problem of ``path`` in file order, and the issues of the records skipped.

    Args:
        path: ``.jsonl`` / ``.json`` / ``.parquet`` file.
        preset: record layout (module docstring); ``auto`` detects it from the first record.
        prompt_field, answer_field: override the preset's fields.
        on_error: ``skip`` unusable records (a :class:`UserWarning` lists them, and they are
            returned) or ``refuse`` (``ValueError`` naming ``file:line`` and the reason).
        max_record_bytes: longest JSON Lines record (:func:`~._records.read_records`).

    Raises:
        ValueError: unreadable file, undetectable layout, no usable record, or a bad record
            with ``on_error="refuse"``.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
    if preset == "custom" and not (prompt_field and answer_field):
        raise ValueError("preset=custom needs both prompt_field and answer_field")
    problems: list[MathProblem] = []
    issues: list[DataIssue] = []
    layout = None if preset == "auto" else preset
    for source, record in read_records(path, max_record_bytes):
        if layout is None and isinstance(record, dict):
            layout = detect_preset(record) or ("custom" if prompt_field and answer_field else None)
            if layout is None:
                raise ValueError(
                    f"{source}: cannot detect the dataset layout from the fields "
                    f"{sorted(record)}; set task.math.preset (gsm8k, math, dapo) or "
                    "preset=custom with task.math.prompt_field and task.math.answer_field"
                )
        if isinstance(record, DataIssue):
            result: MathProblem | DataIssue = record
        elif layout is None:
            result = DataIssue(source, f"expected a JSON object, got {type(record).__name__}")
        else:
            result = _problem(record, source, layout, prompt_field, answer_field)
        if isinstance(result, MathProblem):
            problems.append(result)
        elif on_error == "refuse":
            raise ValueError(f"{result} (task.math.on_error=refuse; use skip to leave it out)")
        else:
            issues.append(result)
    if issues:
        shown = "\n  ".join(str(issue) for issue in issues[:_MAX_ISSUES_SHOWN])
        more = len(issues) - _MAX_ISSUES_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        warnings.warn(
            f"{path}: skipped {len(issues)} unusable record(s) (on_error=skip):\n  {shown}{tail}",
            stacklevel=2,
        )
    if not problems:
        raise ValueError(f"{path}: no usable problem (layout {layout or preset!r})")
    return problems, issues
