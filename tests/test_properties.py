"""Property tests (hypothesis) of the numerical core: token statistics, filters, advantages,
policy losses and aggregation, over random shapes, dtypes, masks, ``-inf`` logits and NaN/inf
padding.

Hypothesis draws every structural choice (shape, dtype, scale, ties, mask pattern, options) and a
seed; the tensors come from a generator with that seed. ``derandomize=True`` makes every run draw
the same examples, so CI is reproducible. References are written here in float64 from the
definitions (``log_softmax``, boolean indexing, Python loops over groups), not from the package.

What the statistics promise for a sampled token whose logit is ``-inf`` (``p_k = 0``): exactly
``log p_k = -inf`` and ``S_k = 0`` (the limit ``p log p → 0``), ``H`` and ``E_p[S]`` unaffected,
and a finite logit gradient ``(e_k - p) / T`` — a padded position may hold any token id, so this
is a value, not an error. Rows that define no distribution (NaN or ``+inf`` logits, every logit
``-inf``) and temperatures outside ``[MIN_TEMPERATURE, ∞)`` are refused with a message.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entropy_dynamics.advantages import (
    available_advantages,
    broadcast_to_tokens,
    get_advantage_fn,
    grpo_advantages,
)
from entropy_dynamics.aggregation import AGG_MODES, aggregate, masked_mean
from entropy_dynamics.filters import available_filters, get_filter, kl_cov_selection
from entropy_dynamics.losses import (
    PolicyLossConfig,
    PolicyLossInputs,
    available_methods,
    compute_policy_loss,
    resolve_method,
)
from entropy_dynamics.stats import TokenStats, token_stats, token_stats_from_hidden
from entropy_dynamics.theory import MIN_TEMPERATURE

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)
FEW = settings(max_examples=15, deadline=None, derandomize=True, database=None)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")
POISON = (math.nan, math.inf, -math.inf)

seeds = st.integers(0, 2**32 - 1)
temperatures = st.one_of(
    st.sampled_from([MIN_TEMPERATURE, 1.0]),
    st.floats(-5.0, 1.0).map(lambda e: max(MIN_TEMPERATURE, 10.0**e)),
)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _poison(x: torch.Tensor, valid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x`` with NaN, +inf or -inf (drawn per entry) wherever ``valid`` is false."""
    junk = torch.tensor(POISON, dtype=x.dtype)[torch.randint(3, x.shape, generator=gen)]
    return torch.where(valid, x, junk)


# ---------------------------------------------------------------------------------------------
# Token statistics: token_stats and token_stats_from_hidden against a float64 reference
# ---------------------------------------------------------------------------------------------


def _reference(z: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """``(log p_k, H, S_k, E_p[S])`` of ``softmax(z / T)``, float64 ``z`` ``(..., V)``, from the
    definitions; the row max is subtracted first, so differences near the max stay exact."""
    x = (z - z.detach().amax(-1, keepdim=True)) / temperature
    log_p = torch.log_softmax(x, -1)  # (..., V), -inf where z is -inf
    p = log_p.exp()
    finite_log_p = torch.where(p > 0, log_p, 0.0)  # p log p -> 0, without 0 · inf
    h = -(p * finite_log_p).sum(-1)
    s = p * (h.unsqueeze(-1) + finite_log_p)  # S_i = p_i (H + log p_i) for every i
    index = tokens.unsqueeze(-1)
    log_p_k = log_p.gather(-1, index).squeeze(-1)
    return log_p_k, h, s.gather(-1, index).squeeze(-1), (p * s).sum(-1)


def _tolerance(compute: torch.dtype, vocab: int, reference: torch.Tensor, spread=0.0):
    """Allowed error of a statistic: rounding of the compute dtype, growing with ``log V`` and
    ``|value|``, plus ``spread`` (a bound on the logits' own error divided by ``T``) times
    ``4 (1 + log V)``, a bound on the statistics' sensitivity to the scaled logits."""
    log_v = 1.0 + math.log(vocab)
    eps = torch.finfo(compute).eps
    return 64 * eps * log_v**2 * (1 + reference.abs()) + 4 * log_v * spread


def _assert_close_to_reference(stats: TokenStats, reference, vocab: int, compute, spread=0.0):
    for name, want in zip(FIELDS, reference, strict=True):
        got = getattr(stats, name)
        assert got.dtype == compute and got.shape == want.shape, name
        want = want.detach()
        finite = torch.isfinite(want)
        assert (torch.isfinite(got) == finite).all(), name
        assert (got[~finite] == want[~finite]).all(), name  # -inf log p_k exactly
        error = (got.double() - want).abs()[finite]
        tol = _tolerance(compute, vocab, want, spread)[finite]
        assert (error <= tol).all(), f"{name}: error {error.max()} > {tol}"


@st.composite
def logits_cases(draw):
    """``(logits (..., V), tokens (...), T, chunk_size)``: batch dims 1-2, V in 2..64, any float
    dtype, |z| up to 1e4, optional exact ties, -inf patterns (each row keeps a finite entry, and
    the token is drawn among the finite entries)."""
    shape = (*draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)), draw(st.integers(2, 64)))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3, 1e4]))
    ties = draw(st.booleans())
    neg_inf = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    temperature = draw(temperatures)
    chunk = draw(st.one_of(st.none(), st.integers(1, 4)))
    gen = torch.Generator().manual_seed(draw(seeds))
    z = (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1) * scale
    if ties:  # a grid of five values: exact ties, often constant rows
        z = torch.round(2 * z / scale) * (scale / 2)
    blocked = torch.rand(shape, generator=gen) < neg_inf
    kept = torch.randint(shape[-1], shape[:-1], generator=gen).unsqueeze(-1)
    blocked.scatter_(-1, kept, False)
    logits = z.to(dtype).masked_fill(blocked, -math.inf)
    allowed = (~blocked).reshape(-1, shape[-1]).double()
    tokens = torch.multinomial(allowed, 1, generator=gen).reshape(shape[:-1])
    return logits, tokens, temperature, chunk


@PROPERTY
@given(case=logits_cases(), seed=seeds)
def test_token_stats_agree_with_float64_reference_and_have_finite_gradients(case, seed):
    logits, tokens, temperature, chunk = case
    vocab, compute = logits.shape[-1], _compute_dtype(logits.dtype)
    logits.requires_grad_(True)
    stats = token_stats(logits, tokens, temperature, chunk, entropy_grad=True)
    z = logits.detach().double().requires_grad_(True)
    reference = _reference(z, tokens, temperature)
    _assert_close_to_reference(stats, reference, vocab, compute)

    gen = torch.Generator().manual_seed(seed)
    g1, g2 = torch.randn((2, *tokens.shape), generator=gen, dtype=torch.float64)
    (stats.logprobs * g1.to(compute) + stats.entropy * g2.to(compute)).sum().backward()
    (want,) = torch.autograd.grad((reference[0] * g1 + reference[1] * g2).sum(), z)
    assert logits.grad.dtype == logits.dtype
    if want.abs().max() < torch.finfo(logits.dtype).max / 4:  # representable in the dtype
        assert torch.isfinite(logits.grad).all()
        # ∂/∂z = [g1 (e_k - p) - g2 p (log p + H)] / T: compute rounding, then storage rounding
        scale = (g1.abs() + g2.abs()).unsqueeze(-1) / temperature
        tol = (
            _tolerance(compute, vocab, 0 * want) * scale
            + 2 * torch.finfo(logits.dtype).eps * want.abs()
        )
        assert ((logits.grad.double() - want).abs() <= tol).all()


@st.composite
def hidden_cases(draw):
    """Arguments of ``token_stats_from_hidden`` with logits ``h Wᵀ + b`` of scale up to 1e4."""
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    dim, vocab = draw(st.integers(1, 16)), draw(st.integers(2, 64))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3, 1e4])) / 4  # |z| ≲ 4 scale < fp16 max
    valid_vocab = draw(st.one_of(st.none(), st.integers(1, vocab)))
    with_bias = draw(st.booleans())
    rows = math.prod(shape)
    kwargs = {
        "temperature": draw(temperatures),
        "vocab_chunk": draw(st.one_of(st.none(), st.integers(1, vocab + 1))),
        "row_chunk": draw(st.one_of(st.none(), st.integers(1, rows + 1))),
        "valid_vocab": valid_vocab,
    }
    gen = torch.Generator().manual_seed(draw(seeds))
    unit = math.sqrt(scale / math.sqrt(dim))  # std of h and W: std(z) ≈ scale
    hidden = (unit * torch.randn((*shape, dim), generator=gen, dtype=torch.float64)).to(dtype)
    weight = (unit * torch.randn(vocab, dim, generator=gen, dtype=torch.float64)).to(dtype)
    if with_bias:
        kwargs["bias"] = (scale * torch.randn(vocab, generator=gen, dtype=torch.float64)).to(dtype)
    tokens = torch.randint(valid_vocab or vocab, shape, generator=gen)
    return hidden, weight, tokens, kwargs


@PROPERTY
@given(case=hidden_cases())
def test_token_stats_from_hidden_agree_with_float64_reference(case):
    hidden, weight, tokens, kwargs = case
    dtype, compute = hidden.dtype, _compute_dtype(hidden.dtype)
    bias = kwargs.get("bias")
    leaves = [t.requires_grad_(True) for t in (hidden, weight, bias) if t is not None]
    stats = token_stats_from_hidden(
        hidden, weight, tokens, backend="torch", entropy_grad=True, **kwargs
    )
    used = kwargs["valid_vocab"] or weight.shape[0]
    exact = [t.detach().double().requires_grad_(True) for t in leaves]  # h, W (, b) in float64
    h64, w64 = exact[0], exact[1][:used]
    b64 = 0.0 if bias is None else exact[2][:used]
    reference = _reference(h64 @ w64.T + b64, tokens, kwargs["temperature"])
    # the logits' own error: the GEMM's (d terms) and, for half dtypes, their storage rounding
    magnitude = h64.detach().abs() @ w64.detach().abs().T  # (..., V)
    magnitude = magnitude + (0.0 if bias is None else b64.detach().abs())
    eps = torch.finfo(dtype).eps * (
        1 if dtype in (torch.bfloat16, torch.float16) else h64.shape[-1]
    )
    spread = 2 * eps * magnitude.amax(-1) / kwargs["temperature"]
    _assert_close_to_reference(stats, reference, used, compute, spread)

    (stats.logprobs.sum() + stats.entropy.sum()).backward()
    wants = torch.autograd.grad(reference[0].sum() + reference[1].sum(), exact)
    if all(want.abs().max() < torch.finfo(dtype).max / 4 for want in wants):  # representable
        assert all(torch.isfinite(t.grad).all() for t in leaves)


def test_token_at_minus_inf_logit_has_logprob_minus_inf_and_finite_gradient():
    # Column 0 is -inf (a masked entry), and every token is 0: p_k = 0 exactly.
    logits = torch.tensor([[-math.inf, 0.5, -1.0], [-math.inf, 3.0, -math.inf]])
    logits.requires_grad_(True)
    tokens = torch.tensor([0, 0])
    for chunk in (None, 1):
        stats = token_stats(logits, tokens, 0.7, chunk, entropy_grad=True)
        assert (stats.logprobs == -math.inf).all()
        assert (stats.discriminator == 0).all()
        reference = _reference(logits.detach().double(), tokens, 0.7)
        torch.testing.assert_close(stats.entropy.double(), reference[1])
        torch.testing.assert_close(stats.expected_discriminator.double(), reference[3])
        (grad,) = torch.autograd.grad(stats.logprobs.sum() + stats.entropy.sum(), logits)
        assert torch.isfinite(grad).all()
        # ∂ log p_k / ∂z = (e_k - p) / T: 1/T at k (p_k = 0). ∂H / ∂z = -p (log p + H) / T is 0
        # at p = 0 and, in row 1 (p = (0, 1, 0), H = 0), everywhere: that row is -e_1 / T.
        assert torch.allclose(grad[:, 0], torch.full((2,), 1 / 0.7))
        assert torch.allclose(grad[1], torch.tensor([1.0, -1.0, 0.0]) / 0.7)


@pytest.mark.parametrize(
    "temperature", [0.0, -1.0, MIN_TEMPERATURE / 2, math.nan, math.inf, -math.inf]
)
def test_temperatures_outside_the_supported_range_are_refused(temperature):
    logits, tokens = torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        token_stats(logits, tokens, temperature)
    with pytest.raises(ValueError, match="temperature"):
        token_stats_from_hidden(torch.zeros(2, 3), torch.zeros(4, 3), tokens, temperature)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "all -inf"])
def test_rows_without_a_distribution_are_refused(bad):
    logits = torch.zeros(3, 4)
    if bad == "all -inf":
        logits[1] = -math.inf
    else:
        logits[1, 2] = bad
    with pytest.raises(ValueError, match=r"logits at position \(1,\) define no softmax"):
        token_stats(logits, torch.zeros(3, dtype=torch.long))


def test_overflowing_half_precision_logits_from_hidden_are_refused():
    # 300 · 300 = 9e4 > 65504: the float16 lm_head overflows to inf, which defines no softmax.
    hidden = torch.full((2, 1), 300.0, dtype=torch.float16)
    weight = torch.tensor([[300.0], [1.0]], dtype=torch.float16)
    with pytest.raises(ValueError, match="logits"):
        token_stats_from_hidden(hidden, weight, torch.zeros(2, dtype=torch.long), backend="torch")


def test_large_logits_at_low_temperature_keep_float32_precision():
    # Two logits 1e4 apart from 0 and 2^-10 apart from each other: at T = 1e-3 their scaled
    # difference is 0.9765625 exactly, but 1e4 / 1e-3 = 1e7 has float32 spacing 1, so scaling
    # before centring rounds the difference to 1 (or 0). Centring first keeps it exact:
    # p = (1, e^-0.9765625) / (1 + e^-0.9765625).
    logits = torch.tensor([[1e4, 1e4 - 2**-10]])
    stats = token_stats(logits, torch.tensor([1]), temperature=1e-3)
    reference = _reference(logits.double(), torch.tensor([1]), 1e-3)
    for name, want in zip(FIELDS, reference, strict=True):
        torch.testing.assert_close(getattr(stats, name).double(), want, rtol=1e-6, atol=1e-7)


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
    poisoned = TokenStats(*(_poison(x, valid, gen) for x in stats.__dict__.values()))
    mask = valid.to(draw(st.sampled_from([torch.bool, torch.int64, torch.float32])))
    return stats, adv, mask, poisoned, _poison(adv, valid, gen)


def _assert_finite_metrics(metrics: dict, valid: torch.Tensor, prefix: str = "") -> None:
    for key, value in metrics.items():
        assert key.startswith(prefix) and value.dim() == 0, key
        if key == "high_entropy/threshold" and not valid.any():
            assert value.isnan()  # the quantile of no value: NaN by design (test_filters.py)
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
    return loss, _poison(loss, valid, gen), mask, norm


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
        old, advantages = _poison(old, valid, poison_gen), _poison(advantages, valid, poison_gen)
        logprobs = _poison(logprobs, valid, poison_gen)
        stats = TokenStats(*(_poison(x, valid, poison_gen) for x in stats.__dict__.values()))
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
