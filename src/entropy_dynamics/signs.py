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

The observed direction is the sign of the summed actual ΔH (``dynamics/delta_h_actual``: each
step's batch re-measured after its update, so it isolates the intervention's own effect); the
change of the rollout entropy from the first to the last step is reported beside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "SIGN_CASES",
    "SignCase",
    "SignRow",
    "sign_row",
    "sign_table_markdown",
    "summarize_sign_runs",
    "validate_signs",
]

_OPTIONS = "algorithm.loss.filter_options"


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
    delta_h_sum: float
    """Σ over steps of the actual per-token ΔH of each update, mean over seeds."""
    delta_h_sum_std: float
    first_order_sum: float
    """Σ over steps of the first-order prediction (measured Δz), mean over seeds."""
    steps_agreeing: float
    """Fraction of (seed, step) updates whose actual ΔH has the predicted sign."""
    entropy_first: float
    entropy_last: float
    entropy_change: float
    """Rollout entropy of the last step minus that of the first, mean over seeds."""
    entropy_change_std: float
    observed: str
    agrees: bool
    """The summed actual ΔH has the predicted sign."""
    entropy_agrees: bool
    """The first-to-last rollout entropy change has the predicted sign."""


def _direction(value: float) -> str:
    if not math.isfinite(value) or value == 0:
        return "flat"
    return "rises" if value > 0 else "falls"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def sign_row(case: SignCase, histories: Sequence[Sequence[Mapping[str, float]]]) -> SignRow:
    """Summarise one intervention from the metric rows of each seed's run.

    Args:
        case: the intervention and its predicted direction.
        histories: per seed, the ``metrics.jsonl`` rows (rows without training metrics, such
            as step 0's evaluation, are ignored).
    """
    if not histories:
        raise ValueError(f"sign case {case.sample_sign}/{case.keep}: no runs")
    sums, first_order, entropy_first, entropy_last, agreeing, total = [], [], [], [], 0, 0
    for rows in histories:
        train = [r for r in rows if "dynamics/delta_h_actual" in r and "entropy/mean" in r]
        if not train:
            raise ValueError(
                f"sign case {case.sample_sign}/{case.keep}: a run has no dynamics metrics "
                "(train with dynamics=true)"
            )
        changes = [r["dynamics/delta_h_actual"] for r in train]
        sums.append(sum(changes))
        first_order.append(sum(r.get("dynamics/delta_h_first_order", math.nan) for r in train))
        agreeing += sum(case.predicted * c > 0 for c in changes)
        total += len(changes)
        entropy_first.append(train[0]["entropy/mean"])
        entropy_last.append(train[-1]["entropy/mean"])
    delta, delta_std = _mean_std(sums)
    change, change_std = _mean_std(
        [b - a for a, b in zip(entropy_first, entropy_last, strict=True)]
    )
    predicted = "rises" if case.predicted > 0 else "falls"
    return SignRow(
        sample_sign=case.sample_sign,
        keep=case.keep,
        predicted=predicted,
        seeds=len(histories),
        delta_h_sum=delta,
        delta_h_sum_std=delta_std,
        first_order_sum=_mean_std(first_order)[0],
        steps_agreeing=agreeing / total,
        entropy_first=_mean_std(entropy_first)[0],
        entropy_last=_mean_std(entropy_last)[0],
        entropy_change=change,
        entropy_change_std=change_std,
        observed=_direction(delta),
        agrees=_direction(delta) == predicted,
        entropy_agrees=_direction(change) == predicted,
    )


def _pm(mean: float, std: float, seeds: int, fmt: str = "+.3e") -> str:
    return f"{mean:{fmt}} ± {std:.1e}" if seeds > 1 else f"{mean:{fmt}}"


def sign_table_markdown(rows: Sequence[SignRow]) -> str:
    """A Markdown table of the interventions, with a final line counting the agreements."""
    header = (
        "| samples | tokens kept | predicted | observed (Σ actual ΔH) | Σ actual ΔH | "
        "Σ first-order ΔH | steps agreeing | entropy first → last | entropy change | agrees |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        keep = "S_k > 0" if r.keep == "s_positive" else "S_k < 0"
        lines.append(
            f"| {r.sample_sign} | {keep} | {r.predicted} | {r.observed} | "
            f"{_pm(r.delta_h_sum, r.delta_h_sum_std, r.seeds)} | {r.first_order_sum:+.3e} | "
            f"{r.steps_agreeing:.0%} | {r.entropy_first:.4f} → {r.entropy_last:.4f} | "
            f"{_pm(r.entropy_change, r.entropy_change_std, r.seeds, '+.4f')} | "
            f"{'yes' if r.agrees else 'NO'} |"
        )
    agree = sum(r.agrees for r in rows)
    trend = sum(r.entropy_agrees for r in rows)
    lines.append("")
    lines.append(
        f"{agree}/{len(rows)} directions reproduced by the summed actual ΔH; "
        f"{trend}/{len(rows)} by the first-to-last rollout entropy change."
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

    from entropy_dynamics.metrics import read_metrics

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

    Evaluation is off by default (``eval.every=0``; an override wins): only the entropy matters.
    """
    from entropy_dynamics.experiments import run_grid

    sweeps = {
        f"{_OPTIONS}.sample_sign": ["positive", "negative"],
        f"{_OPTIONS}.keep": ["s_positive", "s_negative"],
    }
    results = run_grid(
        ["sign_intervention"],
        seeds,
        sweeps,
        ["eval.every=0", *base_overrides],
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
