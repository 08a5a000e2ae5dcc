"""entropy_dynamics_metrics on exact logit updates, where theory must hold."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.dynamics import (
    QUADRANT_LABELS,
    QUADRANTS,
    entropy_dynamics_metrics,
    entropy_monitor_metrics,
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


def test_monitor_from_entropies_equals_the_logit_metrics_and_correlates_on_exact_updates() -> None:
    # The monitor reads per-token H before / after (what fused statistics give); on the same
    # positions its ΔH and quadrants equal entropy_dynamics_metrics' from the logits. With the
    # logits moved exactly along GRPO's direction by a small lr, the actual change is Theorem
    # 3.3's -lr w A (S - E_p[S]) up to O(lr²): the correlation is ~1.
    logits, tokens, adv, w = _batch(n=40)
    lr = 1e-3
    after = logits + theory.grpo_logit_update(logits, tokens, w * adv, lr)
    reference = entropy_dynamics_metrics(logits, after, tokens, adv, w)
    deviation = theory.discriminator(logits, tokens) - theory.expected_discriminator(logits)
    mask = torch.ones(40, dtype=torch.bool)
    mask[-3:] = False  # padding: excluded, whatever its values
    h0, h1 = theory.entropy(logits), theory.entropy(after)
    h1 = torch.where(mask, h1, torch.nan)
    got = entropy_monitor_metrics(
        h0.view(4, 10), h1.view(4, 10), adv.view(4, 10), deviation.view(4, 10),
        w.view(4, 10), mask.view(4, 10),
    )  # fmt: skip
    inside = entropy_dynamics_metrics(logits[mask], after[mask], tokens[mask], adv[mask], w[mask])
    for key in ("delta_h_actual", "delta_h_kept", "delta_h_dropped", "batch_deviation_mean",
                *(f"quadrant/{q}" for q in QUADRANTS)):  # fmt: skip
        torch.testing.assert_close(got[f"dynamics/{key}"], inside[f"dynamics/{key}"])
    assert reference["dynamics/delta_h_actual"] != got["dynamics/delta_h_actual"]  # mask bites
    assert got["dynamics/thm33_correlation"] > 0.999
    flat = entropy_monitor_metrics(h0, h0, adv, deviation, w, torch.ones(40, dtype=torch.bool))
    assert flat["dynamics/thm33_correlation"] == 0.0  # no change: no correlation, not NaN
