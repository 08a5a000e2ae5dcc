"""The filters' contract, registry and shared helpers (``filters/base.py``): what every registered
filter must do — padding never counted nor kept, no autograd, float64 followed, shapes checked —
the options a filter runs with, and the helpers on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.filters import available_filters, clip_b, filter_options, get_filter
from entropy_dynamics.filters.base import cap, descending_rank, masked_quantile
from entropy_dynamics.stats import TokenStats

FILTER_OPTIONS = {
    "clip_b": {"mu": 0.5},
    "clip_v": {"mu": 0.5, "max_frac": 0.1},
    "high_entropy": {"rho": 0.3},
    "clip_cov": {"clip_ratio": 0.1, "clip_cov_lb": 0.0, "clip_cov_ub": 10.0},
    "kl_cov": {"kl_cov_ratio": 0.1},
    "sign_intervention": {"sample_sign": "negative", "keep": "s_negative"},
    "entropy_target": {"target": 2.0, "max_share": 0.3},
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


def test_filter_options_are_the_keyword_defaults_with_the_given_on_top():
    assert filter_options("clip_b", {"mu": 1.0}) == {"mu": 1.0, "mu_plus": None, "mu_minus": None}
    assert filter_options("none") == {}
    with pytest.raises(ValueError, match="filter 'clip_b' has no option 'muu'; its options: mu"):
        filter_options("clip_b", {"muu": 1.0})


def test_the_shared_helpers_by_hand():
    # ties go to the lower flat index: 3 (index 1) before 3 (index 2)
    assert descending_rank(torch.tensor([[1.0, 3.0], [3.0, 2.0]])).tolist() == [[3, 0], [1, 2]]
    valid = torch.tensor([True, True, True, False])
    assert cap(0.5, valid).item() == 1.0 and cap(1e-4, valid).item() == 1.0  # at least one
    assert cap(0.7, torch.ones(1000, dtype=torch.bool)).item() == 700.0  # float64: not 699
    values = torch.tensor([4.0, 1.0, 2.0, 100.0])  # the invalid 100 takes no part
    assert masked_quantile(values, valid, 0.5).item() == 2.0
    assert masked_quantile(values, valid, 0.75).item() == 3.0  # halfway from 2 to 4
    assert masked_quantile(values, torch.zeros(4, dtype=torch.bool), 0.5).isnan()
