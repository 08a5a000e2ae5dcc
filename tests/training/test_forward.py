"""The trainer's statistics path: fused from hidden states when the model allows it."""

from __future__ import annotations

import copy

import pytest
import torch

from entropy_dynamics.training.forward import ResponseStats, fusable_lm_head
from entropy_dynamics.training.rollout import generate

PROMPTS = ["7 3 2 -> 23: ", "1 9 -> 10: ", "4 4 8 -> 2: "]


@pytest.fixture(scope="module")
def rollout(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    return generate(model, tokenizer, PROMPTS, num_samples=2, max_new_tokens=6)


class _SoftCapped(torch.nn.Module):
    """A causal LM whose logits are ``c·tanh(lm_head(h) / c)`` (Gemma-2 style soft-capping)."""

    def __init__(self, inner, cap: float = 2.0) -> None:
        super().__init__()
        self.inner, self.cap = inner, cap

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def get_decoder(self):
        return self.inner.get_decoder()

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = self.cap * torch.tanh(out.logits / self.cap)
        return out


def test_the_tiny_qwen2_is_fusable(tiny_lm) -> None:
    model, _ = tiny_lm
    head, reason = fusable_lm_head(model)
    assert head is model.lm_head and reason == ""


def test_soft_capped_logits_fall_back_to_materialised_logits(tiny_lm) -> None:
    capped = _SoftCapped(tiny_lm[0])
    head, reason = fusable_lm_head(capped)
    assert head is None and "soft-caps" in reason
    assert not ResponseStats(capped, 1.0, "auto").fused
    with pytest.raises(ValueError, match=r"fused_stats=always.*soft-caps"):
        ResponseStats(capped, 1.0, "always")
    with pytest.raises(ValueError, match="'auto', 'always' or 'never'"):
        ResponseStats(tiny_lm[0], 1.0, "sometimes")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_and_materialised_paths_agree_in_values_and_gradients(
    tiny_lm, rollout, temperature
) -> None:
    # Both paths are run on the same model; values and the gradient of a loss that uses
    # log p_k and H (entropy bonus) with respect to every parameter must agree.
    model = copy.deepcopy(tiny_lm[0])
    fused = ResponseStats(model, temperature, "auto")
    plain = ResponseStats(model, temperature, "never")
    assert fused.fused and not plain.fused
    mask = rollout.response_mask
    rows = torch.tensor([1, 2, 4])
    results = []
    for path in (fused, plain):
        model.zero_grad()
        features = path.features(rollout, rows)
        stats = path.stats(features, rollout.response_ids[rows], entropy_grad=True)
        weights = mask[rows].float()
        loss = ((stats.logprobs * 0.7 - 0.1 * stats.entropy) * weights).sum()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((stats, grads, path.logits(features[:, :2])))
    (s1, g1, l1), (s2, g2, l2) = results
    for name in ("logprobs", "entropy", "discriminator", "expected_discriminator"):
        torch.testing.assert_close(getattr(s1, name), getattr(s2, name), rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-5)
    assert l1.shape == (3, 2, model.config.vocab_size)


def test_trainer_uses_the_fused_path_by_default(random_model_dir, tmp_path) -> None:
    from entropy_dynamics.training.config import load_config
    from entropy_dynamics.training.trainer import Trainer

    overrides = [f"model.path={random_model_dir}", f"output_dir={tmp_path}", "steps=1"]
    assert Trainer(load_config(None, overrides), tmp_path / "a").forward.fused
    never = load_config(None, [*overrides, "model.fused_stats=never"])
    assert not Trainer(never, tmp_path / "b").forward.fused


@pytest.mark.parametrize("entropy_coef", [0.0, 0.05])
def test_fused_policy_loss_equals_the_unfused_loss_on_every_parameter(
    tiny_lm, rollout, entropy_coef
) -> None:
    # The trainer's fused update (issue 16) against compute_policy_loss on materialised logits:
    # same value, same gradient on every parameter (the tied lm_head / embedding included).
    from entropy_dynamics.losses import PolicyLossConfig, PolicyLossInputs, compute_policy_loss

    model = copy.deepcopy(tiny_lm[0])
    config = PolicyLossConfig(eps_high=0.28, dual_clip_c=3.0, entropy_coef=entropy_coef)
    fused, plain = ResponseStats(model, 0.7, "auto"), ResponseStats(model, 0.7, "never")
    assert fused.fuses_loss(config) and not plain.fuses_loss(config)
    gen = torch.Generator().manual_seed(0)
    shape = rollout.response_mask.shape
    with torch.no_grad():
        old = plain.stats(plain.features(rollout), rollout.response_ids).logprobs
    old = old + 0.3 * torch.randn(shape, generator=gen)  # ratios away from 1: clips bind
    adv = torch.randn(shape[0], 1, generator=gen).expand(shape)
    keep = torch.rand(shape, generator=gen) > 0.2
    rows = torch.tensor([0, 2, 3, 5])
    model.zero_grad()
    out, current = fused.policy_loss(config, rollout, rows, old, adv, keep, (0.5, 2.0))
    out.loss.backward()
    fused_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    stats = plain.stats(plain.features(rollout, rows), rollout.response_ids[rows], True)
    mask = rollout.response_mask[rows]
    inputs = PolicyLossInputs(stats.logprobs, old[rows], adv[rows], mask, stats, keep[rows])
    ref = compute_policy_loss(config, inputs)
    expected = 0.5 * ref.pg_loss - entropy_coef * 2.0 * ref.entropy
    expected.backward()
    assert 0 < ref.metrics["actor/pg_clipfrac"] < 1
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(  # the current policy's statistics come back with the loss
        torch.where(mask, current.logprobs, 0.0), torch.where(mask, stats.logprobs, 0.0).detach(),
        rtol=1e-5, atol=1e-6,
    )
    for key in ("actor/pg_loss", "actor/entropy", "actor/pg_clipfrac", "actor/frac_kept"):
        assert out.metrics[key].item() == pytest.approx(ref.metrics[key].item(), rel=1e-4), key
    for a, b in zip(fused_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="fused path"):
        plain.policy_loss(config, rollout, rows, old, adv, keep)
