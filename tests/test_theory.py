"""Theorems 3.2 / 3.3 and Corollary 3.4 checked against exact entropy changes and autograd."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.study.verification import loglog_slope

STEPS = [1e-1, 1e-2, 1e-3, 1e-4]


def _random_case(vocab: int, positions: int, seed: int, scale: float = 2.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(positions, vocab, generator=gen, dtype=torch.float64)
    tokens = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    return logits, tokens


def _manual_entropy(logits: torch.Tensor) -> torch.Tensor:
    # Independent reference: H = logsumexp(z) - Σ p z (no p log p anywhere).
    p = torch.softmax(logits, -1)
    return torch.logsumexp(logits, -1) - (p * logits).sum(-1)


@pytest.mark.parametrize("vocab", [2, 7, 100, 5000, 50_000])
def test_theorem_3_2_error_is_second_order(vocab: int) -> None:
    logits, tokens = _random_case(vocab, positions=8, seed=vocab)
    one_hot = torch.nn.functional.one_hot(tokens, vocab).to(torch.float64)
    errors = []
    for eps in STEPS:
        exact = theory.entropy_change(logits, eps * one_hot)
        predicted = -eps * theory.discriminator(logits, tokens)
        errors.append(float((exact - predicted).abs().max()))
    assert loglog_slope(STEPS, errors) == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("vocab", [2, 7, 100, 5000, 50_000])
def test_theorem_3_3_error_is_second_order(vocab: int) -> None:
    logits, tokens = _random_case(vocab, positions=8, seed=vocab + 1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -2.0, 1.5, -0.3, 1.0, -1.0], dtype=torch.float64)
    errors = []
    for lr in STEPS:
        delta = theory.grpo_logit_update(logits, tokens, advantages, lr)
        exact = theory.entropy_change(logits, delta)
        predicted = theory.grpo_entropy_change(logits, tokens, advantages, lr)
        errors.append(float((exact - predicted).abs().max()))
    assert loglog_slope(STEPS, errors) == pytest.approx(2.0, abs=0.1)


def test_grpo_logit_update_is_alpha_times_e_k_minus_p() -> None:
    # Hand case: z = (0, log 3) -> p = (1/4, 3/4); k = 0, A = 2, lr = 0.5 -> α = 1,
    # Δz = α (e_0 - p) = (3/4, -3/4).
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    delta = theory.grpo_logit_update(logits, torch.tensor([0]), torch.tensor([2.0]), lr=0.5)
    torch.testing.assert_close(delta, torch.tensor([[0.75, -0.75]], dtype=torch.float64))


def test_first_order_form_equals_autograd_gradient() -> None:
    for temperature in (1.0, 0.7):
        logits, _ = _random_case(300, positions=5, seed=3)
        logits.requires_grad_(True)
        (grad,) = torch.autograd.grad(theory.entropy(logits, temperature).sum(), logits)
        delta = torch.randn(
            logits.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
        )
        expected = (grad * delta).sum(-1)
        got = theory.first_order_entropy_change(logits.detach(), delta, temperature)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_corollary_3_4_expected_deviation_is_zero() -> None:
    # Σ_k p_k (S_k - E_p[S]) = 0: enumerate every token k of each position.
    vocab = 50
    logits, _ = _random_case(vocab, positions=6, seed=5, scale=3.0)
    p = torch.softmax(logits, -1)
    all_tokens = torch.arange(vocab).expand(6, vocab)  # (6, V)
    s_all = theory.discriminator(logits.unsqueeze(1).expand(6, vocab, vocab), all_tokens)
    centre = theory.expected_discriminator(logits)
    total = (p * (s_all - centre.unsqueeze(-1))).sum(-1)
    torch.testing.assert_close(total, torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    # ... and E_p[S] is the p-weighted mean of S over the vocabulary, by definition.
    torch.testing.assert_close(centre, (p * s_all).sum(-1), rtol=0, atol=1e-12)


def test_discriminator_sign_matches_typical_token_rule() -> None:
    # sign(S_k) = sign(p_k - e^{-H}) (paper §3.1).
    logits, _ = _random_case(40, positions=4, seed=6, scale=3.0)
    p = torch.softmax(logits, -1)
    h = _manual_entropy(logits)
    for k in range(40):
        tokens = torch.full((4,), k)
        s = theory.discriminator(logits, tokens)
        expected = torch.sign(p[:, k] - torch.exp(-h))
        assert torch.equal(torch.sign(s), expected)


def test_entropy_matches_independent_formula_and_temperature() -> None:
    logits, _ = _random_case(64, positions=3, seed=7)
    torch.testing.assert_close(theory.entropy(logits), _manual_entropy(logits))
    torch.testing.assert_close(theory.entropy(logits, 0.5), _manual_entropy(logits / 0.5))


def test_temperature_scales_theorem_3_3() -> None:
    logits, tokens = _random_case(30, positions=4, seed=8)
    adv = torch.tensor([1.0, -1.0, 2.0, -0.5], dtype=torch.float64)
    t = 0.6
    # First-order prediction of the update equals Theorem 3.3's closed form at T != 1.
    delta = theory.grpo_logit_update(logits, tokens, adv, 1e-3, temperature=t)
    torch.testing.assert_close(
        theory.first_order_entropy_change(logits, delta, temperature=t),
        theory.grpo_entropy_change(logits, tokens, adv, 1e-3, temperature=t),
        rtol=1e-10,
        atol=1e-15,
    )


def test_minus_inf_logits_are_zero_probability_entries() -> None:
    # Appending -inf entries (a padded vocabulary) changes nothing.
    logits, tokens = _random_case(20, positions=3, seed=9)
    padded = torch.cat([logits, torch.full((3, 5), -math.inf, dtype=torch.float64)], -1)
    for fn in (theory.entropy, theory.expected_discriminator):
        torch.testing.assert_close(fn(padded), fn(logits))
    torch.testing.assert_close(
        theory.discriminator(padded, tokens), theory.discriminator(logits, tokens)
    )
    delta = torch.randn(3, 25, dtype=torch.float64)
    torch.testing.assert_close(
        theory.first_order_entropy_change(padded, delta),
        theory.first_order_entropy_change(logits, delta[:, :20]),
    )
    for value in (theory.entropy(padded), theory.expected_discriminator(padded)):
        assert torch.isfinite(value).all()


def test_float32_and_bfloat16_inputs_compute_in_float32() -> None:
    logits, tokens = _random_case(100, positions=4, seed=10)
    assert theory.entropy(logits.to(torch.bfloat16)).dtype == torch.float32
    torch.testing.assert_close(
        theory.discriminator(logits.float(), tokens),
        theory.discriminator(logits, tokens).float(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_invalid_temperature_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        theory.entropy(torch.zeros(3), temperature=0.0)

