"""Math word problems as a task: the dataset and grading options, the splits, the prompt and the
outcome reward, graded by answer equivalence with ``math-verify``.

The paper trains on DAPO-Math-17k and evaluates on AIME24/25, AMC23 and DAPO500; the record
layouts a dataset file may have, their detection and the loading live in :mod:`.math_problems`
(re-exported here).

The three splits (:mod:`.base`): a split the user names a file for (``validation_path``,
``test_path``) is that file, whole; the others are held out of the training file ``path``:
``validation_size + test_size`` distinct questions, drawn by a seeded shuffle, divided between
validation and test by a seeded hash of the question text. Identical questions stay together, and
a training question also in a named file leaves training, so the splits are disjoint. Older
configs' ``eval_path`` (one held-out file) is divided between validation and test by the same
hash, and their ``eval_size`` is read as ``validation_size + test_size``; the training problems
of an older config are the same as before.

The prompt is ``prompt_template`` with ``{question}`` replaced by the problem text; chat
templates are applied around it elsewhere (:mod:`entropy_dynamics.training.prompts`). The reward
is the outcome reward of the paper: 1 if the answer is equivalent to the gold, else 0 (see
:mod:`._math_grading` for extraction, equivalence and the time bound).
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks._math_grading import extract_boxed, grade_completions
from entropy_dynamics.tasks._records import MAX_RECORD_BYTES, SUFFIXES, DataIssue
from entropy_dynamics.tasks.base import Split
from entropy_dynamics.tasks.math_problems import (
    PRESETS,
    MathProblem,
    detect_preset,
    gsm8k_final_answer,
    load_problems,
)

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


@dataclass
class MathConfig:
    """Math dataset and grading options (``task.math.*``)."""

    path: str = ""
    """Training data file (``.jsonl``, ``.json`` or ``.parquet``); required when
    ``task.name=math``."""
    validation_path: str = ""
    """The validation split's file (same layouts), used whole; empty: ``validation_size``
    problems of ``path`` are held out for it."""
    test_path: str = ""
    """The test split's file (e.g. a benchmark), used whole; empty: ``test_size`` problems of
    ``path`` are held out for it."""
    eval_path: str = ""
    """One held-out file for both (older configs' name): its distinct questions divided by the
    seeded hash of their text, the first half in hash order validation, the rest test; not
    together with ``validation_path`` or ``test_path``."""
    validation_size: int = 32
    """Distinct questions of ``path`` held out as the validation split when no file names it.
    Older configs' ``eval_size`` is read as ``validation_size = eval_size // 2`` and
    ``test_size`` the rest (the same training problems as before)."""
    test_size: int = 32
    """Distinct questions of ``path`` held out as the test split when no file names it."""
    seed: int = 0
    """Seed of the held-out problems (the shuffle that picks them, the hash that divides them)."""
    preset: Literal["auto", "gsm8k", "math", "dapo", "custom"] = "auto"
    """Record layout (:mod:`.math_problems`); ``auto`` detects it from the first record."""
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
        for name in ("path", "validation_path", "test_path", "eval_path"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"task.math.{name}: expected a file path, got {value!r}")
            if value and Path(value).suffix.lower() not in SUFFIXES:
                raise ConfigError(
                    f"task.math.{name}: {value!r} is not a {', '.join(SUFFIXES)} file"
                )
        for name, lowest in (
            ("validation_size", 0), ("test_size", 0), ("max_problems", 0), ("seed", None),
            ("max_record_bytes", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"task.math.{name}: expected an integer, got {value!r}")
            if lowest is not None and value < lowest:
                raise ConfigError(f"task.math.{name}: must be >= {lowest}, got {value}")
        if self.eval_path and (self.validation_path or self.test_path):
            raise ConfigError(
                "task.math.eval_path: give either one held-out file (eval_path, divided between "
                "validation and test) or validation_path / test_path, not both"
            )
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


def _hash_order(questions: list[str], seed: int) -> list[str]:
    """``questions`` ordered by a seeded hash of their text: an order that depends on each
    question's text only, not on its place in a file."""

    def digest(question: str) -> bytes:
        return hashlib.blake2b(f"math|{seed}|{question}".encode(), digest_size=8).digest()

    return sorted(questions, key=lambda question: (digest(question), question))


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

    def _split(self, split: Split) -> list[MathProblem]:
        if self._splits is None:
            self._splits = self._make_splits()
        return list(self._splits[split])

    def _make_splits(self) -> dict[str, list[MathProblem]]:
        config = self.config
        problems = self._load(config.path, "path")
        named = self._named_files()
        # a training question also in a named file leaves training: the splits are disjoint
        in_files = {p.question for split in named.values() for p in split}
        train = [p for p in problems if p.question not in in_files]
        if len(train) < len(problems):
            files = " / ".join(
                getattr(config, f) for f in ("eval_path", "validation_path", "test_path")
                if getattr(config, f)
            )  # fmt: skip
            warnings.warn(
                f"{config.path}: {len(problems) - len(train)} training problem(s) also in "
                f"{files} were left out of training (the splits must be disjoint)",
                stacklevel=3,
            )
        sizes = {"validation": config.validation_size, "test": config.test_size}
        wanted = {split: n for split, n in sizes.items() if split not in named}
        if wanted:  # held out of the training file, whole groups of identical questions
            questions = list(dict.fromkeys(p.question for p in train))
            total = sum(wanted.values())
            if len(questions) <= total:
                fields = " / ".join(f"task.math.{split}_size" for split in wanted)
                raise ConfigError(
                    f"{fields}: {config.path} has {len(questions)} distinct problems, too few to "
                    f"hold out {total} and train on the rest; lower {fields} or name the "
                    "files (task.math.validation_path, task.math.test_path)"
                )
            random.Random(f"math|{config.seed}").shuffle(questions)
            held = _hash_order(questions[:total], config.seed)
            start = 0
            for split, n in wanted.items():
                chosen = set(held[start : start + n])
                named[split] = [p for p in train if p.question in chosen]
                start += n
            train = [p for p in train if p.question not in set(held)]
        if not train:
            raise ConfigError(f"task.math.path: no training problem left in {config.path}")
        if config.max_problems:
            train = train[: config.max_problems]
        return {"train": train, **named}

    def _named_files(self) -> dict[str, list[MathProblem]]:
        """The splits the user named files for, disjoint (a question of the test file leaves
        the validation file)."""
        config = self.config
        if config.eval_path:  # one held-out file, divided in two by the hash of the question
            held = self._load(config.eval_path, "eval_path")
            order = _hash_order(list(dict.fromkeys(p.question for p in held)), config.seed)
            first_half = set(order[: len(order) // 2])
            return {
                "validation": [p for p in held if p.question in first_half],
                "test": [p for p in held if p.question not in first_half],
            }
        named = {}
        if config.validation_path:
            named["validation"] = self._load(config.validation_path, "validation_path")
        if config.test_path:
            named["test"] = self._load(config.test_path, "test_path")
        if len(named) == 2:
            test = {p.question for p in named["test"]}
            validation = [p for p in named["validation"] if p.question not in test]
            if len(validation) < len(named["validation"]):
                warnings.warn(
                    f"{config.validation_path}: {len(named['validation']) - len(validation)} "
                    f"problem(s) also in {config.test_path} were left out of validation (the "
                    "splits must be disjoint)",
                    stacklevel=4,
                )
            named["validation"] = validation
        return named

    def train_problems(self) -> list[MathProblem]:
        return self._split("train")

    def validation_problems(self) -> list[MathProblem]:
        return self._split("validation")

    def test_problems(self) -> list[MathProblem]:
        return self._split("test")

    def prompt(self, problem: MathProblem) -> str:
        # replace, not str.format: the template's "\boxed{}" is not a format field
        return self.config.prompt_template.replace("{question}", problem.question)

    def score(self, problem: MathProblem, completion: str) -> MathReward:
        return score(problem, completion, self.config)

    def score_many(self, problems: list[MathProblem], completions: list[str]) -> list[MathReward]:
        return score_many(problems, completions, self.config)

    def reference_solutions(self, problem: MathProblem) -> list[str]:
        return [f"\\boxed{{{problem.answer}}}"]
