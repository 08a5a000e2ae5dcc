"""Policy losses: the GRPO logit update of Theorem 3.3, clipping, aggregation, bonuses, methods."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics import theory
from entropy_dynamics.filters import available_filters, register_filter
from entropy_dynamics.losses import (
    AGG_MODES,
    PolicyLossConfig,
    PolicyLossInputs,
    PolicyLossOutput,
    aggregate,
    aggregation_share,
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
from entropy_dynamics.stats import TokenStats, token_stats

if "_test_drop_negative" not in available_filters():

    @register_filter("_test_drop_negative")
    def _drop_negative(stats, advantages, response_mask, *, threshold: float = 0.0):
        """Test filter: drop valid tokens with A < threshold; metric: the dropped count."""
        valid = response_mask != 0
        dropped = valid & (advantages < threshold)
        return valid & ~dropped, {"_test_drop_negative/n_dropped": dropped.sum().float()}


def _inputs(logprobs, old, adv, mask, entropy=None) -> PolicyLossInputs:
    zeros = torch.zeros_like(old)
    stats = TokenStats(logprobs, zeros if entropy is None else entropy, zeros, zeros)
    return PolicyLossInputs(logprobs, old, adv, mask, stats)


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


def _grad_per_token(config: PolicyLossConfig, log_ratio: list[float], adv: list[float]):
    old = torch.zeros(1, len(log_ratio), dtype=torch.float64)
    logprobs = torch.tensor([log_ratio], dtype=torch.float64, requires_grad=True)
    adv_t = torch.tensor([adv], dtype=torch.float64)
    mask = torch.ones(1, len(adv), dtype=torch.bool)
    out = compute_policy_loss(config, _inputs(logprobs, old, adv_t, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    return grad[0], out.metrics


def test_ppo_clipping_zeroes_gradient_outside_the_trust_region() -> None:
    # Tokens: (r=1.5, A>0) clipped; (r=0.5, A>0) not clipped; (r=0.5, A<0) clipped;
    # (r=1.5, A<0) not clipped; (r=1, A>0) not clipped.
    ratios = [1.5, 0.5, 0.5, 1.5, 1.0]
    adv = [1.0, 1.0, -1.0, -1.0, 2.0]
    grad, metrics = _grad_per_token(PolicyLossConfig(), [math.log(r) for r in ratios], adv)
    # Unclipped token: d(-A r / n)/d log p = -A r / n with n = 5.
    expected = [0.0, -1.0 * 0.5 / 5, 0.0, 1.0 * 1.5 / 5, -2.0 / 5]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))
    assert metrics["actor/pg_clipfrac"].item() == pytest.approx(2 / 5)
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0  # no dual clip by default
    # ppo_kl = mean(log p_old - log p) = -mean(log r) = -log(1.5 · 0.5 · 0.5 · 1.5) / 5.
    assert metrics["actor/ppo_kl"].item() == pytest.approx(-math.log(0.5625) / 5)


def test_clip_higher_keeps_low_probability_positive_updates() -> None:
    log_ratio, adv = [math.log(1.25)], [1.0]
    grad_sym, _ = _grad_per_token(PolicyLossConfig(), log_ratio, adv)
    grad_high, _ = _grad_per_token(resolve_method("clip_higher"), log_ratio, adv)
    assert grad_sym.item() == 0.0  # 1.25 > 1 + 0.2: clipped
    assert grad_high.item() == pytest.approx(-1.25)  # 1.25 < 1 + 0.28: trained
    # The lower side is unchanged: r = 0.75 < 1 - 0.2 with A < 0 is clipped in both.
    for config in (PolicyLossConfig(), resolve_method("clip_higher")):
        grad, _ = _grad_per_token(config, [math.log(0.75)], [-1.0])
        assert grad.item() == 0.0


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


def test_dual_clip_bounds_negative_advantage_loss() -> None:
    # A = -1, r = 5, c = 3: pg = min(max(5, 1.2), 3) = 3, a constant -> no gradient.
    grad, metrics = _grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(5.0)], [-1.0])
    assert grad.item() == 0.0
    assert metrics["actor/pg_clipfrac_lower"].item() == 1.0
    # r = 2 < c: the ordinary surrogate, gradient -A r = 2.
    grad, metrics = _grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(2.0)], [-1.0])
    assert grad.item() == pytest.approx(2.0)
    assert metrics["actor/pg_clipfrac_lower"].item() == 0.0
    # A > 0 is untouched by the dual clip: r = 5 is clipped by 1 + eps as usual (zero gradient).
    grad, _ = _grad_per_token(PolicyLossConfig(dual_clip_c=3.0), [math.log(5.0)], [1.0])
    assert grad.item() == 0.0
    # Without dual clip the A < 0, r = 5 token is trained: gradient -A r = 5.
    grad, _ = _grad_per_token(PolicyLossConfig(), [math.log(5.0)], [-1.0])
    assert grad.item() == pytest.approx(5.0)


def test_aggregation_modes_match_hand_computation() -> None:
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # Valid: row 0 {1, 2}, row 1 {4}, row 2 empty (ignored by sequence means).
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((3 + 4) / 2)
    # token sum 7 over the padded width T = 3, or over a given constant.
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(7 / 3)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm=14).item() == pytest.approx(0.5)
    assert aggregate(loss, torch.zeros_like(mask), "token-mean").item() == 0.0
    with pytest.raises(ValueError, match="agg_mode"):
        aggregate(loss, mask, "sum")
    assert set(AGG_MODES) == {
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    }


def test_aggregation_mode_sets_per_token_gradient_weights() -> None:
    # With ratio 1 and A = 1 the gradient on log p_t is -(weight of token t) in the mode:
    # lengths 1 and 3 (T = 4): token-mean 1/4 each; seq-mean-token-mean 1/2 and 1/6;
    # seq-mean-token-sum 1/2; seq-mean-token-sum-norm with norm 8: 1/8.
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    adv = mask.double()
    expected = {
        "token-mean": [[1 / 4, 0, 0, 0], [1 / 4, 1 / 4, 1 / 4, 0]],
        "seq-mean-token-mean": [[1 / 2, 0, 0, 0], [1 / 6, 1 / 6, 1 / 6, 0]],
        "seq-mean-token-sum": [[1 / 2, 0, 0, 0], [1 / 2, 1 / 2, 1 / 2, 0]],
        "seq-mean-token-sum-norm": [[1 / 8, 0, 0, 0], [1 / 8, 1 / 8, 1 / 8, 0]],
    }
    for mode, weights in expected.items():
        norm = 8.0 if mode == "seq-mean-token-sum-norm" else None
        config = PolicyLossConfig(agg_mode=mode, loss_agg_norm=norm)
        logprobs = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        out = compute_policy_loss(config, _inputs(logprobs, logprobs.detach(), adv, mask))
        (grad,) = torch.autograd.grad(out.loss, logprobs)
        torch.testing.assert_close(-grad, torch.tensor(weights, dtype=torch.float64))


def test_dropped_tokens_leave_the_token_mean_denominator() -> None:
    old = torch.zeros(1, 4, dtype=torch.float64)
    logprobs = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    inputs = _inputs(logprobs, old, adv, mask)
    inputs.keep_mask = torch.tensor([[True, True, False, True]])
    out = compute_policy_loss(PolicyLossConfig(), inputs)
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    # Three kept tokens: gradient -A/3 on kept tokens, 0 on the dropped one.
    torch.testing.assert_close(
        grad[0], torch.tensor([-1 / 3, -1 / 3, 0.0, 1 / 3], dtype=torch.float64)
    )
    assert out.metrics["actor/frac_kept"].item() == pytest.approx(0.75)


def test_filter_composed_by_name_drops_tokens_and_reports_its_metrics() -> None:
    # Registered test filter drops A < 0. Tokens (ratio 1): A = (2, -1, 1 | 3, pad).
    # Kept: 2, 1, 3 -> token-mean loss = -(2 + 1 + 3) / 3 = -2; without the filter
    # -(2 - 1 + 1 + 3) / 4 = -1.25.
    adv = torch.tensor([[2.0, -1.0, 1.0], [3.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    logprobs = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    inputs = _inputs(logprobs, logprobs.detach(), adv, mask)
    out = compute_policy_loss(PolicyLossConfig(filter="_test_drop_negative"), inputs)
    assert out.loss.item() == pytest.approx(-2.0)
    assert out.metrics["_test_drop_negative/n_dropped"].item() == 1.0
    assert out.metrics["actor/frac_kept"].item() == pytest.approx(3 / 4)
    assert out.keep_mask.tolist() == [[True, False, True], [True, False, False]]
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    assert grad[0, 1].item() == 0.0
    assert compute_policy_loss(PolicyLossConfig(), inputs).loss.item() == pytest.approx(-1.25)
    # Options reach the filter: threshold 1.5 also drops A = 1 -> -(2 + 3) / 2.
    config = PolicyLossConfig(filter="_test_drop_negative", filter_options={"threshold": 1.5})
    assert compute_policy_loss(config, inputs).loss.item() == pytest.approx(-2.5)


def test_filter_by_name_drops_negative_outliers() -> None:
    # clip_b: S = (0,0,0,0,0,0,0,0,0,-1), A < 0 on the last token: m = -0.1, σ = 0.3,
    # S - m = -0.9: dropped iff -0.9 < -μ·0.3, i.e. μ < 3: kept at μ = 3.5, dropped at 2.5.
    s = torch.tensor([[0.0] * 9 + [-1.0]])
    zeros = torch.zeros_like(s)
    adv = torch.tensor([[1.0] * 9 + [-1.0]])
    mask = torch.ones_like(s, dtype=torch.bool)
    stats = TokenStats(zeros, zeros, s, zeros)
    for mu, kept in ((3.5, 1.0), (2.5, 0.9)):
        config = resolve_method("clip_b", filter_options={"mu": mu})
        out = compute_policy_loss(config, PolicyLossInputs(zeros, zeros, adv, mask, stats))
        assert out.metrics["actor/frac_kept"].item() == pytest.approx(kept)
        assert "clip_b/frac_clipped" in out.metrics


def test_clip_cov_never_drops_a_token_whose_ratio_is_already_clipped() -> None:
    # cov_t = (A - mean A)(log p - mean log p) with A = (2, 0, -2), log p = (1.5, 0, 0):
    # means 0 and 0.5 -> cov = (2, 0, 1); only token 0 lies strictly inside (1, 5), and
    # K = max(int(2e-4 · 3), 1) = 1, so clip_cov drops token 0 -- unless its PPO ratio is
    # clipped (r = 1.5 > 1.2 with A > 0), which verl excludes from the candidates.
    adv = torch.tensor([[2.0, 0.0, -2.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    logprobs = torch.tensor([[1.5, 0.0, 0.0]], dtype=torch.float64)
    config = resolve_method("clip_cov")
    for log_r0, kept in ((0.0, 2 / 3), (math.log(1.5), 1.0)):
        old = logprobs - torch.tensor([[log_r0, 0.0, 0.0]], dtype=torch.float64)
        out = compute_policy_loss(config, _inputs(logprobs, old, adv, mask))
        assert out.metrics["actor/frac_kept"].item() == pytest.approx(kept)


def test_entropy_bonus_gradient_is_minus_coef_times_entropy_gradient() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    tokens = torch.randint(0, 7, (2, 5), generator=gen)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    stats = token_stats(logits, tokens, entropy_grad=True)
    zeros = torch.zeros(2, 5, dtype=torch.float64)  # A = 0: only the bonus has a gradient
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), zeros, mask, stats)
    out = compute_policy_loss(resolve_method("entropy_bonus", entropy_coef=0.5), inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    # Independent reference: theory.entropy, token-mean over the 8 valid positions.
    logits_ref = logits.detach().requires_grad_(True)
    mean_h = (theory.entropy(logits_ref) * mask).sum() / mask.sum()
    (grad_h,) = torch.autograd.grad(mean_h, logits_ref)
    torch.testing.assert_close(grad, -0.5 * grad_h, rtol=0, atol=1e-12)
    assert out.metrics["actor/entropy"].item() == pytest.approx(mean_h.item())
    assert out.metrics["actor/pg_loss"].item() == 0.0  # the bonus is not in pg_loss
    # A small step along -grad raises the entropy.
    after = (theory.entropy(logits.detach() - 0.1 * grad) * mask).sum() / mask.sum()
    assert after > mean_h


def test_entropy_bonus_without_differentiable_entropy_is_refused() -> None:
    logits = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    stats = token_stats(logits, torch.zeros(1, 3, dtype=torch.long))  # entropy detached
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    inputs = PolicyLossInputs(stats.logprobs, stats.logprobs.detach(), zeros, mask, stats)
    with pytest.raises(ValueError, match="entropy_grad=True"):
        compute_policy_loss(resolve_method("entropy_bonus"), inputs)


def test_kl_cov_penalty_applies_only_to_selected_tokens_without_clipping() -> None:
    # log p = (2, 0, 0, -1), A = (2, 0, 0.5, -2.5): means 0.25 and 0, so
    # cov = (2·1.75, 0, 0.5·(-0.25), -2.5·(-1.25)) = (3.5, 0, -0.125, 3.125); with ratio 0.25
    # K = 1 token is selected: token 0. Ratios: e^0.1, 1, e^0.5, 1.
    logprobs = torch.tensor([[2.0, 0.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[1.9, 0.0, -0.5, -1.0]], dtype=torch.float64)
    adv = torch.tensor([[2.0, 0.0, 0.5, -2.5]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = resolve_method("kl_cov", kl_cov_ratio=0.25, kl_cov_coef=2.0)
    out = compute_policy_loss(config, _inputs(logprobs, old, adv, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    # d/d log p of (-A r + 2 |log r|) / 4 on token 0 (log r > 0): (-2 e^0.1 + 2) / 4;
    # token 2, not clipped under KL-Cov although r = e^0.5 > 1.2 with A > 0: -0.5 e^0.5 / 4;
    # token 3: 2.5 / 4.
    expected = [(-2 * math.exp(0.1) + 2.0) / 4, 0.0, -0.5 * math.exp(0.5) / 4, 2.5 / 4]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))
    assert out.metrics["kl_cov/frac_selected"].item() == pytest.approx(0.25)
    assert out.metrics["actor/pg_clipfrac"].item() == 0.0
    # The same batch under PPO-clip: token 2 is clipped, token 0 has no penalty.
    out = compute_policy_loss(resolve_method("grpo"), _inputs(logprobs, old, adv, mask))
    (grad,) = torch.autograd.grad(out.loss, logprobs)
    expected = [-2 * math.exp(0.1) / 4, 0.0, 0.0, 2.5 / 4]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))


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
    out = compute_policy_loss(
        resolve_method("_test_reinforce_method"), _inputs(logprobs, logprobs.detach(), adv, mask)
    )
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
        compute_policy_loss(PolicyLossConfig(), _inputs(x, x, torch.zeros(2, 4), x.bool()))
    inputs = _inputs(x, x, x, x.bool())
    inputs.keep_mask = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="keep_mask has shape"):
        compute_policy_loss(PolicyLossConfig(), inputs)


@pytest.mark.parametrize("agg_mode", AGG_MODES)
def test_micro_batch_shares_reassemble_the_whole_batch_gradient(agg_mode) -> None:
    # Gradient accumulation as the trainer does it: each micro-batch's pg and entropy terms,
    # weighted by aggregation_share, must give the one-shot gradient of the whole batch.
    gen = torch.Generator().manual_seed(0)
    b, t = 6, 5
    logprobs = (-torch.rand(b, t, generator=gen, dtype=torch.float64)).requires_grad_()
    entropy = torch.rand(b, t, generator=gen, dtype=torch.float64).requires_grad_()
    old = logprobs.detach() + 0.05 * torch.randn(b, t, generator=gen, dtype=torch.float64)
    advantages = torch.randn(b, 1, generator=gen, dtype=torch.float64).expand(b, t)
    mask = torch.rand(b, t, generator=gen) < 0.8
    mask[2] = False  # a row without tokens
    keep = torch.rand(b, t, generator=gen) < 0.7
    norm = 7.0 if agg_mode == "seq-mean-token-sum-norm" else None
    config = PolicyLossConfig(agg_mode=agg_mode, entropy_coef=0.3, loss_agg_norm=norm)

    def inputs(rows):
        stats = TokenStats(logprobs[rows], entropy[rows], torch.zeros(len(rows), t), None)
        return PolicyLossInputs(
            logprobs[rows], old[rows], advantages[rows], mask[rows], stats, keep[rows]
        )

    whole = compute_policy_loss(config, inputs(torch.arange(b))).loss
    expected = torch.autograd.grad(whole, (logprobs, entropy))
    total = 0.0
    trained = keep & mask
    for rows in (torch.tensor([0, 1]), torch.tensor([2, 3, 4]), torch.tensor([5])):
        out = compute_policy_loss(config, inputs(rows))
        pg_share = aggregation_share(agg_mode, trained[rows], trained)
        entropy_share = aggregation_share(agg_mode, mask[rows], mask)
        total = total + pg_share * out.pg_loss - config.entropy_coef * entropy_share * out.entropy
    got = torch.autograd.grad(total, (logprobs, entropy))
    torch.testing.assert_close(total, whole)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e)
