"""Token filters on hand-built batches (expected masks derived in comments) and against
independently written brute-force references (float64, boolean indexing, Python control flow):
Clip_B and Clip_V (``filters/paper.py``). What every filter must do: test_filters_base.py; the
baselines: test_baselines.py."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.advantages import broadcast_to_tokens, contiguous_group_ids, grpo_advantages
from entropy_dynamics.filters import (
    clip_b,
    clip_v,
)
from entropy_dynamics.stats import token_stats
from filter_helpers import PAD, mask_where, row_advantages, rows, stats_with

# ---------------------------------------------------------------------------------------------
# Clip_B
# ---------------------------------------------------------------------------------------------

# Ten valid tokens: S = -9 once and +1 nine times -> mean m = 0,
# population variance (81 + 9) / 10 = 9, σ = 3; default μ = 2.5 -> threshold m - μσ = -7.5.
CLIP_B_MASK = rows([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
CLIP_B_S = rows([[-9, 1, 1, 1, 1, 1], [1, 1, 1, 1, PAD, PAD]])


def test_clip_b_drops_negative_advantage_low_s_token():
    # row 0 has A < 0 and holds the -9 token: -9 - 0 < -7.5 -> dropped. Row 1 (A > 0) all kept.
    adv = row_advantages([-1.0, 1.0], CLIP_B_MASK)
    keep, metrics = clip_b(stats_with((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK)
    assert torch.equal(keep, CLIP_B_MASK & ~mask_where((2, 6), (0, 0)))
    # 1 of 10 valid dropped; of the 4 A > 0 tokens 0; of the 6 A < 0 tokens 1.
    torch.testing.assert_close(metrics["clip_b/frac_clipped"], torch.tensor(0.1))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_pos"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_neg"], torch.tensor(1 / 6))
    torch.testing.assert_close(metrics["clip_b/s_mean"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["clip_b/s_var"], torch.tensor(9.0))


def test_clip_b_keeps_everything_when_advantages_non_negative():
    # the -9 token now sits in a positive (then a zero-advantage) sample: never dropped.
    for a0 in (1.0, 0.0):
        adv = row_advantages([a0, 1.0], CLIP_B_MASK)
        keep, metrics = clip_b(stats_with((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu=0.0)
        assert torch.equal(keep, CLIP_B_MASK)
        assert metrics["clip_b/frac_clipped"] == 0


def test_clip_b_mu_and_zero_advantage():
    # Fifteen valid tokens: S = -4 three times, +1 twelve times -> m = 0,
    # variance (3·16 + 12·1) / 15 = 4, σ = 2. μ = 1.5 -> threshold -3; μ = 2.5 -> -5.
    mask = torch.ones(3, 5, dtype=torch.bool)
    s = rows([[-4, 1, 1, 1, 1]] * 3)
    adv = row_advantages([-1.0, 1.0, 0.0], mask)  # negative, positive, zero samples
    keep, _ = clip_b(stats_with((3, 5), s=s), adv, mask, mu=1.5)
    # only the A < 0 sample's -4 token (-4 < -3) goes; the A = 0 one is kept (reference code).
    assert torch.equal(keep, mask & ~mask_where((3, 5), (0, 0)))
    keep, _ = clip_b(stats_with((3, 5), s=s), adv, mask)  # -4 ≥ -5: nothing dropped
    assert torch.equal(keep, mask)


def test_clip_b_sigma_zero_keeps_all():
    # all S equal -> σ = 0 < 1e-12: keep every valid token even with μ = 0 and A < 0.
    # (0.25 is exact in binary, so the mean and σ = 0 are exact; like the released code, a
    # constant that rounds, such as 0.3, can give σ ~ 1e-8 > 1e-12 in float32.)
    mask = CLIP_B_MASK
    s = torch.where(mask, 0.25, PAD)
    keep, metrics = clip_b(stats_with((2, 6), s=s), -torch.ones(2, 6), mask, mu=0.0)
    assert torch.equal(keep, mask)
    assert metrics["clip_b/s_var"] == 0


def test_clip_b_two_sided_band_applies_to_all_tokens():
    # Same S (m = 0, σ = 3) but the -9 token is in a *positive* sample.
    adv = row_advantages([1.0, -1.0], CLIP_B_MASK)
    stats = stats_with((2, 6), s=CLIP_B_S)
    # band [-2.5σ, 0.5σ] = [-7.5, 1.5]: -9 dropped although A > 0; the +1 tokens are kept.
    keep, metrics = clip_b(stats, adv, CLIP_B_MASK, mu_plus=0.5, mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~mask_where((2, 6), (0, 0)))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_pos"], torch.tensor(1 / 6))
    # band [-3.5σ, 0.25σ] = [-10.5, 0.75]: only the -9 token survives, in both rows' signs.
    keep, _ = clip_b(stats, adv, CLIP_B_MASK, mu_plus=0.25, mu_minus=3.5)
    assert torch.equal(keep, mask_where((2, 6), (0, 0)))
    # an open side: mu_plus = inf keeps every high token
    keep, _ = clip_b(stats, adv, CLIP_B_MASK, mu_plus=float("inf"), mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~mask_where((2, 6), (0, 0)))


def test_band_needs_both_sides():
    adv = row_advantages([1.0, -1.0], CLIP_B_MASK)
    for fn in (clip_b, clip_v):
        with pytest.raises(ValueError, match="mu_plus and mu_minus together"):
            fn(stats_with((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu_plus=1.0)
        with pytest.raises(ValueError, match="mu must be >= 0"):
            fn(stats_with((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu=-1.0)


# ---------------------------------------------------------------------------------------------
# Clip_V: x = E_p[S] - S; with S = 0 the expected_discriminator field *is* x.
# ---------------------------------------------------------------------------------------------

# Rows: A = -1, A = -1, A = 0, A = +1; 13 valid tokens.
CLIP_V_MASK = rows([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()
CLIP_V_X = rows([[10, 20, 30, 0], [25, 0, 0, PAD], [40, 0, PAD, PAD], [50, 0, 0, 0]])
CLIP_V_VALID_X = [10, 20, 30, 0, 25, 0, 0, 40, 0, 50, 0, 0, 0]


def _clip_v_case(**options):
    adv = row_advantages([-1.0, -1.0, 0.0, 1.0], CLIP_V_MASK)
    return clip_v(stats_with((4, 4), e=CLIP_V_X), adv, CLIP_V_MASK, **options)


def test_clip_v_cap_picks_largest_negative_deviations():
    # σ = population std of the 13 valid x ≈ 17.03 (mean 175/13, E[x²] = 6125/13); μ = 0.5 ->
    # threshold ≈ 8.5 (not centred on the mean of x). Candidates (A ≤ 0, x > 8.5):
    # 10, 20, 30 (row 0), 25 (row 1) with A < 0, and 40 (row 2) with A = 0; 50 has A > 0: kept.
    # max_frac = 0.2 -> K = floor(2.6) = 2 negative-advantage drops: 30 and 25 (the largest);
    # the zero-advantage candidate is dropped outside the cap (released code's rule).
    keep, metrics = _clip_v_case(mu=0.5, max_frac=0.2)
    assert torch.equal(keep, CLIP_V_MASK & ~mask_where((4, 4), (0, 2), (1, 0), (2, 0)))
    torch.testing.assert_close(metrics["clip_v/frac_clipped"], torch.tensor(3 / 13))
    torch.testing.assert_close(metrics["clip_v/frac_clipped_neg"], torch.tensor(2 / 7))
    torch.testing.assert_close(metrics["clip_v/frac_clipped_pos"], torch.tensor(0.0))
    sigma = torch.tensor(CLIP_V_VALID_X, dtype=torch.float64).std(correction=0)
    torch.testing.assert_close(metrics["clip_v/x_std"], sigma.float())


def test_clip_v_cap_minimum_one_and_no_cap():
    # max_frac = 1e-4 -> K = max(floor(0.0013), 1) = 1: only 30, plus the A = 0 candidate 40.
    keep, _ = _clip_v_case(mu=0.5, max_frac=1e-4)
    assert torch.equal(keep, CLIP_V_MASK & ~mask_where((4, 4), (0, 2), (2, 0)))
    # max_frac = 1 -> K = 13 ≥ 4: every candidate goes.
    keep, _ = _clip_v_case(mu=0.5, max_frac=1.0)
    dropped = mask_where((4, 4), (0, 0), (0, 1), (0, 2), (1, 0), (2, 0))
    assert torch.equal(keep, CLIP_V_MASK & ~dropped)
    # default μ = 8.5 -> threshold ≈ 144.8 > every x: nothing dropped.
    keep, _ = _clip_v_case()
    assert torch.equal(keep, CLIP_V_MASK)


def test_clip_v_threshold_is_not_centred():
    # x = 9 once, -1 nine times, then shifted by -2: x = 7 and -3 -> σ = 3 (shift-invariant),
    # mean of x = -2. μ = 2.5 -> threshold 7.5: 7 is not a candidate (a centred rule would drop
    # it: 7 - (-2) = 9 > 7.5).
    x = -CLIP_B_S  # [[9, -1, ...], ...]
    adv = row_advantages([-1.0, -1.0], CLIP_B_MASK)
    keep, _ = clip_v(stats_with((2, 6), e=x - 2), adv, CLIP_B_MASK, mu=2.5, max_frac=1.0)
    assert torch.equal(keep, CLIP_B_MASK)
    keep, _ = clip_v(stats_with((2, 6), e=x), adv, CLIP_B_MASK, mu=2.5, max_frac=1.0)  # 9 > 7.5
    assert torch.equal(keep, CLIP_B_MASK & ~mask_where((2, 6), (0, 0)))


def test_clip_v_sigma_zero_keeps_all():
    # x = 0.25 everywhere: with μ = 0 every A ≤ 0 token would be a candidate (x > 0), but σ = 0.
    e = torch.where(CLIP_B_MASK, 0.25, PAD)
    keep, metrics = clip_v(stats_with((2, 6), e=e), -torch.ones(2, 6), CLIP_B_MASK, mu=0.0)
    assert torch.equal(keep, CLIP_B_MASK)
    assert metrics["clip_v/x_std"] == 0


def test_clip_v_two_sided_band():
    # x = E - S with S = CLIP_B_S, E = 0: x = 9 once (S - E = -9) and -1 nine times (S - E = 1),
    # σ = 3. Band on S - E, all tokens, no cap: [-2.5σ, 0.5σ] = [-7.5, 1.5] drops the -9 token
    # although its advantage is positive; [-3.5σ, 0.25σ] = [-10.5, 0.75] keeps only it.
    adv = row_advantages([1.0, -1.0], CLIP_B_MASK)
    stats = stats_with((2, 6), s=CLIP_B_S)
    keep, _ = clip_v(stats, adv, CLIP_B_MASK, mu_plus=0.5, mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~mask_where((2, 6), (0, 0)))
    keep, _ = clip_v(stats, adv, CLIP_B_MASK, mu_plus=0.25, mu_minus=3.5)
    assert torch.equal(keep, mask_where((2, 6), (0, 0)))


def _reference_clip_v(s, e, adv, mask, mu, max_frac):
    """The released Clip_V control flow, in float64, written independently of the library."""
    x, a, valid = (e - s).double(), adv.double(), mask.bool()
    xv = x[valid]
    sigma = ((xv - xv.mean()) ** 2).mean().sqrt()
    if sigma < 1e-12:
        return valid.clone()
    keep = (a > 0) | (x <= mu * sigma)
    n = int(valid.sum())
    clipped = valid & ~keep
    if clipped.sum() / n <= max_frac:
        return valid & keep
    k = max(int(max_frac * n), 1)
    negative = (a < 0) & valid & (x > mu * sigma)
    if int(negative.sum()) <= k:
        return valid & keep
    top = torch.topk(torch.where(negative, x, -torch.inf).flatten(), k).indices
    final = keep.clone()
    final[negative] = True
    final.view(-1)[top] = False
    return valid & final


@pytest.mark.parametrize("seed", range(6))
def test_clip_v_matches_reference_control_flow_on_real_stats(seed):
    # stats from real logits via token_stats; 8 prompts x 4 samples (groups of equal rewards give
    # A = 0 samples). Small μ and a loose cap so that both branches of the cap are exercised.
    gen = torch.Generator().manual_seed(seed)
    b, t, v = 32, 7, 13
    logits = 2.5 * torch.randn(b, t, v, generator=gen)
    tokens = torch.multinomial(torch.softmax(logits, -1).view(-1, v), 1, generator=gen).view(b, t)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    mask = torch.arange(t) < lengths.unsqueeze(1)  # (B, T)
    rewards = torch.randint(0, 2, (b,), generator=gen).float()
    adv = broadcast_to_tokens(grpo_advantages(rewards, contiguous_group_ids(8, 4)), mask)
    stats = token_stats(logits, tokens, temperature=0.9)
    for mu, max_frac in ((1.0, 0.02), (1.5, 0.5), (0.5, 1e-4)):
        keep, _ = clip_v(stats, adv, mask, mu=mu, max_frac=max_frac)
        expected = _reference_clip_v(
            stats.discriminator, stats.expected_discriminator, adv, mask, mu, max_frac
        )
        assert torch.equal(keep, expected), (mu, max_frac)
    # Clip_B against S recomputed from log p and H as the released code does: S = p (H + log p)
    lp, h = stats.logprobs.double(), stats.entropy.double()
    s = lp.exp() * (h + lp)
    sv = s[mask]
    m, sigma = sv.mean(), sv.std(correction=0)
    expected = mask & ((adv >= 0) | (s - m >= -1.0 * sigma))
    keep, _ = clip_b(stats, adv, mask, mu=1.0)
    assert torch.equal(keep, expected)
    assert not torch.equal(keep, mask)  # the case is not trivial
