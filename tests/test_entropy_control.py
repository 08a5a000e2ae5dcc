"""Closed-loop entropy control (entropy_control.py, token_losses.entropic_adjustment): the
entropy_target filter on hand-built batches, the target schedules, and the peers' update rules
against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics.entropy_control import (
    adaptive_entropy_coef,
    entropy_target,
    forecast_contributions,
    integral_action,
    pi_control,
    target_schedule,
)
from entropy_dynamics.losses import PolicyLossInputs, compute_policy_loss, resolve_method
from entropy_dynamics.stats import TokenStats
from filter_helpers import PAD, rows, stats_with

# One row of five tokens. Deviation d = S - E_p[S] is put in S (E_p[S] = 0); A per token.
# Unit forecast c = -A·d = [-0.4, -0.1, 0.2, -0.3, 0.0]: tokens 0, 1, 3 lower the entropy,
# token 2 raises it, token 4 (A = 0) does nothing. Σc = -0.6 over n = 5 tokens.
ADV = rows([[1.0, 1.0, -1.0, -1.0, 0.0]], torch.float64)
DEV = rows([[0.4, 0.1, 0.2, -0.3, 0.5]], torch.float64)
MASK = torch.ones(1, 5, dtype=torch.bool)


def _stats(h: float, dev=DEV) -> TokenStats:
    entropy = torch.full(dev.shape, h, dtype=torch.float64)
    return stats_with(dev.shape, s=dev, h=entropy, dtype=torch.float64)


def _run(h: float, adv=ADV, dev=DEV, mask=MASK, **options):
    """The filter on a batch whose every token has entropy ``h``."""
    return entropy_target(_stats(h, dev), adv, mask, **options)


def test_forecast_contributions_are_minus_advantage_times_deviation() -> None:
    c = forecast_contributions(_stats(0.2), ADV, MASK)
    torch.testing.assert_close(c, rows([[-0.4, -0.1, 0.2, -0.3, 0.0]], torch.float64))


def test_low_entropy_drops_the_largest_lowering_tokens_until_the_forecast_is_met() -> None:
    # H = 0.2, target 0.3, band 0.1 -> L = 0.27: too low; gain 0.9 -> F must reach 0.09.
    # κ = 5: F(all) = 5 · (-0.6) / 5 = -0.6. Dropping token 0 (c = -0.4) gives -0.2, then token 3
    # (c = -0.3) gives +0.1 >= 0.09: stop. Token 1 (smallest lowering) and 2, 4 are kept.
    keep, m = _run(0.2, target=0.3, band=0.1, gain=0.9, step_scale=5.0, max_share=1.0)
    assert keep.tolist() == [[False, True, True, False, True]]
    assert m["entropy_target/direction"] == 1 and m["entropy_target/saturated"] == 0
    assert m["entropy_target/frac_clipped"] == pytest.approx(2 / 5)
    assert m["entropy_target/forecast_grpo"] == pytest.approx(-0.6)
    assert m["entropy_target/forecast"] == pytest.approx(0.1)
    assert m["entropy_target/forecast_unit"] == pytest.approx(0.02)
    assert m["entropy_target/required_min"] == pytest.approx(0.09)
    assert m["entropy_target/target"] == pytest.approx(0.3)
    assert m["entropy_target/error"] == pytest.approx(-0.1)


def test_the_share_cap_bounds_the_drops_and_says_so() -> None:
    # Same batch, max_share 0.2 -> at most floor(0.2 · 5) = 1 token: only token 0 goes; the
    # forecast -0.2 stays short of 0.09.
    keep, m = _run(0.2, target=0.3, band=0.1, gain=0.9, step_scale=5.0, max_share=0.2)
    assert keep.tolist() == [[False, True, True, True, True]]
    assert m["entropy_target/saturated"] == 1
    assert m["entropy_target/forecast"] == pytest.approx(-0.2)
    keep, _ = _run(0.2, target=0.3, band=0.1, gain=0.9, step_scale=5.0, max_share=0.0)
    assert keep.all()


def test_high_entropy_drops_the_raising_tokens_instead() -> None:
    # c = [0.1, 0.5, -0.2, 0.3] (A = 1, d = -c): Σc = 0.7, n = 4, κ = 1 -> F(all) = 0.175.
    # H = 0.5 > U = 0.3 (band 0): F must fall to 0.1 · (0.3 - 0.5) = -0.02. Drop token 1
    # (0.5): F = 0.05; then token 3 (0.3): F = -0.025 <= -0.02, stop. Token 0 and the lowering
    # token 2 stay.
    adv = torch.ones(1, 4, dtype=torch.float64)
    dev = rows([[-0.1, -0.5, 0.2, -0.3]], torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    keep, m = _run(0.5, adv, dev, mask, target=0.3, band=0.0, gain=0.1, step_scale=1, max_share=1)
    assert keep.tolist() == [[True, False, True, False]]
    assert m["entropy_target/direction"] == -1 and m["entropy_target/saturated"] == 0
    assert m["entropy_target/forecast"] == pytest.approx(-0.025)


def test_inside_the_band_only_leaving_it_is_prevented() -> None:
    # H = target = 0.3, band 0.1: the forecast may lie in [-0.03, 0.03].
    keep, m = _run(0.3, target=0.3, band=0.1, step_scale=0.05)  # F(all) = -0.006: inside
    assert keep.all() and m["entropy_target/direction"] == 0
    # κ = 5: F(all) = -0.6 < -0.03 -> drop lowering tokens: token 0 (F = -0.2), token 3
    # (F = +0.1 >= -0.03). Whole tokens: the forecast overshoots, and that is not "saturated".
    keep, m = _run(0.3, target=0.3, band=0.1, step_scale=5.0, max_share=1.0)
    assert keep.tolist() == [[False, True, True, False, True]]
    assert m["entropy_target/direction"] == 1 and m["entropy_target/saturated"] == 0


def test_an_offset_shifts_both_bounds_on_the_forecast() -> None:
    # As above, H = target = 0.3, band 0.1, κ = 0.05: F(all) = -0.006, inside [-0.03, 0.03].
    # offset 0.03 -> [0, 0.06]: F must rise by 0.006, i.e. Σc by 0.006 · 5 / 0.05 = 0.6. Drop
    # token 0 (Σc -0.2), then token 3 (Σc +0.1 >= 0): F = 0.05 · 0.1 / 5 = 0.001.
    keep, m = _run(0.3, target=0.3, band=0.1, step_scale=0.05, max_share=1.0, offset=0.03)
    assert keep.tolist() == [[False, True, True, False, True]]
    assert m["entropy_target/required_min"] == pytest.approx(0.0)
    assert m["entropy_target/required_max"] == pytest.approx(0.06)
    assert m["entropy_target/forecast"] == pytest.approx(0.001)
    # Below the band (H = 0.2, L = 0.27): gain 0.9 · 0.1 = 0.09 plus offset -0.05 -> F >= 0.04.
    # κ = 5: dropping token 0 gives -0.2, token 3 then +0.1 >= 0.04.
    _, m = _run(0.2, target=0.3, band=0.1, gain=0.9, step_scale=5.0, max_share=1.0, offset=-0.05)
    assert m["entropy_target/required_min"] == pytest.approx(0.04)
    assert m["entropy_target/forecast"] == pytest.approx(0.1)


def test_integral_action_by_hand() -> None:
    # ki 0.1, limit 0.03 nats -> the sum stays within ±0.3. Errors 0.1, 0.1, 0.05, 0.1, -0.15:
    # sums 0.1, 0.2, 0.25, 0.35 -> 0.3 (clamped), 0.15 (not 0.2: no windup to unwind).
    integral, offsets, sums = 0.0, [], []
    for error in (0.1, 0.1, 0.05, 0.1, -0.15):
        offset, integral = integral_action(integral, error, ki=0.1, limit=0.03)
        offsets.append(offset)
        sums.append(integral)
    assert sums == pytest.approx([0.1, 0.2, 0.25, 0.3, 0.15])
    assert offsets == pytest.approx([0.01, 0.02, 0.025, 0.03, 0.015])
    assert integral_action(0.0, -1.0, ki=0.5, limit=0.02) == pytest.approx((-0.02, -0.04))
    assert integral_action(0.7, 0.2, ki=0.0, limit=0.03) == (0.0, 0.0)  # no integral action


def test_no_target_keeps_everything_and_a_given_entropy_replaces_the_batch_mean() -> None:
    keep, m = _run(0.2)
    assert keep.all() and m["entropy_target/frac_clipped"] == 0
    # The batch's H = 0.2 would be too low; a smoothed H = 0.3 given by the controller is not.
    keep, m = _run(0.2, target=0.3, entropy=0.3, step_scale=0.01)
    assert keep.all() and m["entropy_target/entropy"] == pytest.approx(0.3)


def test_padding_and_zero_advantage_tokens_are_never_dropped_nor_counted() -> None:
    mask = torch.tensor([[True, True, True, True, False]])
    dev = rows([[0.4, 0.1, 0.2, -0.3, PAD]], torch.float64)
    h = rows([[0.2, 0.2, 0.2, 0.2, PAD]], torch.float64)
    stats = stats_with((1, 5), s=dev, h=h, dtype=torch.float64)
    adv = rows([[1.0, 0.0, -1.0, -1.0, PAD]], torch.float64)
    keep, m = entropy_target(stats, adv, mask, target=0.3, step_scale=5.0, max_share=1.0)
    # c = [-0.4, 0, 0.2, -0.3] over n = 4: F(all) = -0.625; both lowering tokens go.
    assert keep.tolist() == [[False, True, True, False, False]]
    assert m["entropy_target/entropy"] == pytest.approx(0.2)
    assert m["entropy_target/forecast_grpo"] == pytest.approx(5 * -0.5 / 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": 0.0}, "target must be > 0"),
        ({"band": -0.1}, "band must be >= 0"),
        ({"gain": 0.0}, "gain must lie in"),
        ({"gain": 1.5}, "gain must lie in"),
        ({"max_share": 1.5}, "max_share must lie in"),
        ({"step_scale": 0.0}, "step_scale must be > 0"),
        ({"entropy": math.nan}, "entropy must be a finite number"),
        ({"offset": math.inf}, "offset must be a finite number"),
    ],
)
def test_bad_options_are_refused_with_their_name(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        _run(0.2, **options)
    with pytest.raises(ValueError, match=message):  # at config time, on an empty batch
        resolve_method("entropy_target", filter_options=options)


def test_target_schedules_at_given_steps() -> None:
    assert target_schedule(7, 0.25, steps=10) == 0.25  # constant: hold
    linear = [target_schedule(s, 0.3, steps=10, schedule="linear", final=0.2) for s in (0, 5, 15)]
    assert linear == pytest.approx([0.3, 0.25, 0.2])
    # rise_fall: 0.2 up to 0.4 at step 4, down to 0.1 at step 10, then 0.1.
    values = [
        target_schedule(s, 0.2, steps=10, schedule="rise_fall", peak=0.4, peak_step=4, final=0.1)
        for s in (0, 2, 4, 7, 10, 12)
    ]
    assert values == pytest.approx([0.2, 0.3, 0.4, 0.25, 0.1, 0.1])
    # default peak_step = steps // 2 and final = start
    assert target_schedule(10, 0.2, steps=10, schedule="rise_fall", peak=0.4) == pytest.approx(0.2)
    assert target_schedule(5, 0.2, steps=10, schedule="rise_fall", peak=0.4) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "cosine"}, "unknown 'cosine'"),
        ({"schedule": "linear"}, "needs target_final"),
        ({"schedule": "rise_fall"}, "needs target_peak"),
        ({"schedule": "rise_fall", "peak": 0.4, "peak_step": 10}, "peak_step must lie"),
        ({"steps": 0}, "steps must be an integer >= 1"),
    ],
)
def test_bad_schedules_are_refused(kwargs, message) -> None:
    kwargs = {"steps": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        target_schedule(0, 0.3, **kwargs)


def test_adaptive_entropy_coefficient_sequence_by_hand() -> None:
    # target 0.2, δ 0.005, from 0: H = 0.3 (above: 0 - δ clamped to 0), 0.1 (+δ), 0.15 (+δ),
    # 0.25 (-δ), 0.2 (at the target counts as below: +δ).
    coef, sequence = 0.0, []
    for entropy in (0.3, 0.1, 0.15, 0.25, 0.2):
        coef = adaptive_entropy_coef(coef, entropy)
        sequence.append(coef)
    assert sequence == pytest.approx([0.0, 0.005, 0.01, 0.005, 0.01])
    assert adaptive_entropy_coef(0.998, 0.1, delta=0.005) == 1.0  # clamped at coef_max
    assert adaptive_entropy_coef(0.05, 0.3, coef_min=0.04, delta=0.02) == 0.04


def test_pi_rule_by_hand() -> None:
    # α_t = kp·e_t + ki·Σ_{s<t} e_s, clipped to [-1, 1]; kp 1, ki 0.01.
    integral, alphas = 0.0, []
    for error in (0.05, -0.02, 0.1):
        alpha, integral = pi_control(error, integral)
        alphas.append(alpha)
    assert alphas == pytest.approx([0.05, -0.02 + 0.01 * 0.05, 0.1 + 0.01 * 0.03])
    assert integral == pytest.approx(0.13)
    assert pi_control(2.0, 0.0) == (1.0, 2.0)
    assert pi_control(-3.0, -50.0, ki=0.1) == (-1.0, -53.0)


def test_entropic_loss_gradient_by_hand() -> None:
    # p = [0.97, 0.5, 0.99], A = [1, 1, -1], r = 1, token-mean over 3 tokens: the PPO part gives
    # d loss / d log p_t = -A_t / 3. EntroPIC's term α·mean_{p > 0.95}(-r·|A|) adds -α|A_t| / 2
    # on the two high-probability tokens 0 and 2. α = 0.5.
    logp = torch.log(torch.tensor([[0.97, 0.5, 0.99]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    zeros = torch.zeros(1, 3, dtype=torch.float64)
    inputs = PolicyLossInputs(logp, logp.detach(), adv, mask, TokenStats(logp, zeros, zeros, zeros))
    out = compute_policy_loss(resolve_method("entropic", entropic_alpha=0.5), inputs)
    (grad,) = torch.autograd.grad(out.loss, logp)
    expected = [-1 / 3 - 0.25, -1 / 3, 1 / 3 - 0.25]
    torch.testing.assert_close(grad[0], torch.tensor(expected, dtype=torch.float64))
    assert out.metrics["entropic/frac_high_prob"] == pytest.approx(2 / 3)
    # α = 0 is plain PPO.
    plain = compute_policy_loss(resolve_method("entropic"), inputs)
    torch.testing.assert_close(plain.loss, compute_policy_loss(resolve_method("grpo"), inputs).loss)


@pytest.mark.parametrize("options", [{"entropic_alpha": 1.5}, {"entropic_prob_threshold": 1.0}])
def test_entropic_options_are_checked(options) -> None:
    with pytest.raises(ValueError, match="entropic_"):
        resolve_method("entropic", **options)
