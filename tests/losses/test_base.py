"""The policy losses' contract (``losses/base.py``): the GRPO logit update of Theorem 3.3 through
``compute_policy_loss``, the config's checks, the registry, every method running. The per-token
formulas, the shared tail and the registered losses: ``test_token.py``, ``test_tail.py``,
``test_registered.py``."""

from __future__ import annotations

import math

import pytest
import torch
from loss_helpers import loss_inputs

from entropy_dynamics import theory
from entropy_dynamics.losses import (
    PolicyLossConfig,
    PolicyLossInputs,
    PolicyLossOutput,
    aggregate,
    available_policy_losses,
    compute_policy_loss,
    get_policy_loss,
    register_policy_loss,
)
from entropy_dynamics.methods import (
    METHODS,
    Method,
    available_methods,
    register_method,
    resolve_method,
)
from entropy_dynamics.stats import token_stats


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_descent_direction_is_theorem_3_3_logit_update(temperature: float) -> None:
    # KEY ACCEPTANCE. At ratio 1, -∂(token-mean loss)/∂z_t = A_t (e_k - p_t) / (T · n_tokens) at
    # every valid position: the GRPO logit update of Theorem 3.3 with step 1 / n_tokens.
    gen = torch.Generator().manual_seed(0)
    b, t, v = 3, 4, 11
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float64).requires_grad_(True)
    tokens = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.5, -0.7, 0.3], dtype=torch.float64)[:, None].expand(b, t) * mask
    stats = token_stats(logits, tokens, temperature, chunk_size=5)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), adv, mask, stats)
    out = compute_policy_loss(PolicyLossConfig(), inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    n_tokens = int(mask.sum())
    expected = theory.grpo_logit_update(
        logits.detach(), tokens, adv, lr=1.0 / n_tokens, temperature=temperature
    )
    expected = expected * mask[..., None]  # padding gets no gradient
    torch.testing.assert_close(-grad, expected, rtol=0, atol=1e-10)


def test_method_presets_are_overrides_of_the_config_defaults() -> None:
    assert resolve_method("clip_higher").eps_high == 0.28
    assert resolve_method("clip_higher", eps_high=0.3).eps_high == 0.3  # the user wins
    assert resolve_method("grpo") == PolicyLossConfig()
    # Every preset differs from the defaults only in the fields its row names.
    defaults = PolicyLossConfig()
    for method, row in METHODS.items():
        config = resolve_method(method)
        changed = {k for k in vars(defaults) if getattr(config, k) != getattr(defaults, k)}
        assert changed == set(row.loss), method


@pytest.mark.parametrize("method", available_methods())
def test_every_method_runs_and_backpropagates(method: str) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 6, 9, generator=gen).requires_grad_(True)
    tokens = torch.randint(0, 9, (4, 6), generator=gen)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None] * mask
    stats = token_stats(logits, tokens, entropy_grad=True)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), adv, mask, stats)
    out = compute_policy_loss(resolve_method(method), inputs)
    out.loss.backward()
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert out.keep_mask.shape == (4, 6) and not out.keep_mask[1, 4:].any()
    assert all(value.dim() == 0 for value in out.metrics.values())
    assert all("/" in key for key in out.metrics)
    actor_keys = {"pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "entropy", "frac_kept"}
    assert {f"actor/{k}" for k in actor_keys} <= set(out.metrics)


def test_a_new_loss_is_one_decorated_function_and_a_new_method_one_row() -> None:
    name = "_test_reinforce"
    if name not in available_policy_losses():

        @register_policy_loss(name)
        def _reinforce(config: PolicyLossConfig, inputs: PolicyLossInputs) -> PolicyLossOutput:
            keep = inputs.response_mask.bool()
            loss = aggregate(-inputs.advantages * inputs.logprobs, keep, config.agg_mode)
            return PolicyLossOutput(loss, {"actor/pg_loss": loss.detach()}, keep)

        register_method(Method("_test_reinforce_method", "REINFORCE (test)", {"loss": name}))
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss(name)(lambda config, inputs: None)
    with pytest.raises(ValueError, match="unknown loss option"):
        register_method(Method("_test_bad_method", "a typo (test)", {"eps": 0.1}))
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    inputs = loss_inputs(logprobs, logprobs.detach(), adv, mask)
    out = compute_policy_loss(resolve_method("_test_reinforce_method"), inputs)
    assert out.loss.item() == pytest.approx((1.0 - 2.0) / 2)  # -(1·(-1) + (-1)·(-2)) / 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"agg_mode": "mean"}, "agg_mode"),
        ({"dual_clip_c": 0.5}, "dual_clip_c"),
        ({"eps_low": -0.1}, "eps_low"),
        ({"eps_high": math.nan}, "eps_high"),
        ({"entropy_coef": math.inf}, "entropy_coef"),
        ({"loss_agg_norm": 0.0, "agg_mode": "seq-mean-token-sum-norm"}, "loss_agg_norm"),
        ({"loss_agg_norm": 100.0}, "only applies to agg_mode"),
        ({"filter": "nope"}, "registered filters"),
        ({"filter": "clip_b", "filter_options": {"muu": 1}}, "no option 'muu'"),
        ({"loss": "nope"}, "registered"),
        ({"kl_cov_ratio": 2.0}, "kl_cov_ratio"),
        ({"kl_cov_ratio": 0.0}, "kl_cov_ratio"),
        ({"kl_cov_coef": -1.0}, "kl_cov_coef"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolicyLossConfig(**kwargs)


def test_registry_and_method_errors_list_the_names() -> None:
    with pytest.raises(KeyError, match="kl_cov, ppo"):
        get_policy_loss("missing")
    with pytest.raises(ValueError, match="clip_b"):
        resolve_method("missing")
    with pytest.raises(ValueError, match="unknown loss option 'eps'"):
        resolve_method("grpo", eps=0.1)


def test_shape_mismatch_is_refused() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages has shape"):
        compute_policy_loss(PolicyLossConfig(), loss_inputs(x, x, torch.zeros(2, 4), x.bool()))
    inputs = loss_inputs(x, x, x, x.bool())
    inputs.keep_mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="keep_mask has shape"):
        compute_policy_loss(PolicyLossConfig(), inputs)


