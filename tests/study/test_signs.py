"""Sign validation: the table logic on hand-made metrics (directions, sizes, agreement)."""

from __future__ import annotations

import json
import math

import pytest

from entropy_dynamics.study.signs import (
    SIGN_CASES,
    sign_row,
    sign_table_markdown,
    summarize_sign_runs,
)
from entropy_dynamics.training.config import load_config, save_config


def _history(changes, entropies, batch=None):
    """Metric rows: trained-position ΔH ``changes``; whole-batch ΔH = ``batch`` (default c/10)."""
    rows = [{"step": 0, "eval/avg@2": 0.0}]  # an evaluation row is ignored
    batch = batch or [c / 10 for c in changes]
    for t, (c, h, b) in enumerate(zip(changes, entropies, batch, strict=True), start=1):
        rows.append(
            {
                "step": t,
                "entropy/mean": h,
                "dynamics/delta_h_kept": c,
                "dynamics/delta_h_actual": b,
                "dynamics/delta_h_first_order": 2 * b,
            }
        )
    return rows


def test_theorem_3_2_predictions() -> None:
    # ΔH = -ε S_k: a positive sample raises the token's logit (ε > 0), a negative one lowers it.
    predicted = {(c.sample_sign, c.keep): c.predicted for c in SIGN_CASES}
    for (sample, keep), direction in predicted.items():
        epsilon = 1 if sample == "positive" else -1
        s_k = 1 if keep == "s_positive" else -1
        assert direction == -epsilon * s_k


def test_sign_row_over_seeds() -> None:
    case = SIGN_CASES[0]  # positive samples, S_k > 0: entropy falls
    seed0 = _history([-0.01, -0.02, 0.005], [2.0, 1.9, 1.8])
    seed1 = _history([-0.03, -0.01, -0.01], [2.1, 2.0, 1.7])
    row = sign_row(case, [seed0, seed1])
    # Σ ΔH: seed 0 = -0.025, seed 1 = -0.05 → mean -0.0375, sample std 0.025/√2.
    assert row.trained_sum == pytest.approx(-0.0375)
    assert row.trained_sum_std == pytest.approx(0.025 / math.sqrt(2))
    # The whole batch moved a tenth as much; first order predicted twice that.
    assert (row.batch_sum, row.batch_sum_std) == pytest.approx((-0.00375, 0.0025 / math.sqrt(2)))
    assert row.first_order_sum == pytest.approx(-0.0075)
    assert row.batch_agrees
    assert row.steps_agreeing == pytest.approx(5 / 6)  # all but seed 0's last step fall
    # Entropy first → last: 2.0 → 1.8 and 2.1 → 1.7: changes -0.2, -0.4.
    assert (row.entropy_first, row.entropy_last) == pytest.approx((2.05, 1.75))
    assert row.entropy_change == pytest.approx(-0.3)
    assert row.entropy_change_std == pytest.approx(0.2 / math.sqrt(2))
    assert (row.predicted, row.observed, row.agrees, row.entropy_agrees) == (
        "falls",
        "falls",
        True,
        True,
    )


def test_disagreement_is_reported() -> None:
    case = SIGN_CASES[1]  # positive samples, S_k < 0: entropy should rise
    row = sign_row(case, [_history([0.01, -0.03], [1.0, 1.2], batch=[0.01, 0.0])])
    assert (row.predicted, row.observed, row.agrees) == ("rises", "falls", False)
    assert row.batch_agrees  # the whole batch's entropy did rise
    assert row.entropy_agrees  # the rollout entropy did rise
    assert row.steps_agreeing == 0.5
    flat = sign_row(case, [_history([0.0], [1.0])])
    assert flat.observed == "flat" and not flat.agrees
    table = sign_table_markdown([row, flat])
    assert table.count("| NO |") == 2
    assert "0/2 directions reproduced at the trained tokens; 1/2 by the whole-batch" in table


def test_sign_row_needs_dynamics() -> None:
    with pytest.raises(ValueError, match="no dynamics metrics"):
        sign_row(SIGN_CASES[0], [[{"step": 1, "entropy/mean": 1.0}]])
    with pytest.raises(ValueError, match="no runs"):
        sign_row(SIGN_CASES[0], [])


def _write(root, name, overrides, rows):
    config = load_config(None, [f"name={name}", f"output_dir={root}", *overrides])
    config.run_dir.mkdir(parents=True)
    save_config(config, config.run_dir / "config.yaml")
    (config.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return config.run_dir


def test_summarize_sign_runs_groups_cases_in_theorem_order(tmp_path) -> None:
    dirs = []
    for case in reversed(SIGN_CASES):
        for seed in (0, 1):
            overrides = [
                "algorithm.method=sign_intervention",
                f"algorithm.loss.filter_options.sample_sign={case.sample_sign}",
                f"algorithm.loss.filter_options.keep={case.keep}",
                f"seed={seed}",
            ]
            change = 0.01 * case.predicted * (seed + 1)
            history = _history([change, change], [1.0, 1.0 + 2 * change])
            dirs.append(
                _write(tmp_path, f"{case.sample_sign}-{case.keep}-{seed}", overrides, history)
            )
    rows = summarize_sign_runs(dirs)
    assert [(r.sample_sign, r.keep) for r in rows] == [(c.sample_sign, c.keep) for c in SIGN_CASES]
    assert all(r.agrees and r.seeds == 2 for r in rows)
    # Σ ΔH = 2·0.01·(seed + 1)·direction → mean 0.03 in the predicted direction.
    assert [r.trained_sum for r in rows] == pytest.approx([0.03 * c.predicted for c in SIGN_CASES])
    assert "4/4 directions reproduced" in sign_table_markdown(rows)
    other = _write(tmp_path, "grpo", [], _history([0.0], [1.0]))
    with pytest.raises(ValueError, match="not a sign_intervention run"):
        summarize_sign_runs([other])
