"""The Countdown solver (``tasks/_countdown_solver.py``) against an independent brute force: the
same solutions up to the documented equivalence, each scored correct by the reward."""

from __future__ import annotations

import ast
import random
from fractions import Fraction
from itertools import permutations

import pytest

from entropy_dynamics.tasks import CountdownConfig, CountdownProblem, score, solve


def problem(numbers, target):
    return CountdownProblem(numbers=tuple(numbers), target=target, num_solutions=1)


# ----------------------------------------------------------------------------------------------
# Independent reference: every fully parenthesised expression over every ordered selection of the
# numbers, evaluated with Fraction; equivalence classes by flattening +/− and ×/÷ chains into
# sorted signed multisets (the canonicalisation the solver documents, implemented on the AST).


def _ordered_expressions(values):
    if len(values) == 1:
        return [(Fraction(values[0]), str(values[0]))]
    out = []
    for i in range(1, len(values)):
        for va, ta in _ordered_expressions(values[:i]):
            for vb, tb in _ordered_expressions(values[i:]):
                out += [(va + vb, f"({ta}+{tb})"), (va - vb, f"({ta}-{tb})")]
                out.append((va * vb, f"({ta}*{tb})"))
                if vb != 0:
                    out.append((va / vb, f"({ta}/{tb})"))
    return out


def brute_force(numbers, target, use_all):
    sizes = [len(numbers)] if use_all else range(1, len(numbers) + 1)
    hits = set()
    for k in sizes:
        for order in permutations(range(len(numbers)), k):
            for value, text in _ordered_expressions([numbers[i] for i in order]):
                if value == target:
                    hits.add(text)
    return hits


def canon(node):
    if isinstance(node, ast.Expression):
        return canon(node.body)
    if isinstance(node, ast.Constant):
        return ("n", node.value)
    is_sum = isinstance(node.op, ast.Add | ast.Sub)

    def flatten(n, sign):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add | ast.Sub) == is_sum:
            flip = isinstance(n.op, ast.Sub | ast.Div)
            return flatten(n.left, sign) + flatten(n.right, -sign if flip else sign)
        return [(sign, canon(n))]

    return ("sum" if is_sum else "product", tuple(sorted(flatten(node, 1), key=repr)))


def classes(texts):
    return {canon(ast.parse(t, mode="eval")) for t in texts}


def test_solver_hand_counted_instance():
    # 6 from {1, 2, 3}: 3*2, 3+2+1, 3*2*1, 3*2/1 (3/(1/2) = 3*2/1, (3-1)*... needs a second 3);
    # with every number: the last three.
    assert sorted(solve((1, 2, 3), 6)) == sorted(["3*2", "3+2+1", "3*2*1", "3*2/1"])
    assert sorted(solve((1, 2, 3), 6, use_all=True)) == sorted(["3+2+1", "3*2*1", "3*2/1"])
    assert solve((1, 2, 3), 6, limit=2) == ["3*2", "3*2*1"]  # shortest first, then by text
    assert solve((2, 3), 7) == []


@pytest.mark.parametrize("use_all", [False, True])
def test_solver_matches_brute_force_on_three_numbers(use_all):
    rng = random.Random(1)
    cases = [((2, 2, 3), 1), ((4, 4, 4), 1), ((1, 5, 6), 11), ((3, 7, 9), 30)]
    cases += [(tuple(rng.randint(1, 12) for _ in range(3)), rng.randint(1, 40)) for _ in range(40)]
    for numbers, target in cases:
        found = solve(numbers, target, use_all=use_all)
        reference = brute_force(numbers, target, use_all)
        assert classes(found) == classes(reference), (numbers, target)
        assert len(classes(found)) == len(found), (numbers, target)  # no duplicate class
        config = CountdownConfig(use_all_numbers=use_all)
        for text in found:
            assert score(problem(numbers, target), text, config).correct == 1.0, text


def test_solver_matches_brute_force_on_four_numbers():
    for numbers, target in [((3, 5, 7, 8), 22), ((2, 2, 6, 9), 24), ((1, 3, 4, 6), 24)]:
        found = solve(numbers, target)
        assert classes(found) == classes(brute_force(numbers, target, use_all=False))
        assert len(classes(found)) == len(found)
        for text in found:
            assert score(problem(numbers, target), text).correct == 1.0, text


def test_solver_handles_zero_and_validates_input():
    # 0 from {0, 5}: 0 alone, 0*5, 0/5 (5/0 is undefined, 5-0 and 0-5 miss)
    assert solve((0, 5), 0) == ["0", "0/5", "5*0"]
    with pytest.raises(ValueError, match="numbers"):
        solve((), 3)
    with pytest.raises(ValueError, match="numbers"):
        solve((1, -2), 3)
    with pytest.raises(ValueError, match="numbers"):
        solve(tuple(range(1, 8)), 3)
    with pytest.raises(ValueError, match="target"):
        solve((1, 2), 1.5)
