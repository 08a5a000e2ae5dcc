"""token_stats against a float64, unchunked, independently written reference."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics import stats as stats_module
from entropy_dynamics.stats import TokenStats, default_chunk_size, token_stats


def _reference(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0):
    """Direct float64 formulas over the finite entries only (an -inf entry is absent)."""
    z = logits.double() / temperature
    finite = torch.isfinite(z)
    z_max = torch.where(finite, z, torch.full_like(z, -1e300)).max(-1, keepdim=True).values
    w = torch.where(finite, torch.exp(z - z_max), torch.zeros_like(z))  # unnormalised p
    p = w / w.sum(-1, keepdim=True)
    log_p = torch.where(finite, torch.log(torch.where(p > 0, p, torch.ones_like(p))), 0.0)
    h = -(p * log_p).sum(-1)
    p_k = p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    log_p_k = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    s_k = p_k * (h + log_p_k)
    e_s = (p * p * (h.unsqueeze(-1) + log_p)).sum(-1)
    return log_p_k, h, s_k, e_s


def _case(shape: tuple[int, ...], vocab: int, seed: int, dtype=torch.float32, scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(*shape, vocab, generator=gen, dtype=torch.float64)
    tokens = torch.multinomial(
        torch.softmax(logits.reshape(-1, vocab), -1), 1, generator=gen
    ).reshape(shape)
    return logits.to(dtype), tokens


def _assert_matches(result: TokenStats, reference, rtol: float, atol: float) -> None:
    fields = ("logprobs", "entropy", "discriminator", "expected_discriminator")
    for name, expected in zip(fields, reference, strict=True):
        got = getattr(result, name).double()
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.3])
def test_matches_float64_reference(chunk_size: int | None, temperature: float) -> None:
    logits, tokens = _case((4, 9), vocab=1000, seed=0)
    result = token_stats(logits, tokens, temperature=temperature, chunk_size=chunk_size)
    assert result.logprobs.shape == (4, 9) and result.entropy.dtype == torch.float32
    _assert_matches(result, _reference(logits, tokens, temperature), rtol=1e-5, atol=1e-7)


def test_minus_inf_entries_are_exact() -> None:
    # A padded vocabulary: columns 200.. are -inf. Statistics equal those of the first 200 columns.
    logits, tokens = _case((6,), vocab=200, seed=1)
    tokens = tokens % 200
    padded = torch.cat([logits, torch.full((6, 56), -math.inf)], -1)
    for chunk_size in (None, 4):
        result = token_stats(padded, tokens, chunk_size=chunk_size)
        _assert_matches(result, _reference(logits, tokens), rtol=1e-5, atol=1e-7)
        _assert_matches(result, _reference(padded, tokens), rtol=1e-5, atol=1e-7)
        for field in (result.entropy, result.discriminator, result.expected_discriminator):
            assert torch.isfinite(field).all()


def test_bfloat16_input_is_exact_to_float32_rounding() -> None:
    # The statistics of the distribution the bf16 logits define: reference from the same values.
    logits, tokens = _case((3, 7), vocab=3000, seed=2, dtype=torch.bfloat16)
    result = token_stats(logits, tokens, temperature=0.8, chunk_size=4)
    assert result.entropy.dtype == torch.float32
    _assert_matches(result, _reference(logits, tokens, 0.8), rtol=1e-5, atol=1e-7)


def test_float64_input_stays_float64_and_matches_theory() -> None:
    from entropy_dynamics import theory

    logits, tokens = _case((5,), vocab=50, seed=3, dtype=torch.float64)
    result = token_stats(logits, tokens, temperature=0.9, chunk_size=2)
    assert result.entropy.dtype == torch.float64
    torch.testing.assert_close(result.entropy, theory.entropy(logits, 0.9), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        result.discriminator, theory.discriminator(logits, tokens, 0.9), rtol=1e-12, atol=1e-15
    )
    torch.testing.assert_close(
        result.expected_discriminator,
        theory.expected_discriminator(logits, 0.9),
        rtol=1e-12,
        atol=1e-15,
    )
    torch.testing.assert_close(
        result.deviation, result.discriminator - theory.expected_discriminator(logits, 0.9)
    )


def test_no_nan_for_extreme_finite_rows() -> None:
    # p underflows to exactly 0 for most entries: 0 · log 0 must be taken as 0, not NaN.
    logits = torch.tensor([[1e4, 0.0, -1e4, 5.0], [0.0, 0.0, 0.0, 0.0], [-3e38, 3e38, 0.0, 1.0]])
    tokens = torch.tensor([2, 1, 0])
    result = token_stats(logits, tokens)
    for field in (result.entropy, result.discriminator, result.expected_discriminator):
        assert torch.isfinite(field).all()
    # Row 1 is uniform over 4: H = log 4, S_k = (1/4)(log 4 - log 4) = 0, E_p[S] = 0.
    assert result.entropy[1].item() == pytest.approx(math.log(4.0), rel=1e-6)
    assert result.discriminator[1].item() == pytest.approx(0.0, abs=1e-7)
    # Row 0 is deterministic on token 0: H = 0, and the unlikely token k = 2 has S_k = 0.
    assert result.entropy[0].item() == 0.0 and result.discriminator[0].item() == 0.0


def test_chunks_never_exceed_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = stats_module._chunk_forward

    def spy(logits, *args):
        seen.append(logits.shape[0])
        return original(logits, *args)

    monkeypatch.setattr(stats_module, "_chunk_forward", spy)
    logits, tokens = _case((23,), vocab=100, seed=4)
    token_stats(logits, tokens, chunk_size=5)
    assert seen == [5, 5, 5, 5, 3]


def test_default_chunk_size_bounds_one_chunk_to_64_mib() -> None:
    assert default_chunk_size(151_936) * 151_936 * 4 <= 1 << 26
    assert default_chunk_size(10**9) == 1


@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_gradients_match_autograd_of_reference(chunk_size: int | None) -> None:
    # d/dz of Σ w1·log p_k + w2·H, chunked custom backward vs autograd through the reference.
    logits, tokens = _case((7,), vocab=40, seed=5, dtype=torch.float64)
    w1, w2 = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    z1 = logits.clone().requires_grad_(True)
    result = token_stats(z1, tokens, temperature=0.7, chunk_size=chunk_size, entropy_grad=True)
    (w1 * result.logprobs + w2 * result.entropy).sum().backward()
    z2 = logits.clone().requires_grad_(True)
    log_p_k, h, _, _ = _reference(z2, tokens, 0.7)
    (w1 * log_p_k + w2 * h).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64() -> None:
    logits, tokens = _case((2, 3), vocab=6, seed=6, dtype=torch.float64)
    logits.requires_grad_(True)

    def fn(z):
        out = token_stats(z, tokens, temperature=1.4, chunk_size=2, entropy_grad=True)
        return out.logprobs, out.entropy

    assert torch.autograd.gradcheck(fn, (logits,))


def test_float32_gradient_with_minus_inf_entries_is_finite_and_zero_there() -> None:
    logits, tokens = _case((4,), vocab=10, seed=7)
    padded = torch.cat([logits, torch.full((4, 3), -math.inf)], -1).requires_grad_(True)
    result = token_stats(padded, tokens, chunk_size=3, entropy_grad=True)
    (result.logprobs.sum() + result.entropy.sum()).backward()
    assert torch.isfinite(padded.grad).all()
    assert (padded.grad[:, 10:] == 0).all()


def test_statistics_other_than_logprob_are_detached_by_default() -> None:
    logits, tokens = _case((3,), vocab=8, seed=8)
    logits.requires_grad_(True)
    result = token_stats(logits, tokens)
    assert result.logprobs.requires_grad
    assert not result.entropy.requires_grad
    assert not result.discriminator.requires_grad
    assert not result.expected_discriminator.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    logits, tokens = _case((2,), vocab=5, seed=9)
    with pytest.raises(ValueError, match=match):
        token_stats(logits, tokens, **kwargs)


def test_bad_tokens_are_refused_with_a_clear_message() -> None:
    logits, tokens = _case((2,), vocab=5, seed=10)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        token_stats(logits, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="shape"):
        token_stats(logits, tokens.unsqueeze(0))
    with pytest.raises(TypeError, match="floating-point"):
        token_stats(torch.zeros(2, 5, dtype=torch.long), tokens)


def test_metrics_are_means_over_the_mask_of_hand_made_values():
    # three tokens, the last masked out:
    # S = (0.2, -0.1 | 9), E_p[S] = (0.1, 0.1 | 9), H = (1, 3 | 9)
    stats = TokenStats(
        logprobs=torch.zeros(3, dtype=torch.float64),
        entropy=torch.tensor([1.0, 3.0, 9.0], dtype=torch.float64),
        discriminator=torch.tensor([0.2, -0.1, 9.0], dtype=torch.float64),
        expected_discriminator=torch.tensor([0.1, 0.1, 9.0], dtype=torch.float64),
    )
    got = {k: float(v) for k, v in stats.metrics(torch.tensor([True, True, False])).items()}
    assert got["entropy/mean"] == pytest.approx(2.0)
    assert got["discriminator/mean"] == pytest.approx(0.05)
    assert got["discriminator/std"] == pytest.approx(0.15)  # population std of (0.2, -0.1)
    assert got["discriminator/frac_positive"] == pytest.approx(0.5)
    assert got["discriminator/deviation_mean"] == pytest.approx(-0.05)  # mean of (0.1, -0.2)
