"""The one-step check (``study/one_step.py``): one small SGD step of the GRPO loss on a copy of the
model, its actual entropy change against an independent float64 step, the first-order and
Theorem 3.3 predictions, and the parameter-space forecast taken before the step."""

from __future__ import annotations

import copy

import pytest
import torch
from analysis_helpers import entropy_by_hand, reference_logits

from entropy_dynamics import theory
from entropy_dynamics.study.one_step import DEFAULT_LR, _position_changes, one_step_check
from entropy_dynamics.training.teacher_forcing import teacher_forcing_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_step_check_leaves_the_model_alone(tiny_lm, rollout) -> None:
    model, _ = tiny_lm
    before, training = _state(model), model.training
    result = one_step_check(model, rollout, 1.0, lr=0.5)
    assert result.overall["actual"] != 0.0  # the copy did move
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training == training


def test_one_step_check_against_an_independent_sgd_step(tiny_lm, rollout) -> None:
    # Reference: a float64 copy, one SGD step on the token mean of -A log p_k computed from the
    # full logits by log_softmax, entropies by hand before and after.
    model, _ = tiny_lm
    mask = rollout.response_mask
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    lr = 0.05
    reference = copy.deepcopy(model).double().eval()
    logits0 = reference_logits(reference, rollout)
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr)
    log_p = torch.log_softmax(reference(**teacher_forcing_inputs(rollout)).logits, -1)
    log_p_k = log_p[:, rollout.prompt_length - 1 : -1].gather(
        -1, rollout.response_ids.unsqueeze(-1)
    )[..., 0]
    loss = -(advantages[:, None] * log_p_k)[mask].sum() / mask.sum()
    loss.backward()
    optimizer.step()
    delta_h = (
        entropy_by_hand(reference_logits(reference, rollout))[1] - entropy_by_hand(logits0)[1]
    )

    result = one_step_check(
        model, rollout, advantages, lr=lr, dtype=torch.float64, rows_per_chunk=4
    )
    assert torch.allclose(result.token_actual, delta_h[mask], rtol=1e-7, atol=1e-12)
    assert result.overall["actual"] == pytest.approx(delta_h[mask].mean().item(), rel=1e-7)
    per_sequence = (delta_h * mask).sum(-1) / mask.sum(-1)
    assert torch.allclose(result.actual, per_sequence, rtol=1e-7, atol=1e-12)
    assert result.num_tokens.tolist() == mask.sum(-1).tolist()


def test_first_order_prediction_at_a_small_step(tiny_lm, rollout) -> None:
    model, _ = tiny_lm
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    # the default step, float32 copy; near maximal entropy (random weights) the second-order
    # term takes over early: r = 0.98 at lr 1e-2, relative error 0.68 (measured)
    result = one_step_check(model, rollout, advantages)
    assert result.lr == DEFAULT_LR == 1e-4
    assert result.r_first_order >= 0.99
    assert result.first_order_rel_error < 0.02
    assert result.overall["first_order"] == pytest.approx(result.overall["actual"], rel=0.02)
    summary = result.to_dict()
    assert summary["pearson_r"]["first_order_vs_actual"] == pytest.approx(result.r_first_order)
    assert len(summary["per_sequence"]) == 6
    with pytest.raises(ValueError, match="advantages"):
        one_step_check(model, rollout, torch.ones(5))
    with pytest.raises(ValueError, match="lr"):
        one_step_check(model, rollout, 1.0, lr=0.0)


def test_theorem_3_3_fit_recovers_an_exact_grpo_logit_step() -> None:
    # If the logits move exactly by α A (e_k - p) / T, the fitted step is α and the prediction
    # is theory.grpo_entropy_change (logits are their own features here).
    gen = torch.Generator().manual_seed(0)
    z0 = 2.0 * torch.randn(10, 17, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 17, (10,), generator=gen)
    coef = torch.randn(10, generator=gen, dtype=torch.float64)
    alpha, temperature = 3e-3, 0.7
    z1 = z0 + theory.grpo_logit_update(z0, tokens, coef, alpha, temperature)
    actual, first, thm33, fitted = _position_changes(
        lambda z: z, lambda z: z, z0, z1, tokens, coef, temperature
    )
    assert fitted == pytest.approx(alpha, rel=1e-10)
    expected = theory.grpo_entropy_change(z0, tokens, coef, alpha, temperature)
    assert torch.allclose(thm33, expected, rtol=1e-10, atol=0)
    assert torch.allclose(first, expected, rtol=1e-10, atol=0)  # Δz is exactly the GRPO step
    assert torch.allclose(actual, theory.entropy_change(z0, z1 - z0, temperature))


def test_forecast_view_before_the_step(tiny_lm, rollout) -> None:
    # float64 copy, small SGD step: the parameter-space forecast, taken before the step, must
    # match each sequence's measured ΔH to first order; its token groups explain all of it (plain
    # SGD has no momentum or decay) and its overall value is the token-weighted sequence mean.
    model, _ = tiny_lm
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    result = one_step_check(model, rollout, advantages, lr=1e-4, dtype=torch.float64)
    rel = (result.forecast - result.actual).norm() / result.actual.norm()
    assert rel < 0.01 and result.r_forecast > 0.999
    weights = result.num_tokens.double() / result.num_tokens.sum()
    assert result.forecast_overall == pytest.approx(float((weights * result.forecast).sum()))
    groups = result.forecast_groups
    assert abs(groups.pop("other")) < 1e-6 * abs(result.forecast_overall)
    assert sum(groups.values()) == pytest.approx(result.forecast_overall, rel=1e-6)
    summary = result.to_dict()
    assert summary["forecast"]["pearson_r_per_sequence"] == pytest.approx(result.r_forecast)
    assert "delta_h_forecast" in summary["per_sequence"][0]

    without = one_step_check(model, rollout, advantages, lr=1e-3, forecast=False)
    assert without.forecast is None and without.to_dict()["forecast"] is None
    assert torch.equal(without.actual, one_step_check(model, rollout, advantages, lr=1e-3).actual)
