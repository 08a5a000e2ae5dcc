"""The filters besides Clip_B / Clip_V on hand-built batches and brute-force references:
high_entropy (80/20), clip_cov / kl_cov, sign_intervention, none."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.filters import (
    clip_cov,
    get_filter,
    high_entropy,
    kl_cov,
    kl_cov_selection,
    sign_intervention,
)
from filter_helpers import PAD, mask_where, row_advantages, rows, stats_with

# ---------------------------------------------------------------------------------------------
# high_entropy (80/20)
# ---------------------------------------------------------------------------------------------


def test_high_entropy_quantile():
    # 10 valid entropies 0.1 … 1.0 (the two padded ones, 1.1 and 1.2, must be ignored).
    h = rows([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]])
    mask = rows([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
    stats = stats_with((2, 6), h=h)
    # ρ = 0.2: 0.8-quantile at position 0.8·9 = 7.2 -> 0.8 + 0.2·0.1 = 0.82: keep 0.9 and 1.0.
    keep, metrics = high_entropy(stats, torch.zeros(2, 6), mask)
    assert torch.equal(keep, mask_where((2, 6), (1, 2), (1, 3)))
    torch.testing.assert_close(metrics["high_entropy/threshold"], torch.tensor(0.82))
    torch.testing.assert_close(metrics["high_entropy/frac_kept"], torch.tensor(0.2))
    # ρ = 0.5: position 4.5 -> 0.55: keep 0.6 … 1.0; ρ = 1: threshold = min -> keep all.
    keep, _ = high_entropy(stats, torch.zeros(2, 6), mask, rho=0.5)
    assert torch.equal(keep, mask_where((2, 6), (0, 5), (1, 0), (1, 1), (1, 2), (1, 3)))
    keep, _ = high_entropy(stats, torch.zeros(2, 6), mask, rho=1.0)
    assert torch.equal(keep, mask)


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5, 0.93])
def test_high_entropy_threshold_equals_torch_quantile(rho):
    gen = torch.Generator().manual_seed(7)
    h = torch.randint(0, 6, (5, 11), generator=gen).float() / 5  # many ties
    mask = torch.rand(5, 11, generator=gen) < 0.7
    keep, metrics = high_entropy(stats_with((5, 11), h=h), torch.zeros(5, 11), mask, rho=rho)
    threshold = torch.quantile(h[mask], 1 - rho)
    torch.testing.assert_close(metrics["high_entropy/threshold"], threshold)
    assert torch.equal(keep, mask & (h >= threshold))


def test_high_entropy_empty_and_bad_rho():
    mask = torch.zeros(2, 3, dtype=torch.bool)
    keep, metrics = high_entropy(stats_with((2, 3)), torch.zeros(2, 3), mask)
    assert not keep.any() and metrics["high_entropy/threshold"].isnan()
    with pytest.raises(ValueError, match="rho"):
        high_entropy(stats_with((2, 3)), torch.zeros(2, 3), mask, rho=0.0)


# ---------------------------------------------------------------------------------------------
# clip_cov / kl_cov (Cui et al., arXiv 2505.22617)
# ---------------------------------------------------------------------------------------------

# Row 0 A = +1, row 1 A = -1 (mean A = 0); log p row 0 [-1, -3, -5, -7], row 1 [-2, -3, -5, -6]
# (mean -4); column 4 is padding. cov = (A - 0)(log p + 4):
# row 0 [3, 1, -1, -3], row 1 [-2, -1, 1, 2]; their mean (Cov(A, log p)) is 0.
COV_MASK = rows([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]).bool()
COV_LOGP = rows([[-1, -3, -5, -7, PAD], [-2, -3, -5, -6, PAD]])


def _cov_inputs():
    return stats_with((2, 5), logp=COV_LOGP), row_advantages([1.0, -1.0], COV_MASK)


def test_kl_cov_selection_hand():
    stats, adv = _cov_inputs()
    # ratio 0.25 -> K = max(int(0.25·8), 1) = 2: the two largest cov, 3 at (0,0) and 2 at (1,3).
    selected, metrics = kl_cov_selection(stats, adv, COV_MASK, kl_cov_ratio=0.25)
    assert torch.equal(selected, mask_where((2, 5), (0, 0), (1, 3)))
    torch.testing.assert_close(metrics["kl_cov/frac_selected"], torch.tensor(0.25))
    torch.testing.assert_close(metrics["kl_cov/cov_mean"], torch.tensor(0.0))
    # default ratio 2e-4 -> K = max(0, 1) = 1: only the largest.
    selected, _ = kl_cov_selection(stats, adv, COV_MASK)
    assert torch.equal(selected, mask_where((2, 5), (0, 0)))
    # the registered filter drops nothing and reports the same metrics
    keep, filter_metrics = kl_cov(stats, adv, COV_MASK, kl_cov_ratio=0.25)
    assert torch.equal(keep, COV_MASK)
    assert filter_metrics.keys() == metrics.keys()


def test_clip_cov_hand():
    stats, adv = _cov_inputs()
    # candidates: 1 < cov < 5 (strict, as verl): 3 at (0,0) and 2 at (1,3); the cov = 1 tokens
    # are on the bound and excluded. Ratio 0.125 -> K = 1: exactly one of the two is dropped.
    seen = set()
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        keep, metrics = clip_cov(stats, adv, COV_MASK, clip_ratio=0.125, generator=gen)
        dropped = COV_MASK & ~keep
        assert dropped.sum() == 1
        cell = tuple(dropped.nonzero()[0].tolist())
        assert cell in {(0, 0), (1, 3)}
        seen.add(cell)
        torch.testing.assert_close(metrics["clip_cov/frac_clipped"], torch.tensor(1 / 8))
        torch.testing.assert_close(metrics["clip_cov/frac_candidates"], torch.tensor(2 / 8))
    assert seen == {(0, 0), (1, 3)}  # the choice is random
    # the same generator seed reproduces the choice
    first, second = (
        clip_cov(stats, adv, COV_MASK, clip_ratio=0.125, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    )
    assert torch.equal(first[0], second[0])
    # excluding (0,0) (e.g. already PPO-clipped) leaves (1,3) as the only candidate
    keep, _ = clip_cov(
        stats, adv, COV_MASK, clip_ratio=0.125, exclude_mask=mask_where((2, 5), (0, 0))
    )
    assert torch.equal(keep, COV_MASK & ~mask_where((2, 5), (1, 3)))
    # K = 2 ≥ #candidates: both dropped
    keep, _ = clip_cov(stats, adv, COV_MASK, clip_ratio=0.25)
    assert torch.equal(keep, COV_MASK & ~mask_where((2, 5), (0, 0), (1, 3)))


def _brute_force_cov(stats, adv, mask):
    a, lp = adv.double()[mask], stats.logprobs.double()[mask]
    return (a - a.mean()) * (lp - lp.mean()), mask.flatten().nonzero().squeeze(1)


@pytest.mark.parametrize("seed", range(4))
def test_cov_filters_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    b, t = 8, 12
    mask = torch.arange(t) < torch.randint(2, t + 1, (b, 1), generator=gen)
    logp = -3 * torch.rand(b, t, generator=gen)
    adv = torch.randn(b, 1, generator=gen).expand(b, t) * 2
    stats = stats_with((b, t), logp=logp)
    cov, flat_idx = _brute_force_cov(stats, adv, mask)
    n = int(mask.sum())
    # kl_cov: top max(int(0.1 n), 1) flat positions by cov (distinct random values: no ties)
    k = max(int(0.1 * n), 1)
    expected = torch.zeros(b * t, dtype=torch.bool)
    expected[flat_idx[torch.topk(cov, k).indices]] = True
    selected, metrics = kl_cov_selection(stats, adv, mask, kl_cov_ratio=0.1)
    assert torch.equal(selected.flatten(), expected)
    torch.testing.assert_close(metrics["kl_cov/cov_mean"], cov.mean().float())
    # clip_cov: dropped ⊆ {lb < cov < ub}, |dropped| = min(K, #candidates)
    lb, ub = 0.1, 2.0
    candidates = torch.zeros(b * t, dtype=torch.bool)
    candidates[flat_idx[(cov > lb) & (cov < ub)]] = True
    k = max(int(0.05 * n), 1)
    assert int(candidates.sum()) > k  # the cap binds in this case
    keep, _ = clip_cov(stats, adv, mask, clip_ratio=0.05, clip_cov_lb=lb, clip_cov_ub=ub)
    dropped = (mask & ~keep).flatten()
    assert not (dropped & ~candidates).any()
    assert int(dropped.sum()) == k


def test_cov_option_validation():
    stats, adv = _cov_inputs()
    with pytest.raises(ValueError, match="clip_ratio must be > 0"):
        clip_cov(stats, adv, COV_MASK, clip_ratio=0.0)
    with pytest.raises(ValueError, match="clip_cov_lb < clip_cov_ub"):
        clip_cov(stats, adv, COV_MASK, clip_cov_lb=5.0, clip_cov_ub=1.0)
    with pytest.raises(ValueError, match="exclude_mask has shape"):
        clip_cov(stats, adv, COV_MASK, exclude_mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="kl_cov_ratio must be > 0"):
        kl_cov_selection(stats, adv, COV_MASK, kl_cov_ratio=-1.0)


# ---------------------------------------------------------------------------------------------
# sign_intervention (paper §4)
# ---------------------------------------------------------------------------------------------

SIGN_MASK = rows([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
SIGN_S = rows([[0.2, -0.1, 0.0, 0.7], [0.3, -0.2, 0.1, 0.0], [0.5, -0.5, PAD, PAD]])
SIGN_ADV = row_advantages([1.0, -1.0, 0.0], SIGN_MASK)  # positive, negative, zero samples


@pytest.mark.parametrize(
    ("sample_sign", "keep", "cells"),
    [
        # row 0 (A > 0): S > 0 at (0,0) only ((0,3) is padding, S = 0 at (0,2) is neither sign)
        ("positive", "s_positive", [(0, 0)]),
        ("positive", "s_negative", [(0, 1)]),
        # row 1 (A < 0): S > 0 at (1,0), (1,2); S < 0 at (1,1). Row 2 (A = 0) never kept.
        ("negative", "s_positive", [(1, 0), (1, 2)]),
        ("negative", "s_negative", [(1, 1)]),
    ],
)
def test_sign_intervention(sample_sign, keep, cells):
    mask, metrics = sign_intervention(
        stats_with((3, 4), s=SIGN_S), SIGN_ADV, SIGN_MASK, sample_sign=sample_sign, keep=keep
    )
    assert torch.equal(mask, mask_where((3, 4), *cells))
    # 9 valid tokens; the chosen samples hold 3 (row 0) or 4 (row 1) of them
    torch.testing.assert_close(metrics["sign_intervention/frac_kept"], torch.tensor(len(cells) / 9))
    in_samples = 3 / 9 if sample_sign == "positive" else 4 / 9
    torch.testing.assert_close(
        metrics["sign_intervention/frac_sample_tokens"], torch.tensor(in_samples)
    )


def test_sign_intervention_bad_options():
    stats = stats_with((3, 4), s=SIGN_S)
    with pytest.raises(ValueError, match="sample_sign must be 'positive' or 'negative'"):
        sign_intervention(stats, SIGN_ADV, SIGN_MASK, sample_sign="pos")
    with pytest.raises(ValueError, match="keep must be 's_positive' or 's_negative'"):
        sign_intervention(stats, SIGN_ADV, SIGN_MASK, keep="positive")


def test_none_keeps_valid_tokens():
    keep, metrics = get_filter("none")(stats_with((3, 4), s=SIGN_S), SIGN_ADV, SIGN_MASK.int())
    assert torch.equal(keep, SIGN_MASK) and metrics == {}
