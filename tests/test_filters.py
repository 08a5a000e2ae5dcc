"""Token filters on hand-built batches (expected masks derived in comments) and against
independently written brute-force references (float64, boolean indexing, Python control flow)."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.advantages import broadcast_to_tokens, contiguous_group_ids, grpo_advantages
from entropy_dynamics.filters import (
    available_filters,
    clip_b,
    clip_cov,
    clip_v,
    get_filter,
    high_entropy,
    kl_cov,
    kl_cov_selection,
    sign_intervention,
)
from entropy_dynamics.stats import TokenStats, token_stats

PAD = float("nan")  # padded entries: must never reach a statistic


def _t(rows: list[list[float]], dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def _stats(shape, *, s=None, e=None, logp=None, h=None, dtype=torch.float32) -> TokenStats:
    """TokenStats with chosen fields; the others are zeros."""

    def field(x):
        return torch.zeros(shape, dtype=dtype) if x is None else x.to(dtype)

    return TokenStats(field(logp), field(h), field(s), field(e))


def _row_advantages(values: list[float], mask: torch.Tensor) -> torch.Tensor:
    return broadcast_to_tokens(torch.tensor(values), mask)


def _mask_where(shape, *cells) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for r, c in cells:
        mask[r, c] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Clip_B
# ---------------------------------------------------------------------------------------------

# Ten valid tokens: S = -9 once and +1 nine times -> mean m = 0,
# population variance (81 + 9) / 10 = 9, σ = 3; default μ = 2.5 -> threshold m - μσ = -7.5.
CLIP_B_MASK = _t([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
CLIP_B_S = _t([[-9, 1, 1, 1, 1, 1], [1, 1, 1, 1, PAD, PAD]])


def test_clip_b_drops_negative_advantage_low_s_token():
    # row 0 has A < 0 and holds the -9 token: -9 - 0 < -7.5 -> dropped. Row 1 (A > 0) all kept.
    adv = _row_advantages([-1.0, 1.0], CLIP_B_MASK)
    keep, metrics = clip_b(_stats((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK)
    assert torch.equal(keep, CLIP_B_MASK & ~_mask_where((2, 6), (0, 0)))
    # 1 of 10 valid dropped; of the 4 A > 0 tokens 0; of the 6 A < 0 tokens 1.
    torch.testing.assert_close(metrics["clip_b/frac_clipped"], torch.tensor(0.1))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_pos"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_neg"], torch.tensor(1 / 6))
    torch.testing.assert_close(metrics["clip_b/s_mean"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["clip_b/s_var"], torch.tensor(9.0))


def test_clip_b_keeps_everything_when_advantages_non_negative():
    # the -9 token now sits in a positive (then a zero-advantage) sample: never dropped.
    for a0 in (1.0, 0.0):
        adv = _row_advantages([a0, 1.0], CLIP_B_MASK)
        keep, metrics = clip_b(_stats((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu=0.0)
        assert torch.equal(keep, CLIP_B_MASK)
        assert metrics["clip_b/frac_clipped"] == 0


def test_clip_b_mu_and_zero_advantage():
    # Fifteen valid tokens: S = -4 three times, +1 twelve times -> m = 0,
    # variance (3·16 + 12·1) / 15 = 4, σ = 2. μ = 1.5 -> threshold -3; μ = 2.5 -> -5.
    mask = torch.ones(3, 5, dtype=torch.bool)
    s = _t([[-4, 1, 1, 1, 1]] * 3)
    adv = _row_advantages([-1.0, 1.0, 0.0], mask)  # negative, positive, zero samples
    keep, _ = clip_b(_stats((3, 5), s=s), adv, mask, mu=1.5)
    # only the A < 0 sample's -4 token (-4 < -3) goes; the A = 0 one is kept (reference code).
    assert torch.equal(keep, mask & ~_mask_where((3, 5), (0, 0)))
    keep, _ = clip_b(_stats((3, 5), s=s), adv, mask)  # -4 ≥ -5: nothing dropped
    assert torch.equal(keep, mask)


def test_clip_b_sigma_zero_keeps_all():
    # all S equal -> σ = 0 < 1e-12: keep every valid token even with μ = 0 and A < 0.
    # (0.25 is exact in binary, so the mean and σ = 0 are exact; like the released code, a
    # constant that rounds, such as 0.3, can give σ ~ 1e-8 > 1e-12 in float32.)
    mask = CLIP_B_MASK
    s = torch.where(mask, 0.25, PAD)
    keep, metrics = clip_b(_stats((2, 6), s=s), -torch.ones(2, 6), mask, mu=0.0)
    assert torch.equal(keep, mask)
    assert metrics["clip_b/s_var"] == 0


def test_clip_b_two_sided_band_applies_to_all_tokens():
    # Same S (m = 0, σ = 3) but the -9 token is in a *positive* sample.
    adv = _row_advantages([1.0, -1.0], CLIP_B_MASK)
    stats = _stats((2, 6), s=CLIP_B_S)
    # band [-2.5σ, 0.5σ] = [-7.5, 1.5]: -9 dropped although A > 0; the +1 tokens are kept.
    keep, metrics = clip_b(stats, adv, CLIP_B_MASK, mu_plus=0.5, mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~_mask_where((2, 6), (0, 0)))
    torch.testing.assert_close(metrics["clip_b/frac_clipped_pos"], torch.tensor(1 / 6))
    # band [-3.5σ, 0.25σ] = [-10.5, 0.75]: only the -9 token survives, in both rows' signs.
    keep, _ = clip_b(stats, adv, CLIP_B_MASK, mu_plus=0.25, mu_minus=3.5)
    assert torch.equal(keep, _mask_where((2, 6), (0, 0)))
    # an open side: mu_plus = inf keeps every high token
    keep, _ = clip_b(stats, adv, CLIP_B_MASK, mu_plus=float("inf"), mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~_mask_where((2, 6), (0, 0)))


def test_band_needs_both_sides():
    adv = _row_advantages([1.0, -1.0], CLIP_B_MASK)
    for fn in (clip_b, clip_v):
        with pytest.raises(ValueError, match="mu_plus and mu_minus together"):
            fn(_stats((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu_plus=1.0)
        with pytest.raises(ValueError, match="mu must be >= 0"):
            fn(_stats((2, 6), s=CLIP_B_S), adv, CLIP_B_MASK, mu=-1.0)


# ---------------------------------------------------------------------------------------------
# Clip_V: x = E_p[S] - S; with S = 0 the expected_discriminator field *is* x.
# ---------------------------------------------------------------------------------------------

# Rows: A = -1, A = -1, A = 0, A = +1; 13 valid tokens.
CLIP_V_MASK = _t([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).bool()
CLIP_V_X = _t([[10, 20, 30, 0], [25, 0, 0, PAD], [40, 0, PAD, PAD], [50, 0, 0, 0]])
CLIP_V_VALID_X = [10, 20, 30, 0, 25, 0, 0, 40, 0, 50, 0, 0, 0]


def _clip_v_case(**options):
    adv = _row_advantages([-1.0, -1.0, 0.0, 1.0], CLIP_V_MASK)
    return clip_v(_stats((4, 4), e=CLIP_V_X), adv, CLIP_V_MASK, **options)


def test_clip_v_cap_picks_largest_negative_deviations():
    # σ = population std of the 13 valid x ≈ 17.03 (mean 175/13, E[x²] = 6125/13); μ = 0.5 ->
    # threshold ≈ 8.5 (not centred on the mean of x). Candidates (A ≤ 0, x > 8.5):
    # 10, 20, 30 (row 0), 25 (row 1) with A < 0, and 40 (row 2) with A = 0; 50 has A > 0: kept.
    # max_frac = 0.2 -> K = floor(2.6) = 2 negative-advantage drops: 30 and 25 (the largest);
    # the zero-advantage candidate is dropped outside the cap (released code's rule).
    keep, metrics = _clip_v_case(mu=0.5, max_frac=0.2)
    assert torch.equal(keep, CLIP_V_MASK & ~_mask_where((4, 4), (0, 2), (1, 0), (2, 0)))
    torch.testing.assert_close(metrics["clip_v/frac_clipped"], torch.tensor(3 / 13))
    torch.testing.assert_close(metrics["clip_v/frac_clipped_neg"], torch.tensor(2 / 7))
    torch.testing.assert_close(metrics["clip_v/frac_clipped_pos"], torch.tensor(0.0))
    sigma = torch.tensor(CLIP_V_VALID_X, dtype=torch.float64).std(correction=0)
    torch.testing.assert_close(metrics["clip_v/x_std"], sigma.float())


def test_clip_v_cap_minimum_one_and_no_cap():
    # max_frac = 1e-4 -> K = max(floor(0.0013), 1) = 1: only 30, plus the A = 0 candidate 40.
    keep, _ = _clip_v_case(mu=0.5, max_frac=1e-4)
    assert torch.equal(keep, CLIP_V_MASK & ~_mask_where((4, 4), (0, 2), (2, 0)))
    # max_frac = 1 -> K = 13 ≥ 4: every candidate goes.
    keep, _ = _clip_v_case(mu=0.5, max_frac=1.0)
    dropped = _mask_where((4, 4), (0, 0), (0, 1), (0, 2), (1, 0), (2, 0))
    assert torch.equal(keep, CLIP_V_MASK & ~dropped)
    # default μ = 8.5 -> threshold ≈ 144.8 > every x: nothing dropped.
    keep, _ = _clip_v_case()
    assert torch.equal(keep, CLIP_V_MASK)


def test_clip_v_threshold_is_not_centred():
    # x = 9 once, -1 nine times, then shifted by -2: x = 7 and -3 -> σ = 3 (shift-invariant),
    # mean of x = -2. μ = 2.5 -> threshold 7.5: 7 is not a candidate (a centred rule would drop
    # it: 7 - (-2) = 9 > 7.5).
    x = -CLIP_B_S  # [[9, -1, ...], ...]
    adv = _row_advantages([-1.0, -1.0], CLIP_B_MASK)
    keep, _ = clip_v(_stats((2, 6), e=x - 2), adv, CLIP_B_MASK, mu=2.5, max_frac=1.0)
    assert torch.equal(keep, CLIP_B_MASK)
    keep, _ = clip_v(_stats((2, 6), e=x), adv, CLIP_B_MASK, mu=2.5, max_frac=1.0)  # 9 > 7.5
    assert torch.equal(keep, CLIP_B_MASK & ~_mask_where((2, 6), (0, 0)))


def test_clip_v_sigma_zero_keeps_all():
    # x = 0.25 everywhere: with μ = 0 every A ≤ 0 token would be a candidate (x > 0), but σ = 0.
    e = torch.where(CLIP_B_MASK, 0.25, PAD)
    keep, metrics = clip_v(_stats((2, 6), e=e), -torch.ones(2, 6), CLIP_B_MASK, mu=0.0)
    assert torch.equal(keep, CLIP_B_MASK)
    assert metrics["clip_v/x_std"] == 0


def test_clip_v_two_sided_band():
    # x = E - S with S = CLIP_B_S, E = 0: x = 9 once (S - E = -9) and -1 nine times (S - E = 1),
    # σ = 3. Band on S - E, all tokens, no cap: [-2.5σ, 0.5σ] = [-7.5, 1.5] drops the -9 token
    # although its advantage is positive; [-3.5σ, 0.25σ] = [-10.5, 0.75] keeps only it.
    adv = _row_advantages([1.0, -1.0], CLIP_B_MASK)
    stats = _stats((2, 6), s=CLIP_B_S)
    keep, _ = clip_v(stats, adv, CLIP_B_MASK, mu_plus=0.5, mu_minus=2.5)
    assert torch.equal(keep, CLIP_B_MASK & ~_mask_where((2, 6), (0, 0)))
    keep, _ = clip_v(stats, adv, CLIP_B_MASK, mu_plus=0.25, mu_minus=3.5)
    assert torch.equal(keep, _mask_where((2, 6), (0, 0)))


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


# ---------------------------------------------------------------------------------------------
# Every filter: padding is never counted and never kept; no autograd; dtype; validation
# ---------------------------------------------------------------------------------------------

FILTER_OPTIONS = {
    "clip_b": {"mu": 0.5},
    "clip_v": {"mu": 0.5, "max_frac": 0.1},
    "high_entropy": {"rho": 0.3},
    "clip_cov": {"clip_ratio": 0.1, "clip_cov_lb": 0.0, "clip_cov_ub": 10.0},
    "kl_cov": {"kl_cov_ratio": 0.1},
    "sign_intervention": {"sample_sign": "negative", "keep": "s_negative"},
    "none": {},
}


def _random_batch(seed: int, pad_value: float, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    shape = (6, 9)
    mask = torch.arange(9) < torch.tensor([9, 3, 7, 1, 5, 8]).unsqueeze(1)

    def field(scale=1.0):
        x = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        return torch.where(mask, x, pad_value).to(dtype)

    stats = TokenStats(field(), field().abs(), field(0.3), field(0.3))
    adv = torch.where(mask, torch.randn(6, 1, generator=gen, dtype=torch.float64), pad_value)
    return stats, adv.to(dtype), mask


def test_filter_registry():
    # Names starting with '_' are private registrations of other test modules.
    assert set(FILTER_OPTIONS) == {n for n in available_filters() if not n.startswith("_")}
    assert get_filter("clip_b") is clip_b
    with pytest.raises(KeyError, match="clip_b, clip_cov, clip_v"):
        get_filter("clip_x")


@pytest.mark.parametrize("name", sorted(FILTER_OPTIONS))
def test_padding_never_counted_nor_kept(name):
    fn = get_filter(name)
    results = []
    for pad_value in (0.0, float("nan"), 1e30, -float("inf")):
        stats, adv, mask = _random_batch(3, pad_value)
        options = dict(FILTER_OPTIONS[name])
        if name == "clip_cov":
            options["generator"] = torch.Generator().manual_seed(0)
        keep, metrics = fn(stats, adv, mask, **options)
        assert keep.dtype == torch.bool and keep.shape == mask.shape
        assert not (keep & ~mask).any()
        results.append((keep, metrics))
    for keep, metrics in results[1:]:
        assert torch.equal(keep, results[0][0])
        assert metrics.keys() == results[0][1].keys()
        for key, value in metrics.items():
            assert value.dim() == 0, key
            torch.testing.assert_close(value, results[0][1][key], equal_nan=True)
    # the random case is non-trivial for the filters that drop tokens
    if name not in ("none", "kl_cov"):
        assert 0 < results[0][0].sum() < mask.sum()


@pytest.mark.parametrize("name", sorted(FILTER_OPTIONS))
def test_filters_are_detached_and_follow_float64(name):
    stats, adv, mask = _random_batch(4, 0.0, dtype=torch.float64)
    logprobs = stats.logprobs.clone().requires_grad_(True)
    stats = TokenStats(logprobs, stats.entropy, stats.discriminator, stats.expected_discriminator)
    keep, metrics = get_filter(name)(stats, adv, mask, **FILTER_OPTIONS[name])
    assert not keep.requires_grad
    for value in metrics.values():
        assert not value.requires_grad
        if value.is_floating_point():
            assert value.dtype == torch.float64


@pytest.mark.parametrize("name", sorted(FILTER_OPTIONS))
def test_shape_validation(name):
    stats, adv, mask = _random_batch(0, 0.0)
    fn = get_filter(name)
    with pytest.raises(ValueError, match=r"advantages has shape \(6,\)"):
        fn(stats, adv[:, 0], mask)
    bad = TokenStats(stats.logprobs, stats.entropy[:, :4], stats.discriminator, stats.logprobs)
    with pytest.raises(ValueError, match=r"stats\.entropy has shape"):
        fn(bad, adv, mask)


# ---------------------------------------------------------------------------------------------
# high_entropy (80/20)
# ---------------------------------------------------------------------------------------------


def test_high_entropy_quantile():
    # 10 valid entropies 0.1 … 1.0 (the two padded ones, 1.1 and 1.2, must be ignored).
    h = _t([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]])
    mask = _t([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]).bool()
    stats = _stats((2, 6), h=h)
    # ρ = 0.2: 0.8-quantile at position 0.8·9 = 7.2 -> 0.8 + 0.2·0.1 = 0.82: keep 0.9 and 1.0.
    keep, metrics = high_entropy(stats, torch.zeros(2, 6), mask)
    assert torch.equal(keep, _mask_where((2, 6), (1, 2), (1, 3)))
    torch.testing.assert_close(metrics["high_entropy/threshold"], torch.tensor(0.82))
    torch.testing.assert_close(metrics["high_entropy/frac_kept"], torch.tensor(0.2))
    # ρ = 0.5: position 4.5 -> 0.55: keep 0.6 … 1.0; ρ = 1: threshold = min -> keep all.
    keep, _ = high_entropy(stats, torch.zeros(2, 6), mask, rho=0.5)
    assert torch.equal(keep, _mask_where((2, 6), (0, 5), (1, 0), (1, 1), (1, 2), (1, 3)))
    keep, _ = high_entropy(stats, torch.zeros(2, 6), mask, rho=1.0)
    assert torch.equal(keep, mask)


@pytest.mark.parametrize("rho", [0.05, 0.2, 0.5, 0.93])
def test_high_entropy_threshold_equals_torch_quantile(rho):
    gen = torch.Generator().manual_seed(7)
    h = torch.randint(0, 6, (5, 11), generator=gen).float() / 5  # many ties
    mask = torch.rand(5, 11, generator=gen) < 0.7
    keep, metrics = high_entropy(_stats((5, 11), h=h), torch.zeros(5, 11), mask, rho=rho)
    threshold = torch.quantile(h[mask], 1 - rho)
    torch.testing.assert_close(metrics["high_entropy/threshold"], threshold)
    assert torch.equal(keep, mask & (h >= threshold))


def test_high_entropy_empty_and_bad_rho():
    mask = torch.zeros(2, 3, dtype=torch.bool)
    keep, metrics = high_entropy(_stats((2, 3)), torch.zeros(2, 3), mask)
    assert not keep.any() and metrics["high_entropy/threshold"].isnan()
    with pytest.raises(ValueError, match="rho"):
        high_entropy(_stats((2, 3)), torch.zeros(2, 3), mask, rho=0.0)


# ---------------------------------------------------------------------------------------------
# clip_cov / kl_cov (Cui et al., arXiv 2505.22617)
# ---------------------------------------------------------------------------------------------

# Row 0 A = +1, row 1 A = -1 (mean A = 0); log p row 0 [-1, -3, -5, -7], row 1 [-2, -3, -5, -6]
# (mean -4); column 4 is padding. cov = (A - 0)(log p + 4):
# row 0 [3, 1, -1, -3], row 1 [-2, -1, 1, 2]; their mean (Cov(A, log p)) is 0.
COV_MASK = _t([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]).bool()
COV_LOGP = _t([[-1, -3, -5, -7, PAD], [-2, -3, -5, -6, PAD]])


def _cov_inputs():
    return _stats((2, 5), logp=COV_LOGP), _row_advantages([1.0, -1.0], COV_MASK)


def test_kl_cov_selection_hand():
    stats, adv = _cov_inputs()
    # ratio 0.25 -> K = max(int(0.25·8), 1) = 2: the two largest cov, 3 at (0,0) and 2 at (1,3).
    selected, metrics = kl_cov_selection(stats, adv, COV_MASK, kl_cov_ratio=0.25)
    assert torch.equal(selected, _mask_where((2, 5), (0, 0), (1, 3)))
    torch.testing.assert_close(metrics["kl_cov/frac_selected"], torch.tensor(0.25))
    torch.testing.assert_close(metrics["kl_cov/cov_mean"], torch.tensor(0.0))
    # default ratio 2e-4 -> K = max(0, 1) = 1: only the largest.
    selected, _ = kl_cov_selection(stats, adv, COV_MASK)
    assert torch.equal(selected, _mask_where((2, 5), (0, 0)))
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
        stats, adv, COV_MASK, clip_ratio=0.125, exclude_mask=_mask_where((2, 5), (0, 0))
    )
    assert torch.equal(keep, COV_MASK & ~_mask_where((2, 5), (1, 3)))
    # K = 2 ≥ #candidates: both dropped
    keep, _ = clip_cov(stats, adv, COV_MASK, clip_ratio=0.25)
    assert torch.equal(keep, COV_MASK & ~_mask_where((2, 5), (0, 0), (1, 3)))


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
    stats = _stats((b, t), logp=logp)
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

SIGN_MASK = _t([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
SIGN_S = _t([[0.2, -0.1, 0.0, 0.7], [0.3, -0.2, 0.1, 0.0], [0.5, -0.5, PAD, PAD]])
SIGN_ADV = _row_advantages([1.0, -1.0, 0.0], SIGN_MASK)  # positive, negative, zero samples


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
        _stats((3, 4), s=SIGN_S), SIGN_ADV, SIGN_MASK, sample_sign=sample_sign, keep=keep
    )
    assert torch.equal(mask, _mask_where((3, 4), *cells))
    # 9 valid tokens; the chosen samples hold 3 (row 0) or 4 (row 1) of them
    torch.testing.assert_close(metrics["sign_intervention/frac_kept"], torch.tensor(len(cells) / 9))
    in_samples = 3 / 9 if sample_sign == "positive" else 4 / 9
    torch.testing.assert_close(
        metrics["sign_intervention/frac_sample_tokens"], torch.tensor(in_samples)
    )


def test_sign_intervention_bad_options():
    stats = _stats((3, 4), s=SIGN_S)
    with pytest.raises(ValueError, match="sample_sign must be 'positive' or 'negative'"):
        sign_intervention(stats, SIGN_ADV, SIGN_MASK, sample_sign="pos")
    with pytest.raises(ValueError, match="keep must be 's_positive' or 's_negative'"):
        sign_intervention(stats, SIGN_ADV, SIGN_MASK, keep="positive")


def test_none_keeps_valid_tokens():
    keep, metrics = get_filter("none")(_stats((3, 4), s=SIGN_S), SIGN_ADV, SIGN_MASK.int())
    assert torch.equal(keep, SIGN_MASK) and metrics == {}
