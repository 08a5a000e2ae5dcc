"""A closed-loop method driven by an engine (``integrations/control_loop.py``): the same decisions
as our trainer's controller sequence, the monitor fed to ``end``, and the state through a JSON
file; no engine needed."""

from __future__ import annotations

import json

import pytest
import torch

from entropy_dynamics.integrations.control_loop import (
    STATE_FILE,
    EngineControl,
    check_engine_control,
)
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.methods import build_controller
from entropy_dynamics.stats import TokenStats

BASE = PolicyLossConfig(filter="entropy_target", filter_options={"gain": 1.0, "max_share": 0.3})
CONTROL = {"target": 1.5, "ki": 0.1}


def _batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    fields = [torch.randn(4, 6, generator=gen).abs() for _ in range(4)]
    stats = TokenStats(*fields)
    advantages = torch.randn(4, 1, generator=gen).expand(4, 6).contiguous()  # (B, T)
    mask = torch.arange(6) < torch.tensor([[6], [4], [5], [2]])  # (B, T)
    return stats, advantages, mask


def test_decisions_equal_the_trainers_sequence_and_the_monitor_reaches_end(tmp_path):
    engine = EngineControl("entropy_target", CONTROL, BASE, steps=3, monitor_every=2)
    reference = build_controller("entropy_target", CONTROL, BASE, 3)
    for step in range(3):
        stats, advantages, mask = _batch(step)
        config, keep, _ = engine.decide(step, stats, advantages, mask)
        want_config, control_metrics = reference.begin(step, stats, mask)
        want_keep, filter_metrics = select_tokens(want_config, stats, advantages, mask)
        assert config == want_config and torch.equal(keep, want_keep)
        assert engine.pending_monitor == (step == 1)  # every 2nd batch: steps 1, 3, ...
        after = stats.entropy + 0.1 * mask  # every valid token's H rose by 0.1
        monitor = engine.finish(after if engine.pending_monitor else None)
        if step == 1:
            assert float(monitor["dynamics/delta_h_actual"]) == pytest.approx(0.1)
        reference.end({**control_metrics, **filter_metrics, **monitor})
        assert engine.controller.state == reference.state
    assert not engine.pending and engine.finish() == {}
    assert engine.controller.state["den"] > 0  # the fit of κ saw the measurement

    path = engine.save(tmp_path)
    assert path.name == STATE_FILE and json.loads(path.read_text())["method"] == "entropy_target"
    restored = EngineControl("entropy_target", CONTROL, BASE, steps=3)
    assert restored.load(tmp_path) and restored.controller.state == engine.controller.state
    assert not EngineControl("entropy_target", CONTROL, BASE, 3).load(tmp_path / "elsewhere")
    other = EngineControl("adaptive_entropy", {}, PolicyLossConfig(), steps=3)
    with pytest.raises(ValueError, match="resume with the method"):
        other.load(tmp_path)


def test_adaptive_entropy_state_survives_json_with_its_infinity(tmp_path):
    engine = EngineControl("adaptive_entropy", {"target": 2.0}, PolicyLossConfig(), steps=2)
    assert engine.controller.state["last_entropy"] == float("inf")
    engine.save(tmp_path)
    restored = EngineControl("adaptive_entropy", {"target": 2.0}, PolicyLossConfig(), steps=2)
    assert restored.load(tmp_path) and restored.controller.state == engine.controller.state
    stats, advantages, mask = _batch(0)
    config, _, _ = engine.decide(0, stats, advantages, mask)
    assert config.entropy_coef == 0.0 and engine.controller.state["coef"] == 0.005


def test_option_errors_name_where_they_were_set():
    with pytest.raises(ValueError, match=r"\+entropy_dynamics.control: .*no option 'kp'"):
        check_engine_control("entropy_target", {"kp": 1}, BASE, 10, "+entropy_dynamics.control")
    with pytest.raises(ValueError, match="monitor_every"):
        EngineControl("entropy_target", {}, BASE, 3, monitor_every=-1)


def test_without_a_target_the_first_batchs_entropy_is_held():
    engine = EngineControl("entropy_target", {"ki": 0.1}, BASE, steps=2)
    first, advantages, mask = _batch(0)
    config, _, _ = engine.decide(0, first, advantages, mask)
    held = float(first.entropy[mask].double().mean())
    assert config.filter_options["target"] == pytest.approx(held)
    engine.finish()
    config, _, _ = engine.decide(1, *_batch(1))
    assert config.filter_options["target"] == pytest.approx(held)
