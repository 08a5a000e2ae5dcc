"""Controllers of the closed-loop methods (control/controllers.py): the per-step configs they
hand the trainer, their state across a checkpoint, config-time validation, and short runs of the
trainer with each method on the embedded default."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.methods import build_controller, resolve_method
from entropy_dynamics.stats import TokenStats
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.trainer import Trainer


def _batch(entropy: float) -> tuple[TokenStats, torch.Tensor]:
    """Two valid tokens of entropy ``entropy`` and a padded one holding NaN."""
    h = torch.tensor([[entropy, entropy, math.nan]])
    zero = torch.zeros(1, 3)
    return TokenStats(zero, h, zero, zero), torch.tensor([[True, True, False]])


def _controller(method: str, steps: int = 10, loss: dict | None = None, **control):
    return build_controller(method, control, resolve_method(method, **(loss or {})), steps)


def _run(controller, entropies):
    """The loss configs and metrics of one step per entropy, from step 0."""
    return [controller.begin(step, *_batch(h)) for step, h in enumerate(entropies)]


def test_entropy_target_holds_the_initial_entropy_by_default() -> None:
    configs = [c.filter_options for c, _ in _run(_controller("entropy_target"), [0.25, 0.3, 0.1])]
    assert [o["target"] for o in configs] == pytest.approx([0.25, 0.25, 0.25])
    assert all(o["step_scale"] == 0.5 and "entropy" not in o for o in configs)


def test_entropy_target_follows_its_schedule_and_smooths_the_entropy() -> None:
    controller = _controller(
        "entropy_target", target=0.3, schedule="linear", target_final=0.2, smoothing=0.5
    )
    options = [c.filter_options for c, _ in _run(controller, [0.2, 0.4, 0.4, 0.4, 0.4, 0.4])]
    # linear 0.3 -> 0.2 over the run's 10 steps: step 5 is half way
    assert options[5]["target"] == pytest.approx(0.25)
    # exponential average, weight 0.5 on the past: 0.2, 0.3, 0.35
    assert [o["entropy"] for o in options[:3]] == pytest.approx([0.2, 0.3, 0.35])
    rise_fall = _controller(
        "entropy_target", target=0.2, schedule="rise_fall", target_peak=0.4, schedule_steps=4
    )
    targets = [c.filter_options["target"] for c, _ in _run(rise_fall, [0.3] * 6)]
    assert targets == pytest.approx([0.2, 0.3, 0.4, 0.3, 0.2, 0.2])


def test_entropy_target_fits_its_forecast_scale_to_the_measured_change() -> None:
    # Slope through the origin of actual ΔH on the unit forecast, past weighted by 0.9:
    # (a, u) = (-0.002, -0.004) -> 8e-6 / 16e-6 = 0.5; then (0.003, 0.002):
    # (0.9·8e-6 + 6e-6) / (0.9·16e-6 + 4e-6) = 13.2 / 18.4.
    controller = _controller("entropy_target", loss={"filter_options": {"step_scale": 0.2}})
    controller.end({"dynamics/delta_h_actual": -0.002, "entropy_target/forecast_unit": -0.004})
    assert controller.state["scale"] == pytest.approx(0.5)
    controller.end({"dynamics/delta_h_actual": 0.003, "entropy_target/forecast_unit": 0.002})
    assert controller.state["scale"] == pytest.approx(13.2 / 18.4)
    config, metrics = controller.begin(0, *_batch(0.3))
    assert config.filter_options["step_scale"] == pytest.approx(13.2 / 18.4)
    assert metrics["entropy_target/step_scale"] == pytest.approx(13.2 / 18.4)
    # kept within [κ₀ / 10, 10 κ₀] of the configured 0.2; no dynamics: no change
    controller.end({"dynamics/delta_h_actual": 10.0, "entropy_target/forecast_unit": 1e-3})
    assert controller.state["scale"] == pytest.approx(2.0)
    controller.end({"entropy_target/forecast_unit": 1.0})
    assert controller.state["scale"] == pytest.approx(2.0)


def test_entropy_target_integral_term_sums_the_errors_within_its_clamp() -> None:
    # target 0.3, ki 0.1, integral_limit 0.1 -> |offset| <= 0.03 nats, |Σ e| <= 0.3.
    # e = target - H: 0, 0.1, 0.1, 0.05, 0.1, -0.15 -> Σ 0, 0.1, 0.2, 0.25, 0.3 (0.35 clamped),
    # 0.15.
    controller = _controller("entropy_target", target=0.3, ki=0.1)
    steps = _run(controller, [0.3, 0.2, 0.2, 0.25, 0.2, 0.45])
    offsets = [c.filter_options["offset"] for c, _ in steps]
    assert offsets == pytest.approx([0.0, 0.01, 0.02, 0.025, 0.03, 0.015], abs=1e-7)  # float32 H
    assert [m["entropy_target/offset"].item() for _, m in steps] == pytest.approx(offsets, abs=1e-7)
    assert controller.state["integral"] == pytest.approx(0.15, abs=1e-6)
    # the default (ki 0) leaves the filter's offset unset: the proportional rule alone
    assert all(
        "offset" not in c.filter_options for c, _ in _run(_controller("entropy_target"), [0.2])
    )
    # with smoothing, the error is the smoothed entropy's: 0.2, then 0.5·0.2 + 0.5·0.4 = 0.3
    smoothed = _controller("entropy_target", target=0.3, ki=0.1, smoothing=0.5)
    offsets = [c.filter_options["offset"] for c, _ in _run(smoothed, [0.2, 0.4])]
    assert offsets == pytest.approx([0.01, 0.01], abs=1e-7)


def test_adaptive_entropy_applies_last_steps_coefficient_only_below_target() -> None:
    # TRL's order: step t applies the coefficient of the end of step t-1, gated by the entropy
    # of step t-1 (none at step 0), then updates it with step t's entropy.
    # H: 0.3, 0.1, 0.15, 0.25, 0.19 -> coefficient after each step: 0, .005, .01, .005, .01
    # applied: 0 (first), 0 (0.3 > 0.2), .005 (0.1 <= 0.2), .01 (0.15), 0 (0.25 > 0.2).
    steps = _run(_controller("adaptive_entropy"), [0.3, 0.1, 0.15, 0.25, 0.19])
    assert [c.entropy_coef for c, _ in steps] == pytest.approx([0, 0, 0.005, 0.01, 0])
    assert [m["adaptive_entropy/coef_next"].item() for _, m in steps] == pytest.approx(
        [0, 0.005, 0.01, 0.005, 0.01]
    )
    # the initial coefficient is the loss's entropy_coef; the clamp is coef_max
    steps = _run(
        _controller("adaptive_entropy", loss={"entropy_coef": 0.05}, coef_max=0.052), [0.1] * 3
    )
    assert [c.entropy_coef for c, _ in steps] == pytest.approx([0, 0.052, 0.052])


def test_entropic_sets_alpha_by_the_pi_rule() -> None:
    # target 0.2, kp 1, ki 0.01: errors 0.05, -0.02, 0.1 -> α = 0.05, -0.02 + 0.0005,
    # 0.1 + 0.0003 (the integral holds the errors of the previous steps).
    steps = _run(_controller("entropic", target=0.2), [0.25, 0.18, 0.3])
    alphas = [c.entropic_alpha for c, _ in steps]
    assert alphas == pytest.approx([0.05, -0.0195, 0.1003])
    assert steps[-1][1]["entropic/integral"] == pytest.approx(0.13)
    # no target: the first step's entropy, so α starts at 0
    assert _run(_controller("entropic"), [0.4])[0][0].entropic_alpha == 0.0


@pytest.mark.parametrize(
    ("method", "control"),
    [
        ("entropy_target", {"smoothing": 0.5}),
        ("entropy_target", {"ki": 0.1}),
        ("adaptive_entropy", {}),
        ("entropic", {}),
    ],
)
def test_state_survives_a_checkpoint(tmp_path, method, control) -> None:
    # Two controllers see the same three steps; one goes through torch.save / load (as
    # checkpoint.py writes it) into a fresh controller; the next steps must agree exactly.
    entropies = [0.3, 0.1, 0.25, 0.15, 0.22, 0.18]
    measured = {"dynamics/delta_h_actual": -0.001, "entropy_target/forecast_unit": -0.003}
    straight, saved = _controller(method, **control), _controller(method, **control)
    for controller in (straight, saved):
        _run(controller, entropies[:3])
        controller.end(measured)
    torch.save(saved.state_dict(), tmp_path / "state.pt")
    resumed = _controller(method, **control)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert resumed.state_dict() == straight.state_dict() != _controller(method).state_dict()
    for step, h in enumerate(entropies[3:], start=3):
        (a, ma), (b, mb) = resumed.begin(step, *_batch(h)), straight.begin(step, *_batch(h))
        assert a == b and ma.keys() == mb.keys()
        assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.method=entropic", "algorithm.control={kd: 1}"], "no option 'kd'"),
        (["algorithm.control={target: 0.3}"], "'grpo' has no controller options"),
        (
            ["algorithm.method=entropy_target", "algorithm.loss={filter_options: {target: 1}}"],
            "set algorithm.control.target",
        ),
        (
            ["algorithm.method=entropy_target", "algorithm.control={schedule: linear}"],
            "needs target_final",
        ),
        (
            ["algorithm.method=entropy_target", "algorithm.control={target: -1}"],
            "target must be a number of nats > 0",
        ),
        (
            ["algorithm.method=adaptive_entropy", "algorithm.control={coef_min: 2}"],
            "coef_min <= coef_max",
        ),
        (["algorithm.method=entropic", "algorithm.control={ki: -1}"], "kp and ki must be >= 0"),
        (
            ["algorithm.method=entropy_target", "algorithm.control={ki: -1}"],
            "ki and integral_limit must be >= 0",
        ),
        (
            ["algorithm.method=entropy_target", "algorithm.loss={filter_options: {offset: 1}}"],
            "sets filter_options.offset",
        ),
    ],
)
def test_bad_control_is_refused_at_config_time(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


FAST = ["steps=3", "eval.every=0", "tensorboard=false", "checkpoint_every=3"]


@pytest.mark.parametrize(
    ("method", "control"),
    [
        ("entropy_target", "{target: 0.5}"),  # above the embedded model's ~0.29: it drops
        ("adaptive_entropy", "{target: 0.5}"),
        ("entropic", "{target: 0.2}"),
    ],
)
def test_three_steps_on_the_embedded_default(tmp_path, method, control) -> None:
    overrides = [f"algorithm.method={method}", f"algorithm.control={control}"]
    config = load_config(None, [f"output_dir={tmp_path}", *FAST, *overrides])
    Trainer(config, config.run_dir).train()
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    if method == "entropy_target":
        assert all(r["entropy_target/target"] == 0.5 for r in rows)
        assert all(r["entropy_target/direction"] == 1 for r in rows)  # entropy below the band
        dropped = [r["entropy_target/frac_clipped"] for r in rows]
        # the default share cap: at most floor(0.1 n) of n tokens; a share of exactly 0.1 is
        # logged in float32, 0.10000000149
        assert all(0 < d <= 0.1 + 1e-7 for d in dropped)
        assert [1 - r["actor/frac_kept"] for r in rows] == pytest.approx(dropped)
    elif method == "adaptive_entropy":
        assert [r["adaptive_entropy/coef"] for r in rows] == pytest.approx([0, 0.005, 0.01])
    else:
        errors = [r["entropic/error"] for r in rows]
        assert errors == pytest.approx([r["entropy/mean"] - 0.2 for r in rows])
        assert rows[0]["entropic/alpha"] == pytest.approx(errors[0])  # kp = 1, no past errors


def test_resume_restores_the_controller_exactly(tmp_path) -> None:
    small = ["rollout.prompts_per_step=4", "eval.every=0", "tensorboard=false"]
    small += ["algorithm.method=entropy_target", "algorithm.control={smoothing: 0.5, ki: 0.1}"]
    common = [f"output_dir={tmp_path}", *small, "checkpoint_every=2"]
    full = load_config(None, [*common, "name=full", "steps=4"])
    Trainer(full, full.run_dir).train()
    part = load_config(None, [*common, "name=part", "steps=2"])
    Trainer(part, part.run_dir).train()
    more = load_config(None, [*common, "name=part", "steps=4"])
    Trainer(more, more.run_dir, resume=True).train()

    def controller_rows(run_dir):
        rows = read_metrics(run_dir / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k.startswith("entropy_target/")} for r in rows]

    resumed, straight = controller_rows(more.run_dir), controller_rows(full.run_dir)
    assert len(resumed) == 4 and resumed == straight
    assert resumed[3]["entropy_target/step_scale"] != 0.5  # the fitted scale was restored
    assert resumed[3]["entropy_target/offset"] != 0  # and the integral term
