"""The one logit-gradient formula against autograd of log p_k and H (float64)."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.kernels.logit_grad import logit_grad_


def _autograd(logits, tokens, temperature, g1, g2):
    """∂(Σ g1 log p_k + Σ g2 H)/∂z by autograd through log_softmax, independent of the kernel."""
    z = logits.clone().requires_grad_(True)
    log_p = torch.log_softmax(z / temperature, -1)
    p = log_p.exp()
    h = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)
    log_p_k = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    total = torch.zeros((), dtype=z.dtype)
    if g1 is not None:
        total = total + (g1 * log_p_k).sum()
    if g2 is not None:
        total = total + (g2 * h).sum()
    (grad,) = torch.autograd.grad(total, z)
    return grad, log_p.detach(), h.detach()


def _case(seed: int, n: int = 7, vocab: int = 23):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=gen, dtype=torch.float64) * 2
    tokens = torch.randint(0, vocab, (n,), generator=gen)
    g1 = torch.randn(n, generator=gen, dtype=torch.float64)
    g2 = torch.randn(n, generator=gen, dtype=torch.float64)
    return logits, tokens, g1, g2


@pytest.mark.parametrize("which", ["logprob", "entropy", "both"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_whole_rows_equal_autograd(which: str, temperature: float) -> None:
    logits, tokens, g1, g2 = _case(0)
    g1 = g1 if which in ("logprob", "both") else None
    g2 = g2 if which in ("entropy", "both") else None
    expected, log_p, h = _autograd(logits, tokens, temperature, g1, g2)
    got = logit_grad_(log_p.clone(), h, g1, g2, tokens, 1.0 / temperature)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_blocks_of_columns_assemble_the_full_gradient() -> None:
    # The streaming backward calls the formula on column blocks; only the block holding token k
    # gets the e_k term, and the blocks side by side must equal the whole-row gradient.
    logits, tokens, g1, g2 = _case(1, n=9, vocab=31)
    expected, log_p, h = _autograd(logits, tokens, 1.3, g1, g2)
    blocks = [
        logit_grad_(log_p[:, start : start + 8].clone(), h, g1, g2, tokens, 1 / 1.3, start)
        for start in range(0, 31, 8)
    ]
    torch.testing.assert_close(torch.cat(blocks, -1), expected, rtol=1e-12, atol=1e-14)


def test_zero_probability_entries_get_zero_gradient_not_nan() -> None:
    # -inf logits (a padded vocabulary) are p = 0 entries: 0 · (log 0 + H) must be 0, not NaN.
    logits, tokens, g1, g2 = _case(2)
    tokens = tokens % 20
    logits[:, 20:] = float("-inf")
    expected, _, h = _autograd(logits[:, :20], tokens, 1.0, g1, g2)
    got = logit_grad_(torch.log_softmax(logits, -1), h, g1, g2, tokens, 1.0)
    assert torch.isfinite(got).all()
    assert torch.equal(got[:, 20:], torch.zeros(7, 3, dtype=torch.float64))
    torch.testing.assert_close(got[:, :20], expected, rtol=1e-12, atol=1e-14)


def test_the_result_is_written_over_the_input() -> None:
    logits, tokens, g1, _ = _case(3)
    log_p = torch.log_softmax(logits, -1)
    got = logit_grad_(log_p, torch.zeros(7, dtype=torch.float64), g1, None, tokens, 1.0)
    assert got.data_ptr() == log_p.data_ptr()


def test_no_upstream_gradient_is_refused() -> None:
    logits, tokens, _, _ = _case(4)
    with pytest.raises(ValueError, match="g_logprob, g_entropy"):
        logit_grad_(logits, logits[:, 0], None, None, tokens, 1.0)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_coefficients_around_the_row_max_equal_autograd(temperature: float) -> None:
    # grad_coefficients: grad_z = e ⊙ (coef + g2s·rel) + g1t·e_k with rel = x - max, e = exp(rel)
    from entropy_dynamics.kernels.logit_grad import grad_coefficients

    logits, tokens, g1, g2 = _case(5)
    expected, _log_p, entropy = _autograd(logits, tokens, temperature, g1, g2)
    x = logits / temperature
    rel = x - x.amax(-1, keepdim=True)
    log_a = torch.logsumexp(rel, -1)
    coef, g2s, g1t = grad_coefficients(log_a, entropy, g1, g2, 1 / temperature)
    grad = rel.exp() * (coef[:, None] + g2s[:, None] * rel)
    grad[torch.arange(len(tokens)), tokens] += g1t
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-13)
