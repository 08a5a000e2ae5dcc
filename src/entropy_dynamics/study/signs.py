"""The paper's §4 sign validation: four interventions and Theorem 3.2's predicted directions.

Each run trains only the tokens of samples of one advantage sign whose discriminator
``S_k = p_k (H + log p_k)`` has one sign (method ``sign_intervention``). Theorem 3.2: raising the
sampled token's logit by ``ε`` changes the entropy by ``ΔH = -ε S_k + O(ε²)``; a positive sample
raises it (``ε > 0``), a negative one lowers it (``ε < 0``), so

============  ===========  ===================
samples       keep          entropy (predicted)
============  ===========  ===================
positive      S_k > 0       falls
positive      S_k < 0       rises
negative      S_k > 0       rises
negative      S_k < 0       falls
============  ===========  ===================

Theorem 3.2 speaks of the positions that are updated, so the observed direction is the sign of
the summed actual ΔH *at the trained positions* (``dynamics/delta_h_kept``: each step's batch
re-measured after its update, so it isolates the intervention's own effect). Beside it: the same
sum over the whole batch (``dynamics/delta_h_actual``: untrained positions move only through
shared parameters) with its first-order prediction, and the change of the rollout entropy from
the first to the last step.

The theorem is first order: with a large step the trained tokens overshoot. Measured on the
embedded model (8 prompts × 8 samples, token-mean, Adam): keeping the ``S_k < 0`` tokens of
positive samples (about 1 % of the tokens) at ``lr = 1e-3`` *lowered* their entropy by 0.2-0.8
nats per step while the first-order prediction was positive — the rare tokens were pushed past
the point where they dominate; at ``lr = 2e-5`` all four directions hold at every step. Hence
the small default learning rate of :data:`SIGN_DEFAULTS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from entropy_dynamics.study.summaries import mean_std

__all__ = [
    "SIGN_CASES",
    "SIGN_DEFAULTS",
    "SignCase",
    "SignRow",
    "sign_row",
    "sign_table_markdown",
    "summarize_sign_runs",
    "validate_signs",
]

_OPTIONS = "algorithm.loss.filter_options"

SIGN_DEFAULTS = ("optim.lr=2e-5", "steps=10", "eval.every=0")
"""Overrides every sign run starts from (a user's overrides win): a first-order-sized step."""


@dataclass(frozen=True)
class SignCase:
    sample_sign: str
    """``positive`` (A > 0) or ``negative`` (A < 0) samples."""
    keep: str
    """``s_positive`` (S_k > 0) or ``s_negative`` (S_k < 0) tokens."""
    predicted: int
    """Theorem 3.2's direction of the entropy change: -1 falls, +1 rises."""


SIGN_CASES = (
    SignCase("positive", "s_positive", -1),
    SignCase("positive", "s_negative", 1),
    SignCase("negative", "s_positive", 1),
    SignCase("negative", "s_negative", -1),
)


@dataclass
class SignRow:
    """Observed entropy change of one intervention (mean and sample std over seeds)."""

    sample_sign: str
    keep: str
    predicted: str
    seeds: int
    trained_sum: float
    """Σ over steps of the actual mean ΔH at the trained positions, mean over seeds."""
    trained_sum_std: float
    steps_agreeing: float
    """Fraction of (seed, step) updates whose trained-position ΔH has the predicted sign."""
    batch_sum: float
    """Σ over steps of the actual mean ΔH over the whole batch, mean over seeds."""
    batch_sum_std: float
    first_order_sum: float
    """Σ over steps of the whole-batch first-order prediction (measured Δz), mean over seeds."""
    entropy_first: float
    entropy_last: float
    entropy_change: float
    """Rollout entropy of the last step minus that of the first, mean over seeds."""
    entropy_change_std: float
    observed: str
    agrees: bool
    """The summed trained-position ΔH has the predicted sign."""
    batch_agrees: bool
    """The summed whole-batch ΔH has the predicted sign."""
    entropy_agrees: bool
    """The first-to-last rollout entropy change has the predicted sign."""


def _direction(value: float) -> str:
    if not math.isfinite(value) or value == 0:
        return "flat"
    return "rises" if value > 0 else "falls"


def sign_row(case: SignCase, histories: Sequence[Sequence[Mapping[str, float]]]) -> SignRow:
    """Summarise one intervention from the metric rows of each seed's run.

    Args:
        case: the intervention and its predicted direction.
        histories: per seed, the ``metrics.jsonl`` rows (rows without training metrics, such
            as step 0's evaluation, are ignored).
    """
    if not histories:
        raise ValueError(f"sign case {case.sample_sign}/{case.keep}: no runs")
    trained, batch, first_order, entropy_first, entropy_last = [], [], [], [], []
    agreeing = total = 0
    for rows in histories:
        train = [r for r in rows if "dynamics/delta_h_kept" in r and "entropy/mean" in r]
        if not train:
            raise ValueError(
                f"sign case {case.sample_sign}/{case.keep}: a run has no dynamics metrics "
                "(train with dynamics=true, entropy-dynamics >= 0.2)"
            )
        changes = [r["dynamics/delta_h_kept"] for r in train]
        trained.append(sum(changes))
        batch.append(sum(r["dynamics/delta_h_actual"] for r in train))
        first_order.append(sum(r.get("dynamics/delta_h_first_order", math.nan) for r in train))
        agreeing += sum(case.predicted * c > 0 for c in changes)
        total += len(changes)
        entropy_first.append(train[0]["entropy/mean"])
        entropy_last.append(train[-1]["entropy/mean"])
    trained_mean, trained_std = mean_std(trained)
    batch_mean, batch_std = mean_std(batch)
    change, change_std = mean_std([b - a for a, b in zip(entropy_first, entropy_last, strict=True)])
    predicted = "rises" if case.predicted > 0 else "falls"
    return SignRow(
        sample_sign=case.sample_sign,
        keep=case.keep,
        predicted=predicted,
        seeds=len(histories),
        trained_sum=trained_mean,
        trained_sum_std=trained_std,
        steps_agreeing=agreeing / total,
        batch_sum=batch_mean,
        batch_sum_std=batch_std,
        first_order_sum=mean_std(first_order)[0],
        entropy_first=mean_std(entropy_first)[0],
        entropy_last=mean_std(entropy_last)[0],
        entropy_change=change,
        entropy_change_std=change_std,
        observed=_direction(trained_mean),
        agrees=_direction(trained_mean) == predicted,
        batch_agrees=_direction(batch_mean) == predicted,
        entropy_agrees=_direction(change) == predicted,
    )


def _pm(mean: float, std: float, seeds: int, fmt: str = "+.3e") -> str:
    return f"{mean:{fmt}} ± {std:.1e}" if seeds > 1 else f"{mean:{fmt}}"


def sign_table_markdown(rows: Sequence[SignRow]) -> str:
    """A Markdown table of the interventions, with a final line counting the agreements."""
    header = (
        "| samples | tokens kept | predicted | observed (trained tokens) | Σ ΔH trained tokens | "
        "steps agreeing | Σ ΔH whole batch | Σ first-order ΔH whole batch | "
        "entropy first → last | entropy change | agrees |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        keep = "S_k > 0" if r.keep == "s_positive" else "S_k < 0"
        lines.append(
            f"| {r.sample_sign} | {keep} | {r.predicted} | {r.observed} | "
            f"{_pm(r.trained_sum, r.trained_sum_std, r.seeds)} | {r.steps_agreeing:.0%} | "
            f"{_pm(r.batch_sum, r.batch_sum_std, r.seeds)} | {r.first_order_sum:+.3e} | "
            f"{r.entropy_first:.4f} → {r.entropy_last:.4f} | "
            f"{_pm(r.entropy_change, r.entropy_change_std, r.seeds, '+.4f')} | "
            f"{'yes' if r.agrees else 'NO'} |"
        )
    n = len(rows)
    lines.append("")
    lines.append(
        f"{sum(r.agrees for r in rows)}/{n} directions reproduced at the trained tokens; "
        f"{sum(r.batch_agrees for r in rows)}/{n} by the whole-batch ΔH; "
        f"{sum(r.entropy_agrees for r in rows)}/{n} by the first-to-last rollout entropy change."
    )
    return "\n".join(lines) + "\n"


def _case_of(config: Mapping) -> SignCase | None:
    algorithm = config.get("algorithm", {})
    if algorithm.get("method") != "sign_intervention":
        return None
    options = algorithm.get("loss", {}).get("filter_options", {}) or {}
    sample_sign = options.get("sample_sign", "positive")  # the filter's defaults
    keep = options.get("keep", "s_positive")
    return next(c for c in SIGN_CASES if (c.sample_sign, c.keep) == (sample_sign, keep))


def summarize_sign_runs(run_dirs: Sequence[str | Path]) -> list[SignRow]:
    """One :class:`SignRow` per intervention found among ``run_dirs`` (seeds pooled)."""
    import yaml

    from entropy_dynamics.training.metrics import read_metrics

    histories: dict[SignCase, list] = {}
    for run_dir in map(Path, run_dirs):
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        case = _case_of(config)
        if case is None:
            raise ValueError(f"{run_dir}: not a sign_intervention run")
        histories.setdefault(case, []).append(read_metrics(run_dir / "metrics.jsonl"))
    return [sign_row(case, histories[case]) for case in SIGN_CASES if case in histories]


def validate_signs(
    base_overrides: Sequence[str] = (),
    output_dir: str | Path = "runs/signs",
    seeds: Sequence[int] = (0,),
    workers: int = 1,
    progress=None,
    config_path: str | Path | None = None,
) -> list[SignRow]:
    """Run the four interventions (resumable grid), then write ``signs.json`` and ``signs.md``.

    The runs start from :data:`SIGN_DEFAULTS` (small step, 10 steps, no evaluation: only the
    entropy matters); ``base_overrides`` win.
    """
    from entropy_dynamics.study.experiments import run_grid

    sweeps = {
        f"{_OPTIONS}.sample_sign": ["positive", "negative"],
        f"{_OPTIONS}.keep": ["s_positive", "s_negative"],
    }
    results = run_grid(
        ["sign_intervention"],
        seeds,
        sweeps,
        [*SIGN_DEFAULTS, *base_overrides],
        output_dir,
        workers,
        progress,
        config_path=config_path,
        final_eval=False,
    )
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError(
            "sign-validation runs failed: "
            + "; ".join(f"{r.name}: {r.error.strip().splitlines()[-1]}" for r in failed)
        )
    rows = summarize_sign_runs([r.run_dir for r in results])
    out = Path(output_dir)
    (out / "signs.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    (out / "signs.md").write_text(sign_table_markdown(rows))
    return rows
