"""Property tests (hypothesis) of the filters, advantages, policy losses and aggregation, over
random shapes, masks, options and NaN/inf padding (see ``test_properties_stats.py`` for the
method: seeded tensors, derandomized examples, float64 references written from the
definitions).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from entropy_dynamics.advantages import (
    available_advantages,
    broadcast_to_tokens,
    get_advantage_fn,
    grpo_advantages,
)
from entropy_dynamics.aggregation import AGG_MODES, aggregate, masked_mean
from entropy_dynamics.filters import available_filters, get_filter, kl_cov_selection
from entropy_dynamics.losses import PolicyLossConfig, PolicyLossInputs, compute_policy_loss
from entropy_dynamics.methods import available_methods, resolve_method
from entropy_dynamics.stats import TokenStats, token_stats
from property_helpers import (
    DTYPES,
    FEW,
    PROPERTY,
    poison,
    seeds,
)

# ---------------------------------------------------------------------------------------------
# Filters: every registered filter, every option shape
# ---------------------------------------------------------------------------------------------

_MU = st.sampled_from([0.0, 0.5, 2.5, 8.5, math.inf])
_BAND = st.fixed_dictionaries({"mu_plus": _MU, "mu_minus": _MU})
_RATIO = st.sampled_from([2e-4, 0.3, 1.0])


@st.composite
def _clip_cov_options(draw):
    lower = draw(st.sampled_from([-1.0, 0.0, 1.0]))
    return {
        "clip_ratio": draw(_RATIO),
        "clip_cov_lb": lower,
        "clip_cov_ub": lower + draw(st.sampled_from([1e-3, 4.0, math.inf])),
    }


FILTER_OPTIONS = {
    "none": st.just({}),
    "clip_b": st.one_of(st.fixed_dictionaries({"mu": _MU}), _BAND),
    "clip_v": st.one_of(
        st.fixed_dictionaries({"mu": _MU, "max_frac": st.sampled_from([0.0, 1e-4, 0.3, 1.0])}),
        _BAND,
    ),
    "sign_intervention": st.fixed_dictionaries(
        {
            "sample_sign": st.sampled_from(["positive", "negative"]),
            "keep": st.sampled_from(["s_positive", "s_negative"]),
        }
    ),
    "high_entropy": st.fixed_dictionaries({"rho": st.sampled_from([1e-3, 0.2, 0.5, 1.0])}),
    "clip_cov": _clip_cov_options(),
    "kl_cov": st.fixed_dictionaries({"kl_cov_ratio": _RATIO}),
    "entropy_target": st.fixed_dictionaries(
        {
            "target": st.sampled_from([None, 1e-3, 0.3, 2.0]),
            "band": st.sampled_from([0.0, 0.05, 0.5]),
            "gain": st.sampled_from([1e-3, 0.5, 1.0]),
            "max_share": st.sampled_from([0.0, 0.1, 1.0]),
            "step_scale": st.sampled_from([1e-3, 0.5, 100.0]),
            "entropy": st.sampled_from([None, 0.0, 0.25]),
        }
    ),
}


def test_every_registered_filter_has_option_strategies():
    public = [name for name in available_filters() if not name.startswith("_")]  # not test ones
    assert sorted(FILTER_OPTIONS) == public


@st.composite
def filter_batches(draw):
    """``(stats, advantages, response_mask, poisoned stats, poisoned advantages)`` ``(B, T)``:
    B in 0..5, T in 0..7, masks with empty rows (or empty), zero / broadcast / token / sign
    advantages, random, constant (zero-variance) or tied statistics; the poisoned copies hold
    NaN / ±inf on every padding position."""
    b, t = draw(st.integers(0, 5)), draw(st.integers(0, 7))
    dtype = draw(st.sampled_from(DTYPES))
    gen = torch.Generator().manual_seed(draw(seeds))
    valid = torch.rand(b, t, generator=gen) < draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    if b and draw(st.booleans()):
        valid[draw(st.integers(0, b - 1))] = False
    kind = draw(st.sampled_from(["zero", "sequence", "token", "sign"]))
    if kind == "zero":
        adv = torch.zeros(b, t)
    elif kind == "sequence":  # GRPO advantages of binary rewards in groups of 1-3
        rewards = torch.randint(2, (b,), generator=gen).float()
        ids = torch.randint(3, (b,), generator=gen)
        adv = broadcast_to_tokens(grpo_advantages(rewards, ids), valid)
    elif kind == "token":
        adv = torch.randn(b, t, generator=gen)
    else:
        adv = torch.randint(-1, 2, (b, t), generator=gen).float()
    adv = adv.to(dtype)
    spread = draw(st.sampled_from(["random", "constant", "ties"]))
    columns = torch.rand(4, b, t, generator=gen, dtype=torch.float64)
    if spread == "constant":
        columns = columns[:, :1, :1].expand(4, b, t) if b and t else columns
    elif spread == "ties":
        columns = torch.round(4 * columns) / 4
    low, high = torch.tensor([-60.0, 0.0, -0.4, -0.4]), torch.tensor([0.0, 8.0, 4.0, 4.0])
    fields = low.view(4, 1, 1) + (high - low).view(4, 1, 1) * columns
    stats = TokenStats(*fields.to(dtype))
    poisoned = TokenStats(*(poison(x, valid, gen) for x in stats.__dict__.values()))
    mask = valid.to(draw(st.sampled_from([torch.bool, torch.int64, torch.float32])))
    return stats, adv, mask, poisoned, poison(adv, valid, gen)


def _assert_finite_metrics(metrics: dict, valid: torch.Tensor, prefix: str = "") -> None:
    for key, value in metrics.items():
        assert key.startswith(prefix) and value.dim() == 0, key
        if key == "high_entropy/threshold" and not valid.any():
            assert value.isnan()  # the quantile of no value: NaN by design (test_filters_others.py)
            continue
        assert torch.isfinite(value), f"{key} = {value}"


def _assert_same_metrics(metrics: dict, again: dict) -> None:
    assert metrics.keys() == again.keys()
    for key, value in metrics.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0, equal_nan=True)


def _run_filter(name, options, stats, adv, mask, seed):
    options = dict(options)
    if name == "clip_cov":
        options["generator"] = torch.Generator().manual_seed(seed)
    return get_filter(name)(stats, adv, mask, **options)


@pytest.mark.parametrize("name", sorted(FILTER_OPTIONS))
@PROPERTY
@given(batch=filter_batches(), data=st.data(), seed=seeds)
def test_filter_keeps_a_subset_of_valid_tokens_with_finite_metrics(name, batch, data, seed):
    stats, adv, mask, poisoned_stats, poisoned_adv = batch
    options = data.draw(FILTER_OPTIONS[name], label="options")
    if name == "clip_cov" and data.draw(st.booleans(), label="exclude_mask"):
        options["exclude_mask"] = torch.rand(mask.shape, generator=torch.Generator()) < 0.5
    keep, metrics = _run_filter(name, options, stats, adv, mask, seed)
    assert keep.dtype == torch.bool and keep.shape == mask.shape
    assert not (keep & (mask == 0)).any(), "a filter kept a padding token"
    _assert_finite_metrics(metrics, mask != 0, f"{name}/")
    # padding holding NaN / ±inf changes no decision and no metric
    keep2, metrics2 = _run_filter(name, options, poisoned_stats, poisoned_adv, mask, seed)
    assert torch.equal(keep, keep2)
    _assert_same_metrics(metrics, metrics2)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (3, 0)])
def test_high_entropy_on_a_zero_size_batch_keeps_nothing(shape):
    # Indexing the sorted values at position 0 used to raise IndexError on a zero-size batch.
    empty = torch.zeros(shape)
    keep, metrics = get_filter("high_entropy")(
        TokenStats(empty, empty, empty, empty), empty, empty.bool()
    )
    assert keep.shape == shape and metrics["high_entropy/threshold"].isnan()


@PROPERTY
@given(batch=filter_batches(), ratio=_RATIO)
def test_kl_cov_selection_picks_the_cap_among_valid_tokens(batch, ratio):
    stats, adv, mask, poisoned_stats, poisoned_adv = batch
    selected, _ = kl_cov_selection(stats, adv, mask, kl_cov_ratio=ratio)
    valid = mask != 0
    n = int(valid.sum())
    assert not (selected & ~valid).any()
    assert int(selected.sum()) == min(max(math.floor(ratio * n), 1), n)
    again, _ = kl_cov_selection(poisoned_stats, poisoned_adv, mask, kl_cov_ratio=ratio)
    assert torch.equal(selected, again)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("clip_b", {"mu": -1.0}, "mu must be >= 0"),
        ("clip_b", {"mu": math.nan}, "mu must be >= 0"),
        ("clip_b", {"mu_plus": -1.0, "mu_minus": 1.0}, "mu_plus and mu_minus"),
        ("clip_v", {"mu": -1.0}, "mu must be >= 0"),
        ("clip_v", {"max_frac": 1.5}, r"max_frac must lie in \[0, 1\]"),
        ("clip_v", {"max_frac": -0.1}, r"max_frac must lie in \[0, 1\]"),
        ("high_entropy", {"rho": 0.0}, "rho"),
        ("clip_cov", {"clip_ratio": 1.5}, "clip_ratio must be > 0 and <= 1"),
        ("clip_cov", {"clip_ratio": 0.0}, "clip_ratio must be > 0 and <= 1"),
        ("kl_cov", {"kl_cov_ratio": 2.0}, "kl_cov_ratio must be > 0 and <= 1"),
        ("sign_intervention", {"keep": "both"}, "keep"),
    ],
)
def test_bad_filter_options_are_refused_by_the_filter_and_by_the_loss_config(name, options, match):
    empty = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=match):
        get_filter(name)(TokenStats(empty, empty, empty, empty), empty, empty.bool(), **options)
    # at configuration time, not at the first loss of a run
    with pytest.raises(ValueError, match=match):
        PolicyLossConfig(filter=name, filter_options=options)


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------


def _reference_advantage(name: str, rewards: list[float], ids: list[int], eps: float) -> list:
    """Per-response advantages from Python floats: groups by id (one group for ``batch``)."""
    keys = [0] * len(ids) if name == "batch" else ids
    out = []
    for reward, key in zip(rewards, keys, strict=True):
        group = [r for r, k in zip(rewards, keys, strict=True) if k == key]
        n = len(group)
        mean = sum(group) / n if n > 1 else 0.0
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1)) if n > 1 else 1.0
        if name == "dr_grpo":
            out.append(reward - mean)
        elif n > 1 and max(group) == min(group):
            out.append(0.0)  # a zero-variance group: no signal, whatever eps
        else:
            out.append((reward - mean) / (std + eps))
    return out


@st.composite
def reward_batches(draw):
    n = draw(st.integers(0, 12))
    ids = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=torch.long)
    gen = torch.Generator().manual_seed(draw(seeds))
    kind = draw(st.sampled_from(["binary", "constant", "real", "ties"]))
    rewards = {
        "binary": lambda: torch.randint(2, (n,), generator=gen).double(),
        "constant": lambda: torch.full((n,), 0.1, dtype=torch.float64),
        "real": lambda: 1e3 * torch.randn(n, generator=gen, dtype=torch.float64),
        "ties": lambda: torch.round(10 * torch.rand(n, generator=gen, dtype=torch.float64)) / 3,
    }[kind]()
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return rewards.to(dtype), ids, draw(st.sampled_from([0.0, 1e-6, 0.1]))


@pytest.mark.parametrize("name", available_advantages())
@PROPERTY
@given(batch=reward_batches())
def test_advantages_are_finite_and_match_the_group_reference(name, batch):
    rewards, ids, eps = batch
    advantages = get_advantage_fn(name)(rewards, ids, eps=eps)
    assert advantages.shape == rewards.shape and advantages.dtype == rewards.dtype
    assert torch.isfinite(advantages).all()
    reference = _reference_advantage(name, rewards.double().tolist(), ids.tolist(), eps)
    want = torch.tensor(reference, dtype=torch.float64)
    tol = 64 * torch.finfo(rewards.dtype).eps * (1 + want.abs()) * (1 + 1 / max(eps, 1e-3))
    assert ((advantages.double() - want).abs() <= tol).all(), (advantages, want)
    # relabelling the responses relabels their advantages (up to the order of the sums)
    order = torch.randperm(rewards.numel(), generator=torch.Generator().manual_seed(0))
    permuted = get_advantage_fn(name)(rewards[order], ids[order], eps=eps)
    assert ((permuted.double() - advantages[order].double()).abs() <= tol[order]).all()


@pytest.mark.parametrize("name", available_advantages())
def test_zero_variance_group_gets_exactly_zero_advantage_even_with_eps_zero(name):
    # 0.1 · 3 / 3 != 0.1 in float32 (naive mean), which used to leave ±1 ulp residues that eps = 0
    # turned into advantages of ±0.58 or 0/0 = NaN.
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7])
    advantages = get_advantage_fn(name)(rewards, torch.tensor([0, 0, 0, 1, 1, 1]), eps=0.0)
    expected = torch.zeros(6) if name != "batch" else advantages  # batch: mixed groups
    assert torch.equal(advantages, expected)
    same = get_advantage_fn(name)(torch.full((4,), 0.1), torch.zeros(4, dtype=torch.long), eps=0.0)
    assert torch.equal(same, torch.zeros(4))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_rewards_are_refused(bad):
    with pytest.raises(ValueError, match=r"rewards must be finite.*index 1"):
        grpo_advantages(torch.tensor([0.0, bad]), torch.zeros(2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# Aggregation and policy losses
# ---------------------------------------------------------------------------------------------


@st.composite
def masked_losses(draw):
    b, t = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    gen = torch.Generator().manual_seed(draw(seeds))
    valid = torch.rand(b, t, generator=gen) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    loss = torch.randn(b, t, generator=gen, dtype=torch.float64)
    mask = valid.to(draw(st.sampled_from([torch.bool, torch.float32])))
    norm = draw(st.sampled_from([None, 0.5, 7.0]))
    return loss, poison(loss, valid, gen), mask, norm


@pytest.mark.parametrize("mode", AGG_MODES)
@PROPERTY
@given(batch=masked_losses())
def test_aggregate_ignores_everything_outside_the_mask(mode, batch):
    loss, poisoned, mask, norm = batch
    poisoned.requires_grad_(True)
    result = aggregate(poisoned, mask, mode, norm)
    valid = mask != 0
    rows = [loss[i][valid[i]] for i in range(loss.shape[0])]
    rows = [r for r in rows if r.numel()]
    if mode == "token-mean":
        want = sum(r.sum() for r in rows) / max(sum(r.numel() for r in rows), 1)
    elif mode == "seq-mean-token-mean":
        want = sum(r.mean() for r in rows) / max(len(rows), 1)
    elif mode == "seq-mean-token-sum":
        want = sum(r.sum() for r in rows) / max(len(rows), 1)
    else:
        want = sum(r.sum() for r in rows) / (norm or max(loss.shape[-1], 1))
    assert result.dim() == 0 and torch.isfinite(result)
    torch.testing.assert_close(result, torch.as_tensor(want, dtype=torch.float64))
    result.backward()
    assert torch.isfinite(poisoned.grad).all() and (poisoned.grad[~valid] == 0).all()
    assert torch.equal(masked_mean(poisoned.detach(), mask), masked_mean(loss, mask))


def test_aggregate_refuses_a_non_positive_norm_and_handles_zero_width():
    with pytest.raises(ValueError, match="norm"):
        aggregate(torch.ones(2, 3), torch.ones(2, 3), "seq-mean-token-sum-norm", norm=0.0)
    empty = torch.zeros(2, 0)
    for mode in AGG_MODES:  # T = 0: no token at all, the aggregate is 0 (it used to be 0/0)
        assert aggregate(empty, empty.bool(), mode) == 0


@st.composite
def loss_batches(draw):
    """Logits, tokens, mask and sequence advantages of a (B, T) batch; B 0..4, T 0..6."""
    b, t, vocab = draw(st.integers(0, 4)), draw(st.integers(0, 6)), 5
    gen = torch.Generator().manual_seed(draw(seeds))
    logits = draw(st.sampled_from([1.0, 30.0])) * torch.randn(b, t, vocab, generator=gen)
    tokens = torch.randint(vocab, (b, t), generator=gen)
    valid = torch.rand(b, t, generator=gen) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    if b and draw(st.booleans()):
        valid[draw(st.integers(0, b - 1))] = False  # an empty response
    kind = draw(st.sampled_from(["binary", "constant"]))
    rewards = torch.randint(2, (b,), generator=gen).float() if kind == "binary" else torch.ones(b)
    ids = torch.randint(draw(st.integers(1, 3)), (b,), generator=gen)  # groups of one, too
    advantages = broadcast_to_tokens(grpo_advantages(rewards, ids), valid)
    drift = draw(st.sampled_from([0.0, 0.1, 3.0, 50.0])) * torch.randn(b, t, generator=gen)
    return logits, tokens, valid, advantages, drift, gen


def _policy_loss(method, logits, tokens, valid, advantages, drift, poison_gen=None):
    logits = logits.clone().requires_grad_(True)
    stats = token_stats(logits, tokens, entropy_grad=True)
    old = stats.logprobs.detach() + drift
    logprobs = stats.logprobs
    if poison_gen is not None:  # NaN / ±inf on padding in every token-level input
        old, advantages = poison(old, valid, poison_gen), poison(advantages, valid, poison_gen)
        logprobs = poison(logprobs, valid, poison_gen)
        stats = TokenStats(*(poison(x, valid, poison_gen) for x in stats.__dict__.values()))
    inputs = PolicyLossInputs(logprobs, old, advantages, valid, stats)
    with torch.random.fork_rng():  # clip_cov draws its random subset from the global RNG
        torch.manual_seed(0)
        out = compute_policy_loss(resolve_method(method), inputs)
    out.loss.backward()
    return out, logits.grad


@pytest.mark.parametrize("method", available_methods())
@FEW
@given(batch=loss_batches())
def test_policy_loss_is_finite_and_blind_to_padding(method, batch):
    logits, tokens, valid, advantages, drift, gen = batch
    out, grad = _policy_loss(method, logits, tokens, valid, advantages, drift)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert not (out.keep_mask & ~valid).any()
    if not out.keep_mask.any():
        assert out.pg_loss == 0
    if not valid.any():
        assert out.loss == 0
    _assert_finite_metrics(out.metrics, valid)
    assert torch.isfinite(grad).all() and (grad[~valid] == 0).all()
    poisoned, poisoned_grad = _policy_loss(method, logits, tokens, valid, advantages, drift, gen)
    assert torch.equal(poisoned.loss, out.loss) and torch.equal(poisoned.keep_mask, out.keep_mask)
    assert torch.equal(poisoned_grad, grad)
    _assert_same_metrics(out.metrics, poisoned.metrics)


def test_padding_holding_minus_inf_logprobs_does_not_make_the_loss_nan():
    # A padded position whose token sits at a -inf logit: log p = log p_old = -inf there, and
    # -inf - (-inf) = NaN used to reach the loss through 0 · NaN in the aggregation.
    logprobs = torch.tensor([[-0.5, -1.0], [-0.7, -math.inf]], requires_grad=True)
    old = torch.tensor([[-0.6, -1.0], [-0.7, -math.inf]])
    valid = torch.tensor([[True, True], [True, False]])
    advantages = torch.tensor([[1.0, 1.0], [-1.0, math.nan]])
    zeros = torch.zeros(2, 2)
    stats = TokenStats(logprobs.detach(), zeros, zeros, zeros)
    out = compute_policy_loss(
        PolicyLossConfig(), PolicyLossInputs(logprobs, old, advantages, valid, stats)
    )
    # token-mean of -A·r over 3 tokens: -(e^0.1 + 1 - 1) / 3 (ratios e^0.1, 1, 1; eps 0.2)
    torch.testing.assert_close(out.loss, -torch.tensor(0.1).exp() / 3)
    out.loss.backward()
    assert torch.isfinite(logprobs.grad).all() and logprobs.grad[1, 1] == 0
    assert all(torch.isfinite(value) for value in out.metrics.values())
