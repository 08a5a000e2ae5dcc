"""Search traces of Countdown: several bounded search strategies that print what they try.

The trace grammar (documented with an example in :mod:`.countdown_search`), one item per line:

- ``big op small=result [state]``: an operation on two numbers of the current state (the larger
  operand first; ``-`` and ``/`` only when the result is a positive integer) and the state it
  leaves, its numbers in increasing order; `` dead end`` follows when that state has one number
  left and it misses the target;
- ``back [state]``: the search returns to a state it reached before (backtracking);
- ``answer: expression`` (the solution, with minimal parentheses) or ``answer: none`` (the node
  cap, the character budget or the search space ran out): always the last line.

A state is reached at most once per trace (a closed set by the sorted values). Each strategy is
a deterministic function of the problem, its options and the seed; they differ in the order they
try operations, so their traces differ in length and quality, and some end in ``answer: none``:

- ``dfs_smallest``: depth-first, pairs of the smallest numbers first, operations ``+ - * /``;
- ``dfs_largest``: depth-first, pairs of the largest numbers first, operations ``* + - /``;
- ``dfs_random``: depth-first, the operations of each state in a seeded random order;
- ``best_first``: best-first by distance to the target (the smallest ``|number − target|`` in
  the state an operation leaves), ties first come first served.
"""

from __future__ import annotations

import heapq
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count

__all__ = [
    "ANSWER_PREFIX",
    "GIVE_UP",
    "STRATEGIES",
    "ParsedTrace",
    "TraceStep",
    "parse_trace",
    "search_trace",
]

ANSWER_PREFIX = "answer: "
"""The final line: this prefix, then the expression that is graded."""
GIVE_UP = "none"
"""The final line's answer when the search found nothing."""
DEAD_END = " dead end"
BACK = "back"

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEAF = 3
_Item = tuple[int, str, int]  # (value, expression text, precedence of its top operator)
_State = tuple[_Item, ...]  # sorted by value, then text
_Edge = tuple[int, int, str]  # (index of the larger operand, index of the smaller, operator)


def _combine(big: _Item, small: _Item, op: str) -> _Item | None:
    """``big op small`` as an item, or None if not a positive integer (``-``, ``/``)."""
    a, b = big[0], small[0]
    if op == "+":
        value = a + b
    elif op == "*":
        value = a * b
    elif op == "-":
        value = a - b
    else:
        value = a // b if b and a % b == 0 else 0
    if value <= 0 and op in "-/":
        return None
    level = _PRECEDENCE[op]
    left = big[1] if big[2] >= level else f"({big[1]})"
    right = small[1] if small[2] > level or (small[2] == level and op in "+*") else f"({small[1]})"
    return (value, f"{left}{op}{right}", level)


def _values(state: _State) -> str:
    return "[" + " ".join(str(item[0]) for item in state) + "]"


def _key(state: _State) -> tuple[int, ...]:
    return tuple(item[0] for item in state)


def _apply(state: _State, edge: _Edge) -> tuple[_State, _Item] | None:
    i, j, op = edge
    made = _combine(state[i], state[j], op)
    if made is None:
        return None
    rest = [item for k, item in enumerate(state) if k not in (i, j)]
    return tuple(sorted([*rest, made])), made


def _edges(state: _State, ops: str, largest_first: bool = False) -> list[_Edge]:
    """Every (larger, smaller, op) of two numbers of ``state``: pairs in increasing order of
    their larger, then smaller number (decreasing if ``largest_first``), ``ops`` in order."""
    pairs = [(j, i) for j in range(len(state)) for i in range(j)]
    pairs = pairs[::-1] if largest_first else pairs
    return [(big, small, op) for big, small in pairs for op in ops]


def _shuffled(state: _State, rng: random.Random) -> list[_Edge]:
    edges = _edges(state, "+-*/")
    rng.shuffle(edges)
    return edges


@dataclass
class _Writer:
    """The trace so far, the current state, and the caps that end it."""

    max_nodes: int
    max_chars: int
    reserve: int  # characters kept for the final line
    current: tuple[int, ...]
    lines: list[str]
    chars: int = 0
    nodes: int = 0

    def step(self, parent: _State, edge: _Edge, child: _State, made: _Item, dead: bool) -> bool:
        """Print one operation (after ``back`` if it starts elsewhere); False: a cap is hit."""
        big, small = parent[edge[0]][0], parent[edge[1]][0]
        new = [] if _key(parent) == self.current else [f"{BACK} {_values(parent)}"]
        new.append(f"{big}{edge[2]}{small}={made[0]} {_values(child)}{DEAD_END if dead else ''}")
        chars = self.chars + sum(len(line) + 1 for line in new)
        if self.nodes >= self.max_nodes or chars + self.reserve > self.max_chars:
            return False
        self.lines += new
        self.chars, self.nodes, self.current = chars, self.nodes + 1, _key(child)
        return True


_Order = Callable[[_State, random.Random], list[_Edge]]
_ORDERS: dict[str, _Order] = {
    "dfs_smallest": lambda state, rng: _edges(state, "+-*/"),
    "dfs_largest": lambda state, rng: _edges(state, "*+-/", largest_first=True),
    "dfs_random": _shuffled,
}
STRATEGIES: tuple[str, ...] = (*_ORDERS, "best_first")
"""The search strategies, by name (see the module docstring)."""


def _depth_first(root: _State, order: _Order, rng: random.Random) -> Iterator[tuple]:
    """(parent, edge, child, made) in depth-first order; the caller says which to expand."""
    stack: list[tuple[_State, Iterator[_Edge]]] = [(root, iter(order(root, rng)))]
    while stack:
        state, edges = stack[-1]
        edge = next(edges, None)
        if edge is None:
            stack.pop()
            continue
        applied = _apply(state, edge)
        if applied is not None:
            expand = yield (state, edge, *applied)
            if expand:
                stack.append((applied[0], iter(order(applied[0], rng))))


def _best_first(root: _State, target: int) -> Iterator[tuple]:
    """(parent, edge, child, made), the open operation whose child is nearest the target first."""
    ties = count()
    heap: list[tuple[int, int, _State, _Edge, _State, _Item]] = []

    def push(state: _State) -> None:
        for edge in _edges(state, "+-*/"):
            applied = _apply(state, edge)
            if applied is not None:
                distance = min(abs(item[0] - target) for item in applied[0])
                heapq.heappush(heap, (distance, next(ties), state, edge, *applied))

    push(root)
    while heap:
        _, _, state, edge, child, made = heapq.heappop(heap)
        if (yield (state, edge, child, made)):
            push(child)


def search_trace(
    numbers: tuple[int, ...] | list[int],
    target: int,
    strategy: str,
    *,
    use_all: bool = False,
    max_nodes: int = 32,
    max_chars: int = 512,
    seed: int = 0,
) -> str:
    """The trace of one ``strategy`` on the problem, ending in its ``answer:`` line.

    Args:
        numbers, target: the problem (non-negative integers).
        strategy: one of :data:`STRATEGIES`.
        use_all: every number exactly once (a solution is a state holding only the target) or
            at most once (an operation whose result is the target solves it).
        max_nodes: the node cap, operations printed before the search gives up.
        max_chars: the whole trace (final line included) is at most this long.
        seed: with the problem and the strategy, seeds the random operand orders.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    root: _State = tuple(sorted((n, str(n), _LEAF) for n in numbers))
    # a solution has len(numbers) literals, one operator fewer and at most 2 parentheses each
    longest = sum(len(str(n)) for n in numbers) + 3 * max(len(numbers) - 1, 0)
    reserve = len(ANSWER_PREFIX) + max(longest, len(GIVE_UP))
    writer = _Writer(max_nodes, max_chars, reserve, _key(root), [])
    rng = random.Random(f"{seed}|{sorted(numbers)}|{target}|{strategy}")
    search = (
        _best_first(root, target) if strategy == "best_first"
        else _depth_first(root, _ORDERS[strategy], rng)
    )  # fmt: skip
    seen: set[tuple[int, ...]] = {_key(root)}
    expand, found = None, None
    try:
        while found is None:
            parent, edge, child, made = search.send(expand)
            expand = False
            if _key(child) in seen:
                continue
            seen.add(_key(child))
            solved = _key(child) == (target,) if use_all else made[0] == target
            dead = len(child) == 1 and not solved
            if not writer.step(parent, edge, child, made, dead):
                break
            if solved:
                found = made[1]  # with use_all, the child holds only this item
            expand = not dead
    except StopIteration:
        pass
    answer = found if found is not None else GIVE_UP
    if len(ANSWER_PREFIX) + len(answer) > max_chars:
        raise ValueError(f"max_chars={max_chars} cannot hold even the final line")
    return "\n".join([*writer.lines, ANSWER_PREFIX + answer])


# ---------------------------------------------------------------------------------------------
# Parsing.

_NUMBERS = r"\[(\d+(?: \d+)*)\]"
_STEP = re.compile(rf"(\d+)([+\-*/])(\d+)=(\d+) {_NUMBERS}({re.escape(DEAD_END)})?")
_BACK = re.compile(rf"{BACK} {_NUMBERS}")


@dataclass(frozen=True)
class TraceStep:
    """One line of a trace before its answer: an operation or a return to an earlier state."""

    state: tuple[int, ...]
    """The state after the line (after the operation, or the state returned to)."""
    operation: tuple[int, str, int, int] | None = None
    """``(left, op, right, result)`` as printed; None for a ``back`` line."""
    dead_end: bool = False
    """The line says the state it leaves is a dead end."""


@dataclass(frozen=True)
class ParsedTrace:
    """A trace read line by line (see the grammar in the module docstring)."""

    steps: tuple[TraceStep, ...]
    """The parsed lines before the final line, in order."""
    answer: str | None
    """The final line's text after ``answer: `` (``none`` too); None without a final line."""
    unreadable: tuple[str, ...] = ()
    """Lines before the final one that follow no rule of the grammar."""


def parse_trace(text: str) -> ParsedTrace:
    """Read a trace; the final line is the last non-empty line if it starts with ``answer: ``."""
    lines = [line.strip() for line in text.strip().split("\n")]
    answer = None
    if lines and lines[-1].startswith(ANSWER_PREFIX.strip()):
        answer = lines.pop()[len(ANSWER_PREFIX.strip()) :].strip()
    steps, unreadable = [], []
    for line in lines:
        if (match := _STEP.fullmatch(line)) is not None:
            left, op, right, result, state, dead = match.groups()
            operation = (int(left), op, int(right), int(result))
            numbers = tuple(map(int, state.split()))
            steps.append(TraceStep(numbers, operation, dead is not None))
        elif (match := _BACK.fullmatch(line)) is not None:
            steps.append(TraceStep(tuple(map(int, match.group(1).split()))))
        elif line:
            unreadable.append(line)
    return ParsedTrace(tuple(steps), answer, tuple(unreadable))
