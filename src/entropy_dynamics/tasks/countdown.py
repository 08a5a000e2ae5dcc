"""Countdown (the TinyZero task): reach a target number from given numbers with + − × ÷.

Rules, shared by the generator, the solver and the reward:
- an answer is a bare arithmetic expression of integer literals, ``+ - * /`` and parentheses
  (no unary minus, no ``**``, no other syntax), e.g. ``(8-5)*7+1``; literals are plain decimal
  digits without leading zeros (``03``, ``3.0``, ``3_0`` are malformed); spaces are allowed;
- each literal is one of the given numbers, each number used at most once
  (exactly once with ``use_all_numbers=True``);
- arithmetic is exact over the rationals (:class:`fractions.Fraction`): ``/`` is true division and
  non-integer intermediate values are allowed (``(1+7/2)*2``); negative intermediates too;
- the answer is correct iff its exact value equals the target; division by zero is an error.

Prompt (one definition, :data:`PROMPT_TEMPLATE`): ``"3 5 7 8 -> 22: "``; the expected completion is
the expression followed by the model's EOS. The reward reads the completion only: it strips
surrounding whitespace and ignores everything after the first newline. Reference solutions
(:func:`solve`) are printed without spaces and with minimal parentheses, compound terms first and
numbers in decreasing order: ``"3 5 7 8 -> 22: "`` → ``5*3+7``, ``(5-3)*7+8``, ``8-(3-5)*7``, ...

Distinct solutions (``solve``, ``num_solutions``) are counted up to the rewriting rules of
commutativity and associativity of ``+`` and ``×``, together with the sign and reciprocal rules
``a-(b-c) = a-b+c`` and ``a/(b/c) = a*c/b``: every expression is flattened into a sum of signed
terms or a product of factors over a divisor, and both multisets are sorted. Nothing else is
applied: ``x*1`` and ``x/1`` are distinct from each other and from ``x``, signs do not move
through products (``8-(3-5)*7`` and ``(5-3)*7+8``), and distributivity is not used.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction
from math import comb

from entropy_dynamics.tasks._countdown_solver import MAX_SOLVER_NUMBERS, solve
from entropy_dynamics.tasks._problem_cache import cached
from entropy_dynamics.tasks.base import SPLITS, Split

__all__ = [
    "MAX_PAREN_DEPTH",
    "PROMPT_TEMPLATE",
    "CountdownConfig",
    "CountdownProblem",
    "CountdownReward",
    "CountdownTask",
    "format_prompt",
    "generate_problems",
    "score",
    "solve",
]

PROMPT_TEMPLATE = "{numbers} -> {target}: "
"""The prompt: space-separated numbers, ``->``, the target, ``": "`` (plain ASCII, char-level)."""

MAX_PAREN_DEPTH = 16
"""Answers nested deeper than this are refused before parsing (no recursion, no hang)."""


_HELD_OUT_SHARE = 4  # one key in 4 (by hash) is held out (validation or test), the rest train
_REWARD_ONLY = ("format_weight", "max_answer_chars")  # options that do not change the problems
_SIZE_OF = {"train": "n_train", "validation": "n_validation", "test": "n_test"}


@dataclass
class CountdownConfig:
    """Countdown generator and reward options (defaults: 3 numbers in 1..10, targets 1..50)."""

    min_numbers: int = 3
    """Fewest numbers in a problem (TinyZero: 3)."""
    max_numbers: int = 3
    """Most numbers in a problem (TinyZero: 4; at most 6, the solver is exhaustive). The embedded
    model is pretrained on 3 numbers, which puts its pass@1 in the 10–50 % band."""
    min_value: int = 1
    """Smallest operand."""
    max_value: int = 10
    """Largest operand (TinyZero: 99; small values keep the embedded model's task learnable)."""
    max_target: int = 50
    """Targets are drawn uniformly from ``1..max_target`` (TinyZero: 1..100)."""
    use_all_numbers: bool = False
    """False: each number at most once (TinyZero); True: every number exactly once."""
    seed: int = 0
    """Seed of the problem generator; the splits are a deterministic function of the config."""
    n_train: int = 2000
    """Problems in the training split."""
    n_validation: int = 200
    """Problems in the validation split: the trainer's in-run evaluations (``eval/*``), sweeps'
    selection, diagnostics (disjoint from the other splits by (sorted numbers, target))."""
    n_test: int = 200
    """Problems in the test split: final evaluations only (``final_eval.json``, ``eval``).
    Older configs' ``n_eval`` is read as ``n_validation = n_test = n_eval``."""
    min_solutions: int = 1
    """Keep problems with at least this many distinct solutions (1: every solvable problem)."""
    max_solutions: int | None = None
    """Keep problems with at most this many distinct solutions (None: no limit); fewer = harder."""
    format_weight: float = 0.0
    """Reward of a well-formed wrong answer: ``reward = correct + format_weight·format·(1−correct)``
    (0: the pure outcome reward of the paper)."""
    max_answer_chars: int = 64
    """Answers longer than this (after stripping) are refused unparsed, as ``too long``."""

    def __post_init__(self) -> None:
        # field: (lowest, highest) allowed, None = unbounded; checked in order, so a bound that
        # names an earlier field (max_numbers >= min_numbers) is already a valid integer
        bounds: dict[str, tuple[int | None, int | None]] = {
            "min_numbers": (2, MAX_SOLVER_NUMBERS),
            "max_numbers": (self.min_numbers, MAX_SOLVER_NUMBERS),
            "min_value": (1, None),
            "max_value": (self.min_value, None),
            "max_target": (1, None),
            "seed": (None, None),
            "n_train": (1, None),
            "n_validation": (0, None),
            "n_test": (0, None),
            "min_solutions": (1, None),
            "max_solutions": (self.min_solutions, None),
            "max_answer_chars": (1, 1024),
        }
        for name, (lowest, highest) in bounds.items():
            value = getattr(self, name)
            if name == "max_solutions" and value is None:
                continue
            extra = " (or None: no limit)" if name == "max_solutions" else ""
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer{extra}, got {value!r}")
            too_low = lowest is not None and value < lowest
            if too_low or (highest is not None and value > highest):
                rule = f">= {lowest}" if highest is None else f"in [{lowest}, {highest}]"
                raise ValueError(f"{name} must be {rule}{extra}, got {value}")
        if not isinstance(self.use_all_numbers, bool):
            raise ValueError(f"use_all_numbers must be true or false, got {self.use_all_numbers!r}")
        weight = self.format_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ValueError(f"format_weight must be a number in [0, 1], got {weight!r}")


def format_prompt(numbers: tuple[int, ...] | list[int], target: int) -> str:
    """The prompt of a problem: ``format_prompt((3, 5, 7, 8), 22) == "3 5 7 8 -> 22: "``."""
    return PROMPT_TEMPLATE.format(numbers=" ".join(map(str, numbers)), target=target)


@dataclass(frozen=True)
class CountdownProblem:
    """One problem: reach ``target`` from ``numbers`` (in the order shown in the prompt)."""

    numbers: tuple[int, ...]
    target: int
    num_solutions: int
    """Distinct canonical solutions under the generating config's rules (see module docstring)."""

    @property
    def prompt(self) -> str:
        return format_prompt(self.numbers, self.target)


@dataclass(frozen=True)
class CountdownReward:
    """The score of one completion (see :func:`score`)."""

    format: float
    """1.0 if the answer is a well-formed expression of integer literals, ``+ - * /``, parens."""
    correct: float
    """1.0 if it uses only the given numbers under the rules and its exact value is the target."""
    reward: float
    """``correct + format_weight · format · (1 − correct)``."""
    error: str | None
    """Why it is not correct: ``malformed``, ``too long``, ``too deep``, ``number not available``,
    ``number reused``, ``not all numbers used``, ``division by zero``, ``wrong value``; None if
    correct."""


# ---------------------------------------------------------------------------------------------
# Reward.

_ANSWER_CHARS = re.compile(r"[0-9+\-*/() ]+")
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_DEFAULT_CONFIG = CountdownConfig()


class _Refused(Exception):
    def __init__(self, error: str) -> None:
        self.error = error


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def _parse(answer: str, max_chars: int) -> ast.expr:
    """The syntax tree of a whitelisted expression, or :class:`_Refused` (cheap checks first)."""
    if len(answer) > max_chars:
        raise _Refused("too long")
    if not _ANSWER_CHARS.fullmatch(answer):
        raise _Refused("malformed")
    if _paren_depth(answer) > MAX_PAREN_DEPTH:
        raise _Refused("too deep")
    try:
        tree = ast.parse(answer, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _Refused("malformed") from None
    for node in ast.walk(tree):  # iterative: no recursion on deep trees
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _OPERATORS:
                raise _Refused("malformed")  # ** // % and bit operators
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int:
                raise _Refused("malformed")
        elif not isinstance(node, ast.operator):
            raise _Refused("malformed")  # unary minus, names, calls, ...
    return tree


def _literals(tree: ast.expr) -> list[int]:
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]


def _value(node: ast.expr) -> Fraction:
    """Exact value; recursion depth is at most the number of literals (≤ the numbers given)."""
    if isinstance(node, ast.Constant):
        return Fraction(node.value)
    left, right = _value(node.left), _value(node.right)
    op = _OPERATORS[type(node.op)]
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if not right:
        raise _Refused("division by zero")
    return left / right


def _answer_text(completion: str) -> str:
    return completion.strip().split("\n", 1)[0].strip()


def score(
    problem: CountdownProblem, completion: str, config: CountdownConfig | None = None
) -> CountdownReward:
    """Score a completion (the text after the prompt) under the rules in the module docstring.

    The answer is the first line of the stripped completion. It is refused unparsed if longer
    than ``config.max_answer_chars``, if it holds any character outside ``0-9 + - * / ( )`` and
    space, or if parentheses nest deeper than :data:`MAX_PAREN_DEPTH`; then it is parsed with
    ``ast.parse(mode="eval")`` against a whitelist (binary ``+ - * /`` and integer literals) and
    evaluated exactly with :class:`fractions.Fraction`. Nothing is ever ``eval``-ed.
    """
    config = _DEFAULT_CONFIG if config is None else config
    answer = _answer_text(completion)
    well_formed = 0.0
    try:
        tree = _parse(answer, config.max_answer_chars)
        well_formed = 1.0
        available = Counter(problem.numbers)
        literals = _literals(tree)
        if any(n not in available for n in literals):
            raise _Refused("number not available")
        used = Counter(literals)
        if any(used[n] > available[n] for n in used):
            raise _Refused("number reused")
        if config.use_all_numbers and used != available:
            raise _Refused("not all numbers used")
        if _value(tree) != problem.target:
            raise _Refused("wrong value")
    except _Refused as refused:
        reward = config.format_weight * well_formed
        return CountdownReward(format=well_formed, correct=0.0, reward=reward, error=refused.error)
    return CountdownReward(format=1.0, correct=1.0, reward=1.0, error=None)


# ---------------------------------------------------------------------------------------------
# Generator.


def _split_of(numbers: tuple[int, ...], target: int, seed: int) -> Split:
    """The split of a problem key (disjoint splits by construction): bits 0-1 of its digest
    decide train (3 keys in 4, as before validation and test existed) or held out; bit 2,
    independent of them, validation or test (1 key in 8 each)."""
    key = f"{seed}|{sorted(numbers)}|{target}".encode()
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    if digest % _HELD_OUT_SHARE:
        return "train"
    return "validation" if (digest // _HELD_OUT_SHARE) % 2 == 0 else "test"


def generate_problems(config: CountdownConfig, split: Split) -> list[CountdownProblem]:
    """The ``split`` (train, validation, test) of the problem set of ``config`` (deterministic).

    Each split draws from its own stream, seeded by the config's seed and the split's name: the
    count of numbers uniformly in ``[min_numbers, max_numbers]``, the numbers uniformly with
    replacement in ``[min_value, max_value]`` and the target uniformly in ``1..max_target``; it
    keeps a draw if its key ``(sorted numbers, target)`` hashes into ``split`` (:func:`_split_of`:
    disjoint splits whatever their sizes), is new in the split, has no target among its numbers
    and has between ``min_solutions`` and ``max_solutions`` distinct solutions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    wanted = getattr(config, _SIZE_OF[split])
    rng = random.Random(f"countdown|{config.seed}|{split}")
    max_draws = 1000 * wanted + 10_000
    # distinct keys: multisets of `count` values from `span` (stars and bars) times targets
    span = config.max_value - config.min_value + 1
    counts = range(config.min_numbers, config.max_numbers + 1)
    n_keys = config.max_target * sum(comb(span + count - 1, count) for count in counts)
    problems: list[CountdownProblem] = []
    drawn: set[tuple[tuple[int, ...], int]] = set()
    for _ in range(max_draws):
        if len(problems) == wanted or len(drawn) == n_keys:
            break
        count = rng.randint(config.min_numbers, config.max_numbers)
        numbers = tuple(rng.randint(config.min_value, config.max_value) for _ in range(count))
        target = rng.randint(1, config.max_target)
        key = (tuple(sorted(numbers)), target)
        if key in drawn:
            continue
        drawn.add(key)
        if target in numbers or _split_of(numbers, target, config.seed) != split:
            continue
        solutions = len(solve(numbers, target, use_all=config.use_all_numbers))
        if solutions < config.min_solutions:
            continue
        if config.max_solutions is not None and solutions > config.max_solutions:
            continue
        problems.append(CountdownProblem(numbers=numbers, target=target, num_solutions=solutions))
    if len(problems) == wanted:
        return problems
    searched = (
        f"all {n_keys} (numbers, target) keys"
        if len(drawn) == n_keys
        else f"{max_draws} draws ({len(drawn)} of {n_keys} keys)"
    )
    size = _SIZE_OF[split]
    raise ValueError(
        f"{size}: found only {len(problems)} of {wanted} problems in {searched}; lower {size} or "
        "widen min_value..max_value, max_numbers, max_target or the solution-count window "
        "(use_all_numbers=True also leaves fewer solvable problems)"
    )


class CountdownTask:
    """Countdown as a :class:`~entropy_dynamics.tasks.base.Task` (splits generated on first use)."""

    name = "countdown"

    def __init__(self, config: CountdownConfig | None = None) -> None:
        self.config = CountdownConfig() if config is None else config
        self._splits: dict[str, list[CountdownProblem]] = {}

    def _split(self, split: Split) -> list[CountdownProblem]:
        if split not in self._splits:  # generated once per config, then read from the cache
            # the options the split depends on: not the reward's, nor the other splits' sizes
            ignored = {*_REWARD_ONLY, *_SIZE_OF.values()} - {_SIZE_OF[split]}
            generator = {k: v for k, v in asdict(self.config).items() if k not in ignored}

            def generate() -> list[list]:
                problems = generate_problems(self.config, split)
                return [[list(p.numbers), p.target, p.num_solutions] for p in problems]

            records = cached("countdown", {"config": generator, "split": split}, generate)
            self._splits[split] = [CountdownProblem(tuple(n), t, s) for n, t, s in records]
        return list(self._splits[split])

    def train_problems(self) -> list[CountdownProblem]:
        return self._split("train")

    def validation_problems(self) -> list[CountdownProblem]:
        return self._split("validation")

    def test_problems(self) -> list[CountdownProblem]:
        return self._split("test")

    def prompt(self, problem: CountdownProblem) -> str:
        return problem.prompt

    def score(self, problem: CountdownProblem, completion: str) -> CountdownReward:
        return score(problem, completion, self.config)

    def reference_solutions(self, problem: CountdownProblem) -> list[str]:
        return solve(problem.numbers, problem.target, use_all=self.config.use_all_numbers)
