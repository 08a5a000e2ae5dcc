"""The closed-loop rules (control/rules.py): the target schedules, the integral term of
entropy_target, and the peers' update rules against hand computations."""

from __future__ import annotations

import pytest

from entropy_dynamics.control import (
    adaptive_entropy_coef,
    integral_action,
    pi_control,
    target_schedule,
)


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
