"""Held-out evaluation: Avg@k and unbiased Pass@k (Chen et al. 2021, arXiv 2107.03374).

For a problem with ``n`` samples of which ``c`` are correct,
``Pass@k = 1 - C(n - c, k) / C(n, k)``: the probability that at least one of ``k`` samples drawn
without replacement from the ``n`` is correct. ``Avg@k`` is the mean correctness of all samples.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entropy_dynamics.tasks.base import score_all
from entropy_dynamics.training.rollout import generate

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "EvalResult", "evaluate", "pass_at_k"]

DEFAULT_MAX_NEW_TOKENS = 32
"""Longest answer of an evaluation unless told (a Countdown answer needs < 20 tokens)."""


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased Pass@k ``1 - C(n - c, k) / C(n, k)`` of ``c`` correct among ``n`` samples.

    The ratio of binomials is the product ``Π_{i=n-c+1}^{n} (1 - k / i)`` (Chen et al. 2021,
    Fig. 3), which never forms the huge binomials themselves.

    Args:
        num_samples: ``n >= 1`` samples drawn for the problem.
        num_correct: ``c`` of them correct, ``0 <= c <= n``.
        k: ``1 <= k <= n``.
    """
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
    """Scores of ``k`` samples on each of the evaluated problems (of one split).

    Attributes:
        k: samples per problem.
        avg_at_k: mean correctness over all samples (Avg@k).
        pass_at: ``{k': Pass@k'}``, the unbiased estimator averaged over problems.
        per_problem_correct: correct samples of each problem, out of ``k``.
        per_problem_pass_rate: ``per_problem_correct / k`` (for the pass-rate histogram).
        format_rate: mean format score over all samples.
        mean_response_length: mean response tokens per sample (EOS included).
        median_response_length: median response tokens per sample (EOS included).
        mean_entropy: mean token entropy of ``softmax(z / T)`` over all response tokens.
        truncated_rate: fraction of samples that reached ``max_new_tokens`` without EOS.
    """

    k: int
    avg_at_k: float
    pass_at: dict[int, float]
    per_problem_pass_rate: list[float] = field(repr=False)
    format_rate: float
    mean_response_length: float
    mean_entropy: float
    per_problem_correct: list[int] = field(default_factory=list, repr=False)
    truncated_rate: float = 0.0
    median_response_length: float = 0.0

    def to_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat metrics: ``{prefix}/avg@k``, ``{prefix}/pass@k'`` for each k', and the rest."""
        metrics = {f"{prefix}/avg@{self.k}": self.avg_at_k}
        metrics.update({f"{prefix}/pass@{k}": v for k, v in sorted(self.pass_at.items())})
        metrics[f"{prefix}/format_rate"] = self.format_rate
        metrics[f"{prefix}/response_length"] = self.mean_response_length
        metrics[f"{prefix}/response_length_median"] = self.median_response_length
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
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Sample ``k`` answers per problem and score them with ``task.score``.

    A sample counts as correct when ``score.correct >= 0.5`` (the Task protocol's values are 0 and
    1). Sampling draws from torch's global RNG: seed it for a reproducible evaluation.

    Args:
        model: Hugging Face causal LM (its train/eval mode is restored after each batch).
        tokenizer: its tokenizer.
        task: a :class:`~entropy_dynamics.tasks.base.Task` (``prompt``, ``score``).
        problems: the problems evaluated (of the validation or the test split).
        k: samples per problem ``n`` (Avg@k, and the ``n`` of the Pass@k estimator).
        ks: Pass@k values to report (each in ``[1, k]``); default ``(1, k)``.
        temperature, top_p, max_new_tokens: sampling options, as in :func:`generate`.
        batch_size: sequences per ``generate`` call, rounded down to whole problems (at least one).
        progress: called as ``progress(problems_done, problems_total)`` after each batch.
    """
    if len(problems) == 0:
        raise ValueError("problems: need at least one problem to evaluate")
    if k < 1:
        raise ValueError(f"k must be >= 1 (samples per problem), got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ks = tuple(sorted(set(ks if ks is not None else (1, k))))
    if not ks or any(not 1 <= x <= k for x in ks):
        raise ValueError(f"ks: every Pass@k value must be in [1, k={k}], got {ks}")
    per_batch = max(1, batch_size // k)
    correct_counts: list[int] = []
    formats, tokens, truncated, entropy_sum = 0.0, 0, 0, 0.0
    lengths: list[int] = []
    for start in range(0, len(problems), per_batch):
        chunk = problems[start : start + per_batch]
        rollout = generate(
            model,
            tokenizer,
            [task.prompt(problem) for problem in chunk],
            num_samples=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
        owners = [chunk[i] for i in rollout.prompt_index.tolist()]
        scores = score_all(task, owners, rollout.completions)
        for j in range(len(chunk)):
            correct_counts.append(sum(float(s.correct) >= 0.5 for s in scores[j * k : (j + 1) * k]))
        formats += sum(float(s.format) for s in scores)
        tokens += int(rollout.response_mask.sum())
        lengths += rollout.response_mask.sum(dim=1).tolist()
        truncated += int(rollout.truncated.sum())
        entropy_sum += float(rollout.sampling_entropy.sum())  # 0 on padding
        if progress is not None:
            progress(start + len(chunk), len(problems))
    n_samples = len(problems) * k
    return EvalResult(
        k=k,
        avg_at_k=sum(correct_counts) / n_samples,
        pass_at={x: sum(pass_at_k(k, c, x) for c in correct_counts) / len(problems) for x in ks},
        per_problem_pass_rate=[c / k for c in correct_counts],
        format_rate=formats / n_samples,
        mean_response_length=tokens / n_samples,
        mean_entropy=entropy_sum / tokens,
        per_problem_correct=correct_counts,
        truncated_rate=truncated / n_samples,
        median_response_length=float(statistics.median(lengths)),
    )
