"""Numerical checks of the paper's theorems on random logits (used by ``verify-theory``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from entropy_dynamics import theory

__all__ = ["ConvergenceRow", "convergence_table", "loglog_slope"]


@dataclass(frozen=True)
class ConvergenceRow:
    name: str
    step: float
    max_change: float
    max_error: float
    slope: float | None  # log-log slope of error vs step over all steps; set on the last row


def loglog_slope(steps: list[float], errors: list[float]) -> float:
    """Least-squares slope of ``log(error)`` against ``log(step)``."""
    xs = [math.log(s) for s in steps]
    ys = [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def convergence_table(
    vocab_size: int, positions: int, seed: int, steps: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
) -> list[ConvergenceRow]:
    """Error of Theorem 3.2 (``Δz = ε e_k``) and 3.3 (``Δz = ε (e_k - p)``) against exact ``ΔH``."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(positions, vocab_size, generator=gen, dtype=torch.float64)
    tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    one_hot = torch.nn.functional.one_hot(tokens, vocab_size).to(torch.float64)
    rows: list[ConvergenceRow] = []
    for name in ("Thm 3.2: -ε S_k", "Thm 3.3: -ε (S_k - E_p[S])"):
        errors = []
        for step in steps:
            if name.startswith("Thm 3.2"):
                delta = step * one_hot
                predicted = -step * theory.discriminator(logits, tokens)
            else:
                delta = theory.grpo_logit_update(logits, tokens, torch.ones(positions), step)
                predicted = theory.grpo_entropy_change(logits, tokens, torch.ones(positions), step)
            exact = theory.entropy_change(logits, delta)
            errors.append(float((exact - predicted).abs().max()))
            rows.append(ConvergenceRow(name, step, float(exact.abs().max()), errors[-1], None))
        rows[-1] = ConvergenceRow(
            name, steps[-1], rows[-1].max_change, errors[-1], loglog_slope(list(steps), errors)
        )
    return rows
