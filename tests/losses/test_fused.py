"""The fused policy loss equals the registered ``ppo`` loss on materialised logits.

Reference: ``hidden @ weightᵀ + bias`` materialised, cut to the valid vocabulary, through
``stats.token_stats`` and ``losses.compute_policy_loss`` with the same keep-mask — an independent
path (chunked over logits, gradients by autograd). Values and gradients to ``hidden``, ``weight``
and ``bias`` must agree: to float64 rounding in float64, and within ``2e-5`` relative to the
largest entry in float32 (the documented tolerance: float32 sums in a different order).
"""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.aggregation import aggregate
from entropy_dynamics.kernels import Chunking, LMHead
from entropy_dynamics.losses import (
    AGG_MODES,
    PolicyLossConfig,
    PolicyLossInputs,
    aggregation_share,
    aggregation_weights,
    compute_policy_loss,
    fused_policy_loss,
)
from entropy_dynamics.stats import token_stats

B, T, D, V, VALID = 3, 5, 6, 29, 24  # lm_head padded: rows ≥ 24 are not tokens


def _case(dtype=torch.float64, seed=0, spread=0.6):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, D, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(V, D, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(V, generator=gen, dtype=torch.float64).to(dtype)
    tokens = torch.randint(0, VALID, (B, T), generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.2, -0.8, 0.5], dtype=torch.float64)[:, None].expand(B, T).clone()
    keep = torch.rand(B, T, generator=gen) > 0.3
    with torch.no_grad():  # old log-probs: the current ones moved so that every clip can bind
        z = (hidden.double() @ weight.double().T + bias.double())[..., :VALID]
        current = token_stats(z, tokens, 0.7).logprobs
    old = current + spread * torch.randn(B, T, generator=gen, dtype=torch.float64)
    old = torch.where(mask, old, torch.nan)  # padding holds NaN: it must reach nothing
    return hidden, weight, bias, tokens, old.to(dtype), adv.to(dtype), mask, keep


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _reference(config, hidden, weight, bias, tokens, old, adv, mask, keep, temperature):
    z = (hidden @ weight.T + bias)[..., :VALID]  # (B, T, VALID)
    stats = token_stats(z, tokens, temperature, entropy_grad=True)
    inputs = PolicyLossInputs(stats.logprobs, old, adv, mask, stats, keep)
    return compute_policy_loss(config, inputs), stats


CONFIGS = [
    PolicyLossConfig(agg_mode=mode, eps_high=0.28, dual_clip_c=3.0, entropy_coef=0.05)
    for mode in AGG_MODES
] + [
    PolicyLossConfig(agg_mode="seq-mean-token-sum-norm", loss_agg_norm=7.0),
    PolicyLossConfig(eps_low=0.1, eps_high=0.1),  # no entropy term: the g2 = 0 branch
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.agg_mode}-{c.entropy_coef}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_value_and_gradients_equal_the_unfused_loss(config, dtype) -> None:
    hidden, weight, bias, tokens, old, adv, mask, keep = _case(dtype)
    temperature = 0.7
    leaves = _leaves(hidden, weight, bias)
    ref, ref_stats = _reference(config, *leaves, tokens, old, adv, mask, keep, temperature)
    ref_grads = torch.autograd.grad(ref.loss, leaves)
    fused_leaves = _leaves(hidden, weight, bias)
    h, w, b = fused_leaves
    out, stats = fused_policy_loss(
        config, h, LMHead(w, b, temperature, VALID), tokens, old, adv, mask, keep,
        chunking=Chunking(row_chunk=4), expected_discriminator=True,
    )  # fmt: skip
    grads = torch.autograd.grad(out.loss, fused_leaves)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert abs(out.loss.item() - ref.loss.item()) <= tol * (1 + abs(ref.loss.item()))
    for got, expected in zip(grads, ref_grads, strict=True):
        scale = expected.abs().max().item()
        assert scale > 0
        assert (got - expected).abs().max().item() <= tol * scale
    assert grads[1][VALID:].abs().max() == 0 and grads[2][VALID:].abs().max() == 0  # not tokens
    for key, value in ref.metrics.items():
        assert out.metrics[key].item() == pytest.approx(value.item(), rel=tol, abs=tol), key
    for name in ("logprobs", "entropy", "discriminator", "expected_discriminator"):
        got, expected = getattr(stats, name)[mask], getattr(ref_stats, name)[mask]
        torch.testing.assert_close(got, expected.detach(), rtol=tol, atol=tol)


def test_clips_bind_in_the_test_case() -> None:
    # The equality above means something only if clipping and the dual clip are active.
    hidden, weight, bias, tokens, old, adv, mask, keep = _case()
    ref, _ = _reference(CONFIGS[0], hidden, weight, bias, tokens, old, adv, mask, keep, 0.7)
    assert 0 < ref.metrics["actor/pg_clipfrac"] < 1


@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_aggregation_weights_reproduce_aggregate(agg_mode) -> None:
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(4, 6, generator=gen) > 0.4
    mask[2] = False  # an empty row leaves the sequence count
    values = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    weights = aggregation_weights(mask, agg_mode, None, torch.float64)
    assert (weights[~mask] == 0).all()
    expected = aggregate(values, mask, agg_mode)
    assert (weights * values).sum().item() == pytest.approx(expected.item(), rel=1e-14)


def test_gradcheck_float64() -> None:
    hidden, weight, bias, tokens, old, adv, mask, keep = _case(spread=0.05)
    config = PolicyLossConfig(agg_mode="seq-mean-token-mean", entropy_coef=0.3)

    def loss(h, w, b):
        out, _ = fused_policy_loss(
            config, h, LMHead(w, b, 1.3, VALID), tokens, old, adv, mask, keep,
            chunking=Chunking(row_chunk=6),
        )  # fmt: skip
        return out.loss

    assert torch.autograd.gradcheck(loss, tuple(_leaves(hidden, weight, bias)), eps=1e-6)


def test_micro_batch_scales_weight_each_term() -> None:
    # pg_scale and entropy_scale are the trainer's micro-batch shares: loss = s1·pg - c·s2·H̄.
    hidden, weight, bias, tokens, old, adv, mask, keep = _case()
    config = PolicyLossConfig(entropy_coef=0.2)
    rows = slice(0, 2)
    s1 = aggregation_share(config.agg_mode, (keep & mask)[rows], keep & mask)
    s2 = aggregation_share(config.agg_mode, mask[rows], mask)
    leaves = _leaves(hidden[rows], weight, bias)
    out, _ = fused_policy_loss(
        config, leaves[0], LMHead(leaves[1], leaves[2], valid_vocab=VALID), tokens[rows],
        old[rows], adv[rows], mask[rows], keep[rows], pg_scale=s1, entropy_scale=s2,
    )  # fmt: skip
    ref_leaves = _leaves(hidden[rows], weight, bias)
    ref, _ = _reference(config, *ref_leaves, tokens[rows], old[rows], adv[rows], mask[rows],
                        keep[rows], 1.0)  # fmt: skip
    expected = s1 * ref.pg_loss - config.entropy_coef * s2 * ref.entropy
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for got, want in zip(
        torch.autograd.grad(out.loss, leaves),
        torch.autograd.grad(expected, ref_leaves),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_no_grad_computes_the_value_only() -> None:
    hidden, weight, bias, tokens, old, adv, mask, keep = _case()
    h, w = _leaves(hidden, weight)
    config = PolicyLossConfig(entropy_coef=0.1)
    with torch.no_grad():
        out, _ = fused_policy_loss(
            config, h, LMHead(w, bias, valid_vocab=VALID), tokens, old, adv, mask, keep
        )
    ref, _ = _reference(config, hidden, weight, bias, tokens, old, adv, mask, keep, 1.0)
    assert not out.loss.requires_grad
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-12)


def test_refuses_what_it_cannot_fuse() -> None:
    hidden, weight, _bias, tokens, old, adv, mask, keep = _case()
    head = LMHead(weight)
    with pytest.raises(ValueError, match="kl_cov"):
        fused_policy_loss(PolicyLossConfig(loss="kl_cov"), hidden, head, tokens, old, adv,
                          mask, keep)  # fmt: skip
    with pytest.raises(ValueError, match="keep_mask must have"):
        fused_policy_loss(PolicyLossConfig(), hidden, head, tokens, old, adv, mask, keep[:2])
    with pytest.raises(ValueError, match="hidden must be"):
        fused_policy_loss(PolicyLossConfig(), hidden[0], head, tokens, old, adv, mask, keep)
    with pytest.raises(ValueError, match="temperature"):
        fused_policy_loss(PolicyLossConfig(), hidden, LMHead(weight, None, 0.0), tokens, old,
                          adv, mask, keep)  # fmt: skip
