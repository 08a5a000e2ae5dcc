"""Held-out evaluation: Avg@k and unbiased Pass@k (Chen et al. 2021, arXiv 2107.03374).

For a problem with ``n`` samples of which ``c`` are correct,
``Pass@k = 1 - C(n - c, k) / C(n, k)``: the probability that at least one of ``k`` samples drawn
without replacement from the ``n`` is correct. ``Avg@k`` is the mean correctness of all samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entropy_dynamics.rollout import generate

__all__ = ["EvalResult", "evaluate", "pass_at_k"]


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased Pass@k, computed as ``1 - Π_{i=n-c+1}^{n} (1 - k / i)`` (numerically stable)."""
    n, c = num_samples, num_correct
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= num_correct <= num_samples, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, num_samples={n}], got {k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


@dataclass
class EvalResult:
    k: int
    avg_at_k: float
    pass_at: dict[int, float]
    per_problem_pass_rate: list[float] = field(repr=False)
    format_rate: float
    mean_response_length: float
    mean_entropy: float

    def to_metrics(self, prefix: str = "eval") -> dict[str, float]:
        metrics = {f"{prefix}/avg@{self.k}": self.avg_at_k}
        metrics.update({f"{prefix}/pass@{k}": v for k, v in sorted(self.pass_at.items())})
        metrics[f"{prefix}/format_rate"] = self.format_rate
        metrics[f"{prefix}/response_length"] = self.mean_response_length
        metrics[f"{prefix}/entropy"] = self.mean_entropy
        return metrics


def evaluate(
    model,
    tokenizer,
    task: Any,
    problems: Sequence[Any],
    *,
    k: int = 8,
    ks: tuple[int, ...] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Sample ``k`` answers per problem and score them with ``task.score``.

    Args:
        task: a :class:`~entropy_dynamics.tasks.base.Task` (``prompt``, ``score``).
        problems: held-out problems.
        ks: Pass@k values to report (each ≤ ``k``); default ``(1, k)``.
        batch_size: sequences per ``generate`` call (rounded down to whole problems).
        progress: called as ``progress(done, total)`` after each batch of problems.
    """
    if not problems:
        raise ValueError("problems: need at least one problem to evaluate")
    ks = tuple(sorted(set(ks or (1, k))))
    if any(not 1 <= x <= k for x in ks):
        raise ValueError(f"every Pass@k value must be in [1, k={k}], got {ks}")
    per_batch = max(1, batch_size // k)
    correct_counts, formats, lengths, entropy_sum, token_count = [], 0.0, 0.0, 0.0, 0
    for start in range(0, len(problems), per_batch):
        chunk = problems[start : start + per_batch]
        rollout = generate(
            model,
            tokenizer,
            [task.prompt(p) for p in chunk],
            num_samples=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
        scores = [
            task.score(chunk[int(i)], text)
            for i, text in zip(rollout.prompt_index, rollout.completions, strict=True)
        ]
        for j in range(len(chunk)):
            correct_counts.append(sum(int(s.correct > 0) for s in scores[j * k : (j + 1) * k]))
        formats += sum(s.format for s in scores)
        mask = rollout.response_mask
        lengths += float(mask.sum())
        entropy_sum += float(rollout.sampling_entropy.sum())
        token_count += int(mask.sum())
        if progress is not None:
            progress(min(start + per_batch, len(problems)), len(problems))
    n_samples = len(problems) * k
    return EvalResult(
        k=k,
        avg_at_k=sum(correct_counts) / n_samples,
        pass_at={x: sum(pass_at_k(k, c, x) for c in correct_counts) / len(problems) for x in ks},
        per_problem_pass_rate=[c / k for c in correct_counts],
        format_rate=formats / n_samples,
        mean_response_length=lengths / n_samples,
        mean_entropy=entropy_sum / max(token_count, 1),
    )
