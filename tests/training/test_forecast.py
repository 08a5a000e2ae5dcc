"""The trainer's forecast: it leaves training unchanged, its token groups explain it, it tracks the
measured entropy change, and its probe set stays fixed across a resume."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.forecast import PROBE_FILE, load_probe
from entropy_dynamics.training.metrics import read_metrics
from entropy_dynamics.training.trainer import Trainer

EMBEDDED = [  # the embedded model earns rewards, so GRPO has gradients without a bonus
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "eval.every=0",
    "tensorboard=false",
    "forecast.probe_prompts=6",
]
FORECAST = ["forecast.enabled=true", "forecast.second_order=true", "forecast.groups=true"]


def _run(
    tmp_path, name: str, extra: list[str], resume: bool = False, fused_loss: bool = True
) -> list[dict]:
    config = load_config(None, [f"output_dir={tmp_path}", f"name={name}", *EMBEDDED, *extra])
    trainer = Trainer(config, config.run_dir, resume=resume)
    trainer.fused_loss = trainer.fused_loss and fused_loss
    trainer.train()
    return read_metrics(config.run_dir / "metrics.jsonl")


def test_forecast_leaves_the_training_unchanged(tmp_path) -> None:
    # The forecast differentiates the loss through log p_k, so under a forecast the trainer uses
    # the unfused loss (equal to the fused one to float32 rounding: test_trainer); bitwise
    # equality is asked of the same loss path; a forecast runs every row (the rows without a
    # gradient too, which the plain run would leave out: algorithm.skip_idle_rows).
    plain = _run(tmp_path, "plain", ["steps=3", "algorithm.skip_idle_rows=false"], fused_loss=False)
    forecast = _run(tmp_path, "forecast", ["steps=3", *FORECAST])
    for a, b in zip(plain, forecast, strict=True):
        shared = {k for k in a if not k.startswith("perf/")}
        assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
    assert "dynamics/forecast" in forecast[0] and "dynamics/forecast" not in plain[0]
    model = "checkpoints/step_000003/model/model.safetensors"
    assert (tmp_path / "plain" / model).read_bytes() == (tmp_path / "forecast" / model).read_bytes()


def test_token_groups_explain_the_whole_first_step(tmp_path) -> None:
    # Adam's first step has no momentum, no weight decay and GRPO no bonus: the four groups'
    # shares must add up to the whole forecast, for the batch and for the probe set.
    row = _run(tmp_path, "groups", ["steps=1", "forecast.enabled=true", "forecast.groups=true"])[0]
    for name in ("dynamics/forecast", "dynamics/forecast_probe"):
        groups = [row[f"{name}_group/{q}"] for q in ("pos_adv_pos_dev", "pos_adv_neg_dev")]
        groups += [row[f"{name}_group/{q}"] for q in ("neg_adv_pos_dev", "neg_adv_neg_dev")]
        assert abs(row[f"{name}_group/other"]) <= 1e-4 * sum(abs(g) for g in groups)
        assert sum(groups) == pytest.approx(row[name], rel=1e-4)
        assert any(g > 0 for g in groups) and any(g < 0 for g in groups)  # groups pull apart


def test_forecast_tracks_the_measured_change_at_a_small_step(tmp_path) -> None:
    rows = _run(tmp_path, "small", ["steps=4", "optim.lr=1e-5", *FORECAST])
    errors = {"first": [], "second": []}
    first_order_steps = probe_steps = 0
    for row in rows:
        actual = row["dynamics/delta_h_actual"]
        assert row["dynamics/forecast_error"] == pytest.approx(row["dynamics/forecast"] - actual)
        # Where the step is in the first-order regime — the logit-space first-order change, from
        # the measured Δz, is within 10 % of the actual one — the parameter-space forecast, made
        # before the step, must be too. (A batch whose first-order terms cancel can have a change
        # set by its second-order terms; no first-order forecast can follow it.)
        if abs(row["dynamics/delta_h_first_order"] - actual) <= 0.1 * abs(actual):
            first_order_steps += 1
            assert abs(row["dynamics/forecast_error"]) <= 0.1 * abs(actual), row
        # The probe set has no measured Δz to tell its regime; its second-order forecast must
        # track its change, and where the second-order term is small, the first-order one too.
        probe_actual = row["dynamics/delta_h_probe_actual"]
        second = row["dynamics/forecast_probe_second_order"]
        assert abs(second - probe_actual) <= 0.1 * abs(probe_actual), row
        if abs(second - row["dynamics/forecast_probe"]) <= 0.1 * abs(probe_actual):
            probe_steps += 1
            assert abs(row["dynamics/forecast_probe_error"]) <= 0.2 * abs(probe_actual), row
        errors["first"].append(abs(row["dynamics/forecast_error"]))
        errors["second"].append(abs(row["dynamics/forecast_second_order_error"]))
    assert first_order_steps >= 2, first_order_steps  # the checks above are not vacuous
    assert probe_steps >= 2, probe_steps
    assert sum(errors["second"]) < sum(errors["first"])


def test_the_probe_set_is_kept_with_the_run_and_reused_on_resume(tmp_path) -> None:
    full = _run(tmp_path, "full", ["steps=3", "forecast.enabled=true", "checkpoint_every=2"])
    _run(tmp_path, "part", ["steps=2", "forecast.enabled=true", "checkpoint_every=2"])
    probe_file = tmp_path / "part" / PROBE_FILE
    saved = probe_file.read_bytes()
    resumed = _run(tmp_path, "part", ["steps=3", "forecast.enabled=true"], resume=True)
    assert probe_file.read_bytes() == saved
    assert resumed[-1]["dynamics/forecast_probe"] == full[-1]["dynamics/forecast_probe"]
    probe = load_probe(probe_file)
    assert probe.response_ids.shape[0] == 6 and probe.response_mask.any()
    assert torch.equal(probe.response_ids, load_probe(tmp_path / "full" / PROBE_FILE).response_ids)


def test_forecast_needs_the_dynamics_measurement() -> None:
    with pytest.raises(ConfigError, match=r"forecast\.enabled needs dynamics"):
        load_config(None, ["forecast.enabled=true", "dynamics=false"])


def test_a_file_that_is_not_a_probe_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a probe file"):
        load_probe(tmp_path / "bad.safetensors")
