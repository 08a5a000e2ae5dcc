"""Property tests (hypothesis) of the token statistics — ``token_stats`` and
``token_stats_from_hidden`` — over random shapes, dtypes, ``-inf`` logits and temperatures.

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
from hypothesis import given
from hypothesis import strategies as st

from entropy_dynamics.stats import TokenStats, token_stats, token_stats_from_hidden
from entropy_dynamics.theory import MIN_TEMPERATURE
from property_helpers import (
    DTYPES,
    FIELDS,
    PROPERTY,
    compute_dtype,
    seeds,
    temperatures,
)

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
    vocab, compute = logits.shape[-1], compute_dtype(logits.dtype)
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
    dtype, compute = hidden.dtype, compute_dtype(hidden.dtype)
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
