"""Math word problems from a dataset file, graded by answer equivalence with ``math-verify``.

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

The prompt is ``prompt_template`` with ``{question}`` replaced by the problem text; chat
templates are applied around it elsewhere (:mod:`entropy_dynamics.training.prompts`). The reward
is the outcome reward of the paper: 1 if the answer is equivalent to the gold, else 0 (see
:mod:`._math_grading` for extraction, equivalence and the time bound).
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks._math_grading import extract_boxed, grade_completions
from entropy_dynamics.tasks._records import MAX_RECORD_BYTES, SUFFIXES, DataIssue, read_records

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "PRESETS",
    "DataIssue",
    "MathConfig",
    "MathProblem",
    "MathReward",
    "MathTask",
    "detect_preset",
    "extract_boxed",
    "gsm8k_final_answer",
    "load_problems",
    "score",
]

DEFAULT_PROMPT_TEMPLATE = (
    "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
)
"""The Qwen2.5-Math instruction, used by the paper's verl recipes for DAPO-Math-17k."""

PRESETS = ("auto", "gsm8k", "math", "dapo", "custom")

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


@dataclass
class MathConfig:
    """Math dataset and grading options (``task.math.*``)."""

    path: str = ""
    """Training data file (``.jsonl``, ``.json`` or ``.parquet``); required when
    ``task.name=math``."""
    eval_path: str = ""
    """Held-out data file in the same layout; empty: ``eval_size`` problems of ``path`` are held
    out (seeded), disjoint from training by question text."""
    eval_size: int = 64
    """Problems held out of ``path`` when ``eval_path`` is empty (ignored otherwise)."""
    seed: int = 0
    """Seed of the held-out split."""
    preset: Literal["auto", "gsm8k", "math", "dapo", "custom"] = "auto"
    """Record layout (module docstring); ``auto`` detects it from the first record."""
    prompt_field: str = ""
    """Field holding the problem text, overriding the preset's (dotted path for nested)."""
    answer_field: str = ""
    """Field holding the gold answer, overriding the preset's; read with the preset's rule
    (gsm8k: after ``####``; math: last ``\\boxed{}``; dapo, custom: the value)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """The prompt; ``{question}`` is replaced by the problem text (Qwen2.5-Math's instruction)."""
    on_error: Literal["skip", "refuse"] = "skip"
    """Unusable records: ``skip`` them with a warning naming each file:line and why, or
    ``refuse`` the file at the first one."""
    max_problems: int = 0
    """Use at most this many training problems, the first ones in file order (0: all)."""
    format_weight: float = 0.0
    """Reward of a found but wrong answer: ``reward = correct + format_weight·format·(1−correct)``
    (0: the pure outcome reward of the paper)."""
    grading_timeout: float = 5.0
    """Seconds allowed to grade one completion (math-verify's default per operation); a
    completion over the limit is graded wrong."""
    max_record_bytes: int = MAX_RECORD_BYTES
    """Longest JSON Lines record (bytes, 1 MiB); a longer line is an unusable record, found
    without reading it into memory."""

    def __post_init__(self) -> None:
        for name in ("path", "eval_path"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"task.math.{name}: expected a file path, got {value!r}")
            if value and Path(value).suffix.lower() not in SUFFIXES:
                raise ConfigError(
                    f"task.math.{name}: {value!r} is not a {', '.join(SUFFIXES)} file"
                )
        for name, lowest in (
            ("eval_size", 1), ("max_problems", 0), ("seed", None), ("max_record_bytes", 1)
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"task.math.{name}: expected an integer, got {value!r}")
            if lowest is not None and value < lowest:
                raise ConfigError(f"task.math.{name}: must be >= {lowest}, got {value}")
        if self.preset not in PRESETS:
            raise ConfigError(
                f"task.math.preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}"
            )
        if self.preset == "custom" and not (self.prompt_field and self.answer_field):
            raise ConfigError(
                "task.math.prompt_field / task.math.answer_field: preset=custom needs both"
            )
        if self.on_error not in ("skip", "refuse"):
            raise ConfigError(f"task.math.on_error: must be skip or refuse, got {self.on_error!r}")
        if not isinstance(self.prompt_template, str) or "{question}" not in self.prompt_template:
            raise ConfigError("task.math.prompt_template: must contain the placeholder {question}")
        weight = self.format_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ConfigError(f"task.math.format_weight: must be in [0, 1], got {weight!r}")
        timeout = self.grading_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"task.math.grading_timeout: must be > 0 seconds, got {timeout!r}")


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


@dataclass(frozen=True)
class MathReward:
    """The score of one completion (see :func:`score`)."""

    format: float
    """1.0 if an answer was found (a ``\\boxed{}``, or a final answer in the text)."""
    correct: float
    """1.0 if it is equivalent to the gold answer under ``math-verify``."""
    reward: float
    """``correct + format_weight · format · (1 − correct)``."""
    extracted: str | None
    """The boxed content (or the text searched), for inspection."""
    error: str | None
    """``no answer``, ``empty answer``, ``answer too long``, ``wrong answer``, ``timeout``,
    ``grader error: ...``; None if correct."""


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


def score(problem: MathProblem, completion: str, config: MathConfig | None = None) -> MathReward:
    """Grade ``completion`` against ``problem.answer`` (see :mod:`._math_grading`)."""
    return score_many([problem], [completion], config)[0]


def score_many(
    problems: list[MathProblem], completions: list[str], config: MathConfig | None = None
) -> list[MathReward]:
    """:func:`score` of each pair, graded as one batch by the worker pool."""
    config = MathConfig() if config is None else config
    pairs = [(p.answer, c) for p, c in zip(problems, completions, strict=True)]
    rewards = []
    for fmt, correct, extracted, error in grade_completions(pairs, config.grading_timeout):
        reward = correct + config.format_weight * fmt * (1.0 - correct)
        rewards.append(
            MathReward(format=fmt, correct=correct, reward=reward, extracted=extracted, error=error)
        )
    return rewards


class MathTask:
    """A math dataset as a :class:`~entropy_dynamics.tasks.base.Task` (loaded on first use)."""

    name = "math"

    def __init__(self, config: MathConfig | None = None) -> None:
        self.config = MathConfig() if config is None else config
        self.issues: list[DataIssue] = []
        """Records skipped while loading (``on_error=skip``), training file first."""
        self._splits: dict[str, list[MathProblem]] | None = None

    def _load(self, path: str, field_name: str) -> list[MathProblem]:
        if not path:
            raise ConfigError(f"task.math.{field_name}: no data file given")
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"task.math.{field_name}: {path} does not exist")
        config = self.config
        problems, issues = load_problems(
            Path(path).expanduser(),
            config.preset,
            config.prompt_field,
            config.answer_field,
            config.on_error,
            config.max_record_bytes,
        )
        self.issues.extend(issues)
        return problems

    def _split(self, split: Literal["train", "eval"]) -> list[MathProblem]:
        if self._splits is None:
            self._splits = self._make_splits()
        return list(self._splits[split])

    def _make_splits(self) -> dict[str, list[MathProblem]]:
        config = self.config
        problems = self._load(config.path, "path")
        if config.eval_path:
            held_out = self._load(config.eval_path, "eval_path")
            held_questions = {p.question for p in held_out}
            train = [p for p in problems if p.question not in held_questions]
            if len(train) < len(problems):
                warnings.warn(
                    f"{config.path}: {len(problems) - len(train)} training problem(s) also in "
                    f"{config.eval_path} were left out of training (the splits must be disjoint)",
                    stacklevel=3,
                )
        else:
            # hold out whole groups of identical questions, so the splits are disjoint
            questions = list(dict.fromkeys(p.question for p in problems))
            if len(questions) <= config.eval_size:
                raise ConfigError(
                    f"task.math.eval_size: {config.path} has {len(questions)} distinct "
                    f"problems, too few to hold out {config.eval_size} and train on the rest; "
                    "lower eval_size or give task.math.eval_path"
                )
            random.Random(f"math|{config.seed}").shuffle(questions)
            chosen = set(questions[: config.eval_size])
            held_out = [p for p in problems if p.question in chosen]
            train = [p for p in problems if p.question not in chosen]
        if not train:
            raise ConfigError(f"task.math.path: no training problem left in {config.path}")
        if config.max_problems:
            train = train[: config.max_problems]
        return {"train": train, "eval": held_out}

    def train_problems(self) -> list[MathProblem]:
        return self._split("train")

    def eval_problems(self) -> list[MathProblem]:
        return self._split("eval")

    def prompt(self, problem: MathProblem) -> str:
        # replace, not str.format: the template's "\boxed{}" is not a format field
        return self.config.prompt_template.replace("{question}", problem.question)

    def score(self, problem: MathProblem, completion: str) -> MathReward:
        return score(problem, completion, self.config)

    def score_many(self, problems: list[MathProblem], completions: list[str]) -> list[MathReward]:
        return score_many(problems, completions, self.config)

    def reference_solutions(self, problem: MathProblem) -> list[str]:
        return [f"\\boxed{{{problem.answer}}}"]
