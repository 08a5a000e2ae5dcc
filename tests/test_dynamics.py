"""entropy_dynamics_metrics on exact logit updates, where theory must hold."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.dynamics import (
    QUADRANT_LABELS,
    QUADRANTS,
    entropy_dynamics_metrics,
    row_chunks,
)


def _batch(n: int = 12, vocab: int = 30, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, vocab, generator=gen, dtype=torch.float64)
    tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    advantages = torch.randn(n, generator=gen, dtype=torch.float64)
    weights = torch.ones(n, dtype=torch.float64)
    weights[::4] = 0.0  # some dropped tokens
    return logits, tokens, advantages, weights


def test_exact_grpo_update_recovers_step_and_theorem_3_3() -> None:
    # If the logits move exactly by lr · w A (e_k - p), the fitted step is lr and Theorem 3.3's
    # prediction equals grpo_entropy_change, which is within O(lr²) of the actual change.
    logits, tokens, adv, w = _batch()
    lr, temperature = 1e-3, 0.8
    delta = theory.grpo_logit_update(logits, tokens, w * adv, lr, temperature)
    metrics = entropy_dynamics_metrics(logits, logits + delta, tokens, adv, w, temperature)
    assert metrics["dynamics/effective_logit_lr"].item() == pytest.approx(lr, rel=1e-5)
    expected = theory.grpo_entropy_change(logits, tokens, w * adv, lr, temperature).mean()
    assert metrics["dynamics/delta_h_thm33"].item() == pytest.approx(expected.item(), rel=1e-4)
    actual = metrics["dynamics/delta_h_actual"].item()
    assert metrics["dynamics/delta_h_first_order"].item() == pytest.approx(actual, rel=1e-2)
    assert metrics["dynamics/delta_h_thm33"].item() == pytest.approx(actual, rel=1e-2)


def test_quadrants_sum_to_the_actual_change_of_nonzero_advantages() -> None:
    logits, tokens, adv, w = _batch(seed=1)
    gen = torch.Generator().manual_seed(2)
    after = logits + 0.05 * torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    metrics = entropy_dynamics_metrics(logits, after, tokens, adv, w)
    total = sum(v for k, v in metrics.items() if k.startswith("dynamics/quadrant/"))
    assert total.item() == pytest.approx(metrics["dynamics/delta_h_actual"].item(), rel=1e-5)


def test_constant_logit_shift_changes_nothing() -> None:
    logits, tokens, adv, w = _batch(seed=3)
    metrics = entropy_dynamics_metrics(logits, logits + 5.0, tokens, adv, w)
    for key in ("delta_h_actual", "delta_h_first_order", "effective_logit_lr", "delta_h_thm33"):
        assert abs(metrics[f"dynamics/{key}"].item()) < 1e-5


def test_shape_errors_are_clear() -> None:
    logits, tokens, adv, w = _batch()
    with pytest.raises(ValueError, match="advantages"):
        entropy_dynamics_metrics(logits, logits, tokens, adv[:-1], w)
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        entropy_dynamics_metrics(logits, logits[:-1], tokens, adv, w)


def test_kept_and_dropped_changes_split_the_actual_change() -> None:
    # Hand-built: only positions with w·A != 0 count as trained; the two means, weighted by
    # their counts, give back the overall mean change.
    logits, tokens, adv, w = _batch(seed=4)
    adv[1] = 0.0  # a zero-advantage position is untrained even with weight 1
    gen = torch.Generator().manual_seed(5)
    after = logits + 0.05 * torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    metrics = entropy_dynamics_metrics(logits, after, tokens, adv, w)
    change = theory.entropy(after) - theory.entropy(logits)
    trained = (w * adv) != 0
    assert int(trained.sum()) == 12 - 3 - 1
    kept, dropped = change[trained].mean().item(), change[~trained].mean().item()
    # metrics are computed in float32: H ~ 3, so differences carry ~1e-7 absolute error
    assert metrics["dynamics/delta_h_kept"].item() == pytest.approx(kept, abs=1e-6)
    assert metrics["dynamics/delta_h_dropped"].item() == pytest.approx(dropped, abs=1e-6)


def test_row_chunks_cover_the_rows_in_order() -> None:
    assert row_chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert row_chunks(5, None) == [slice(0, 5)] and row_chunks(0, 3) == []
    with pytest.raises(ValueError, match="rows_per_chunk"):
        row_chunks(5, 0)


def test_quadrant_labels_follow_the_signs() -> None:
    assert list(QUADRANT_LABELS) == list(QUADRANTS)
    assert QUADRANT_LABELS["pos_adv_neg_dev"] == "A > 0, S_k < E_p[S]"
    assert QUADRANT_LABELS["neg_adv_pos_dev"] == "A < 0, S_k > E_p[S]"
