"""Per-token entropy diagnostics of a model on its own samples, and the one-step check.

- :func:`token_table`: at every sampled response token, ``p_k``, ``H``, ``S_k``, ``E_p[S]``, the
  deviation ``S_k - E_p[S]`` (Theorem 3.3's driver of the entropy change) and its quadrant
  (advantage sign × deviation sign, the names of :mod:`entropy_dynamics.dynamics`). Statistics
  come from :class:`~entropy_dynamics.training.forward.ResponseStats` (fused from hidden states
  when the model allows it), a few sequences at a time: no ``(N, R, V)`` tensor is ever held.
- :func:`render_html`: the responses with each token coloured by ``S_k - E_p[S]``.
- :func:`one_step_check`: one plain SGD step of the GRPO loss (token-mean of ``-A log p_k``, the
  PPO surrogate at ratio 1) on a *copy* of the model, and the entropy change it causes at the
  same positions, per sequence and overall, against two predictions: the first order
  ``⟨∂H/∂z, Δz⟩`` with the measured logit change ``Δz`` (Theorem 3.2's general form, exact up
  to ``O(|Δz|²)``), and Theorem 3.3's ``-α̂ A (S_k - E_p[S]) / T²`` with the effective logit step
  ``α̂`` fitted by least squares as in :func:`~entropy_dynamics.dynamics.entropy_dynamics_metrics`.
- :func:`analyze`: sample, tabulate, check, and write ``tokens.csv`` (``tokens.parquet``),
  ``tokens.html`` and ``one_step.json``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.advantages import get_advantage_fn
from entropy_dynamics.dynamics import QUADRANTS, row_chunks
from entropy_dynamics.models.loading import valid_vocab_size
from entropy_dynamics.study.analysis_html import render_html
from entropy_dynamics.study.one_step import (
    DEFAULT_LR,
    OneStepResult,
    one_step_check,
    sequence_values,
)
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import Rollout, generate

__all__ = [
    "DEFAULT_LR",
    "TABLE_COLUMNS",
    "AnalysisResult",
    "OneStepResult",
    "analyze",
    "one_step_check",
    "quadrant",
    "render_html",
    "token_table",
    "write_csv",
    "write_parquet",
]

_COLUMNS = (
    "sample prompt position token_id token logp p_k entropy discriminator expected_discriminator"
)
TABLE_COLUMNS = (*_COLUMNS.split(), "deviation", "advantage", "quadrant")
"""Columns of :func:`token_table`: ``discriminator`` is ``S_k``, ``expected_discriminator`` is
``E_p[S]``, ``deviation`` is ``S_k - E_p[S]``; ``advantage`` is the value whose sign sets the
quadrant."""


_QUADRANT_OF_SIGNS = {signs: name for name, signs in QUADRANTS.items()}


def quadrant(advantage: float, deviation: float) -> str:
    """The :data:`~entropy_dynamics.dynamics.QUADRANTS` name of the two signs
    (``pos_adv_neg_dev``: ``A > 0``, ``S_k < E_p[S]``), or ``none`` when either sign is 0."""
    signs = ((advantage > 0) - (advantage < 0), (deviation > 0) - (deviation < 0))
    return _QUADRANT_OF_SIGNS.get(signs, "none")


@contextmanager
def _eval_mode(model) -> Iterator[None]:
    """``model.eval()`` inside, the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def token_table(
    model,
    tokenizer,
    rollout: Rollout,
    temperature: float = 1.0,
    advantage_sign: float | Tensor = 1,
    *,
    valid_vocab: int | None = None,
    rows_per_chunk: int | None = 16,
) -> list[dict[str, Any]]:
    """One row per valid response token with its entropy statistics (:data:`TABLE_COLUMNS`).

    Args:
        model: the causal LM that sampled ``rollout`` (put in eval mode for the call).
        tokenizer: its tokenizer (token texts: each id decoded alone, special tokens kept).
        rollout: ``N`` responses of ``R`` positions.
        temperature: ``T`` of the statistics (the sampling temperature).
        advantage_sign: the advantage that sets the quadrant, one number for all responses or an
            ``(N,)`` tensor (e.g. the GRPO advantages); only its sign matters.
        valid_vocab: real tokens of a padded output layer (``None``: from the tokenizer).
        rows_per_chunk: responses per forward pass (``None``: all at once); at most
            ``rows_per_chunk · R`` hidden states (or logits, without the fused path) exist.

    Returns:
        Rows in sample-major, position-minor order; floats are Python floats in float32
        precision (float64 for a float64 model).
    """
    n = rollout.response_ids.shape[0]
    advantages = sequence_values(advantage_sign, n, "advantage_sign").tolist()
    if valid_vocab is None:
        valid_vocab = valid_vocab_size(model, tokenizer)
    response_stats = ResponseStats(model, temperature, "auto", valid_vocab)
    prompt_index = rollout.prompt_index.tolist()
    texts: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    with _eval_mode(model):
        for chunk in row_chunks(n, rows_per_chunk):
            tokens = rollout.response_ids[chunk]  # (n_c, R)
            stats = response_stats.stats(response_stats.features(rollout, chunk), tokens)
            valid = rollout.response_mask[chunk]  # (n_c, R)
            fields = (stats.logprobs, stats.entropy, stats.discriminator)
            fields += (stats.expected_discriminator,)
            values = zip(*(v[valid].double().tolist() for v in fields), strict=True)  # (M_c,) each
            local, position = (x.tolist() for x in valid.nonzero(as_tuple=True))
            for i, t, k, (logp, h, s_k, e_s) in zip(
                local, position, tokens[valid].tolist(), values, strict=True
            ):
                sample, adv = chunk.start + i, advantages[chunk.start + i]
                if k not in texts:  # each id decoded alone, special tokens kept
                    texts[k] = tokenizer.decode(
                        [k], skip_special_tokens=False, clean_up_tokenization_spaces=False
                    )
                row = (sample, prompt_index[sample], t, k, texts[k], logp, math.exp(logp), h, s_k)
                row += (e_s, s_k - e_s, adv, quadrant(adv, s_k - e_s))
                rows.append(dict(zip(TABLE_COLUMNS, row, strict=True)))
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`token_table` rows as CSV (header :data:`TABLE_COLUMNS`, UTF-8)."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`token_table` rows as Parquet (needs pandas and pyarrow)."""
    import pandas as pd

    path = Path(path)
    pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS)).to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------
# The one-step check
# ---------------------------------------------------------------------------------------------


@dataclass
class AnalysisResult:
    """Output of :func:`analyze`.

    Attributes:
        rollout: the sampled batch (``N = len(prompts) · num_samples``).
        rows: :func:`token_table` rows.
        one_step: :class:`OneStepResult` of the batch.
        advantages: ``(N,)`` sequence advantages used for the step and the quadrants.
        advantage_source: how they were made (``grpo`` or ``constant ...``).
        rewards: ``(N,)`` scorer rewards, or ``None`` without a scorer.
        paths: files written, by name (``csv``, ``parquet``, ``html``, ``json``).
    """

    rollout: Rollout
    rows: list[dict[str, Any]]
    one_step: OneStepResult
    advantages: Tensor
    advantage_source: str
    rewards: Tensor | None = None
    paths: dict[str, Path] = field(default_factory=dict)


def _advantages(
    rollout: Rollout, scorer: Callable[[int, str], float] | None, advantage_sign: float
) -> tuple[Tensor, Tensor | None, str]:
    """GRPO advantages of the scorer's rewards, else (or if all are 0) the constant sign."""
    n = rollout.response_ids.shape[0]
    constant = sequence_values(float(advantage_sign), n, "advantage_sign")
    if scorer is None:
        return constant, None, f"constant {advantage_sign:+g} (no scorer)"
    rewards = torch.tensor(
        [
            float(scorer(int(i), text))
            for i, text in zip(rollout.prompt_index, rollout.completions, strict=True)
        ]
    )
    grpo = get_advantage_fn("grpo")(rewards, rollout.prompt_index.cpu())
    if not bool((grpo != 0).any()):
        note = "every GRPO advantage is 0: each prompt's samples scored alike"
        return constant, rewards, f"constant {advantage_sign:+g} ({note})"
    return grpo, rewards, "grpo"


def analyze(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    num_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    scorer: Callable[[int, str], float] | None = None,
    advantage_sign: float = 1,
    lr: float = DEFAULT_LR,
    output_dir: str | Path | None = None,
    seed: int | None = None,
    forecast: bool = True,
    problems_from: str | None = None,
) -> AnalysisResult:
    """Sample ``num_samples`` responses per prompt, tabulate their tokens, run the one-step check.

    Args:
        model: a Hugging Face causal LM (left unchanged).
        tokenizer: its tokenizer.
        prompts: ``B`` prompt strings, already in the model's format (chat template applied).
        num_samples: responses per prompt (the GRPO group size ``G``).
        temperature: sampling temperature ``T`` (and of every statistic).
        max_new_tokens: longest response.
        scorer: ``scorer(prompt_index, completion) -> reward``; when given, the advantages are
            GRPO group-normalised rewards. Without it, or when every advantage is 0, each
            response gets ``advantage_sign``.
        advantage_sign: the constant advantage (usually ``+1`` or ``-1``), nonzero.
        lr: SGD step of :func:`one_step_check`.
        output_dir: if given, write ``tokens.csv``, ``tokens.parquet`` (when pyarrow is
            importable), ``tokens.html`` and ``one_step.json`` there.
        seed: seeds torch's RNG before sampling.
        forecast: also forecast the step's ΔH in parameter space before taking it (overall, by
            token group, per sequence; :func:`one_step_check`).
        problems_from: where the prompts came from (``one_step.json``'s ``problems``), e.g.
            ``countdown validation split`` or a data file.

    Returns:
        :class:`AnalysisResult`.
    """
    if not (math.isfinite(advantage_sign) and advantage_sign != 0):
        raise ValueError(
            f"advantage_sign must be a nonzero number (+1 or -1), got {advantage_sign}"
        )
    if seed is not None:
        torch.manual_seed(seed)
    valid_vocab = valid_vocab_size(model, tokenizer)
    rollout = generate(
        model,
        tokenizer,
        list(prompts),
        num_samples=num_samples,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        valid_vocab=valid_vocab,
    )
    advantages, rewards, source = _advantages(rollout, scorer, advantage_sign)
    rows = token_table(model, tokenizer, rollout, temperature, advantages, valid_vocab=valid_vocab)
    one_step = one_step_check(
        model,
        rollout,
        advantages,
        lr=lr,
        temperature=temperature,
        valid_vocab=valid_vocab,
        forecast=forecast,
    )
    result = AnalysisResult(rollout, rows, one_step, advantages, source, rewards)
    if output_dir is not None:
        result.paths = _write_outputs(result, list(prompts), Path(output_dir), problems_from)
    return result


def _write_outputs(
    result: AnalysisResult, prompts: list[str], out: Path, problems_from: str | None
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(result.rows, out / "tokens.csv")}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        paths["parquet"] = write_parquet(result.rows, out / "tokens.parquet")
    rewards = None if result.rewards is None else result.rewards.tolist()
    page = render_html(
        result.rows,
        prompts=prompts,
        advantages=result.advantages.tolist(),
        rewards=rewards,
    )
    paths["html"] = out / "tokens.html"
    paths["html"].write_text(page, encoding="utf-8")
    summary = {"problems": problems_from, **result.one_step.to_dict()}
    summary["advantage_source"] = result.advantage_source
    for i, entry in enumerate(summary["per_sequence"]):
        entry["prompt"] = int(result.rollout.prompt_index[i])
        entry["completion"] = result.rollout.completions[i]
        entry["reward"] = None if rewards is None else rewards[i]
    paths["json"] = out / "one_step.json"
    paths["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return paths
