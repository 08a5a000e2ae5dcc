"""Exhaustive Countdown solver: every distinct solution, canonicalised (see :mod:`.countdown`)."""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from itertools import combinations
from operator import itemgetter

__all__ = ["MAX_SOLVER_NUMBERS", "solve"]

MAX_SOLVER_NUMBERS = 6
"""The exhaustive solver's limit; its cost grows super-exponentially with the count of numbers."""


# ---------------------------------------------------------------------------------------------
# Solver. An expression in canonical form is a tuple ``(order, text, kind, plus, minus)``:
# a leaf (``plus = minus = ()``), a sum of terms ``Σ plus − Σ minus`` whose terms are leaves or
# products, or a product of factors ``Π plus / Π minus`` whose factors are leaves or sums.
# ``plus`` and ``minus`` are sorted by ``order`` (compound sub-expressions first, then numbers in
# decreasing order), so the text, printed with minimal parentheses, identifies the class.

_LEAF, _SUM, _PRODUCT = 0, 1, 2
_Expr = tuple  # (order, text, kind, plus, minus)
_ORDER = itemgetter(0)


def _leaf(n: int) -> _Expr:
    return ((1, -n), str(n), _LEAF, (), ())


def _make(kind: int, plus: tuple, minus: tuple) -> _Expr:
    plus = tuple(sorted(plus, key=_ORDER))
    minus = tuple(sorted(minus, key=_ORDER))
    if kind == _SUM:
        text = "+".join(e[1] for e in plus) + "".join("-" + e[1] for e in minus)
    else:
        parts = [f"({e[1]})" if e[2] == _SUM else e[1] for e in plus + minus]
        text = "*".join(parts[: len(plus)]) + "".join("/" + p for p in parts[len(plus) :])
    return ((0, text), text, kind, plus, minus)


def _parts(expr: _Expr, kind: int) -> tuple[tuple, tuple]:
    return (expr[3], expr[4]) if expr[2] == kind else ((expr,), ())


def _combine(a: _Expr, b: _Expr, op: str) -> _Expr:
    """Canonical form of ``a op b``: flatten sums into signed terms, products into num / den."""
    kind = _SUM if op in "+-" else _PRODUCT
    a_plus, a_minus = _parts(a, kind)
    b_plus, b_minus = _parts(b, kind)
    if op in "+*":
        return _make(kind, a_plus + b_plus, a_minus + b_minus)
    return _make(kind, a_plus + b_minus, a_minus + b_plus)  # a − b, a / b: b's signs flip


def _combinations(exprs_a: dict, exprs_b: dict, op: str, swap: bool):
    """``a op b`` (``b op a`` if ``swap``) for every pair of expressions of the two groups."""
    for ea in exprs_a.values():
        for eb in exprs_b.values():
            yield _combine(eb, ea, op) if swap else _combine(ea, eb, op)


def _splits(multiset: tuple[int, ...]):
    """Unordered partitions of a sorted multiset into two non-empty sorted sub-multisets."""
    n, seen = len(multiset), set()
    for mask in range(1, 1 << (n - 1)):  # the last element always goes right: each pair once
        left = tuple(multiset[i] for i in range(n) if mask >> i & 1)
        right = tuple(multiset[i] for i in range(n) if not mask >> i & 1)
        if (left, right) not in seen and (right, left) not in seen:
            seen.add((left, right))
            yield left, right


_CACHED_SIZE = 3  # sub-multisets this small are shared across calls (≈ 50 MB for 1..20)


@lru_cache(maxsize=4096)
def _small_expressions(multiset: tuple[int, ...]) -> dict[Fraction, dict[str, _Expr]]:
    return _enumerate(multiset, _small_expressions)


def _expressions(multiset: tuple[int, ...], memo: dict) -> dict[Fraction, dict[str, _Expr]]:
    """Every canonical expression using each element of the sorted ``multiset`` exactly once,
    grouped by exact value: ``{value: {text: expr}}``. Small multisets are cached globally, larger
    ones in the caller's ``memo`` (their tables are large and rarely shared)."""
    if len(multiset) <= _CACHED_SIZE:
        return _small_expressions(multiset)
    if multiset not in memo:
        memo[multiset] = _enumerate(multiset, lambda sub: _expressions(sub, memo))
    return memo[multiset]


def _enumerate(multiset: tuple[int, ...], lookup) -> dict[Fraction, dict[str, _Expr]]:
    if len(multiset) == 1:
        return {Fraction(multiset[0]): {str(multiset[0]): _leaf(multiset[0])}}
    out: dict[Fraction, dict[str, _Expr]] = {}
    for left, right in _splits(multiset):
        for va, exprs_a in lookup(left).items():
            for vb, exprs_b in lookup(right).items():
                results = [
                    (va + vb, "+", False),
                    (va - vb, "-", False),
                    (vb - va, "-", True),
                    (va * vb, "*", False),
                ]
                if vb:
                    results.append((va / vb, "/", False))
                if va:
                    results.append((vb / va, "/", True))
                for value, op, swap in results:
                    bucket = out.setdefault(value, {})
                    for expr in _combinations(exprs_a, exprs_b, op, swap):
                        bucket[expr[1]] = expr
    return out


def _reaching(multiset: tuple[int, ...], target: Fraction, memo: dict) -> list[_Expr]:
    """Canonical expressions over all of ``multiset`` worth ``target``, by looking up the value
    the second operand needs for each value of the first (no enumeration of the whole set)."""
    if len(multiset) <= 1:
        return list(_expressions(multiset, memo).get(target, {}).values())
    found: list[_Expr] = []
    for left, right in _splits(multiset):
        by_a, by_b = _expressions(left, memo), _expressions(right, memo)
        if len(by_a) > len(by_b):
            by_a, by_b = by_b, by_a  # iterate the side with fewer values
        for va, exprs_a in by_a.items():
            # (needed value of b, op, swap): a+b, a−b, b−a, a·b, a/b, b/a equal to the target
            needs: list[tuple[Fraction | None, str, bool]] = [
                (target - va, "+", False),
                (va - target, "-", False),
                (target + va, "-", True),
            ]
            if va:
                needs += [(target / va, "*", False), (target * va, "/", True)]
                if target:
                    needs.append((va / target, "/", False))
            elif not target:
                needs += [(None, "*", False), (None, "/", False)]  # 0·b = 0, 0/b = 0 for b ≠ 0
            for vb, op, swap in needs:
                if vb is None:
                    groups = [g for v, g in by_b.items() if op == "*" or v]
                else:
                    groups = [by_b[vb]] if vb in by_b else []
                for exprs_b in groups:
                    found.extend(_combinations(exprs_a, exprs_b, op, swap))
    return found


def _sub_multisets(multiset: tuple[int, ...]) -> set[tuple[int, ...]]:
    return {sub for k in range(1, len(multiset) + 1) for sub in combinations(multiset, k)}


def solve(
    numbers: tuple[int, ...] | list[int],
    target: int,
    use_all: bool = False,
    limit: int | None = None,
) -> list[str]:
    """All distinct solutions of a Countdown problem, shortest first (ties: alphabetical).

    Exhaustive search over (sub-)multisets of ``numbers`` and every binary expression tree with
    ``+ - * /`` in exact rational arithmetic, memoised by multiset. Solutions are deduplicated up
    to the canonicalisation in the module docstring and printed with minimal parentheses; each
    one scores as correct under :func:`score` with the same ``use_all``.

    Args:
        numbers: the available numbers (non-negative integers, at most 6; repeats allowed).
        target: the value to reach.
        use_all: every number exactly once (True) or at most once (False).
        limit: return at most this many (the first ones of the sorted list).
    """
    numbers = tuple(numbers)
    if not numbers or len(numbers) > MAX_SOLVER_NUMBERS:
        raise ValueError(f"numbers must hold 1..{MAX_SOLVER_NUMBERS} integers, got {numbers!r}")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in numbers):
        raise ValueError(f"numbers must be non-negative integers, got {numbers!r}")
    if not isinstance(target, int) or isinstance(target, bool):
        raise ValueError(f"target must be an integer, got {target!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    multiset = tuple(sorted(numbers))
    subsets = [multiset] if use_all else sorted(_sub_multisets(multiset))
    value = Fraction(target)
    texts: set[str] = set()
    memo: dict = {}
    for sub in subsets:
        if sub == multiset:
            texts.update(e[1] for e in _reaching(sub, value, memo))
        else:  # proper sub-multisets are enumerated anyway as parts of the full one
            texts.update(_expressions(sub, memo).get(value, {}))
    solutions = sorted(texts, key=lambda t: (len(t), t))
    return solutions if limit is None else solutions[:limit]
