"""The TRL plug-in's options (``integrations/trl/config.py``): the filter on top of ``GRPOConfig``,
checked when the config is built, and TRL's ``loss_type`` as one of our aggregation modes."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from entropy_dynamics.integrations.trl import EntropyGRPOConfig, trl_aggregation
from entropy_dynamics.losses import PolicyLossConfig


def test_bad_configurations_are_refused(tmp_path):
    with pytest.raises(ValueError, match="clip_b"):
        EntropyGRPOConfig(output_dir=str(tmp_path), entropy_filter="clip_z", bf16=False)
    with pytest.raises(ValueError, match="option"):
        EntropyGRPOConfig(
            output_dir=str(tmp_path),
            entropy_filter="clip_b",
            entropy_filter_options={"sigma": 1.0},
            bf16=False,
        )
    with pytest.raises(ValueError, match="JSON"):
        EntropyGRPOConfig(output_dir=str(tmp_path), entropy_filter_options="{mu: 2}", bf16=False)


def test_filter_options_from_a_json_string_are_the_filter_config(tmp_path):
    args = EntropyGRPOConfig(
        output_dir=str(tmp_path),
        entropy_filter="clip_b",
        entropy_filter_options='{"mu": 2.5}',
        bf16=False,
    )
    assert args.entropy_filter_options == {"mu": 2.5}
    assert args.filter_config() == PolicyLossConfig(filter="clip_b", filter_options={"mu": 2.5})


def test_loss_types_without_an_aggregation_mode_are_named() -> None:
    with pytest.raises(ValueError, match="sapo"):
        trl_aggregation("sapo", 4, 8)
    assert trl_aggregation("bnpo", 4, 8) == ("token-mean", None)
    assert trl_aggregation("dr_grpo", 4, 8) == ("seq-mean-token-sum-norm", 32.0)


def test_controller_options_are_checked_when_the_config_is_built(tmp_path):
    def config(**options):
        return EntropyGRPOConfig(output_dir=str(tmp_path), bf16=False, **options)

    target = {"entropy_filter": "entropy_target"}
    with pytest.raises(ValueError, match=r"entropy_control: .*target_final"):
        config(**target, entropy_control={"target": 0.3, "schedule": "linear"})
    with pytest.raises(ValueError, match=r"entropy_control: entropy_target has no option .tgt."):
        config(**target, entropy_control='{"tgt": 0.3}')
    with pytest.raises(ValueError, match=r"set entropy_control\.target"):
        config(**target, entropy_filter_options={"target": 0.3})  # the controller's to set
    with pytest.raises(ValueError, match="entropy_filter='entropy_target'"):
        config(entropy_filter="clip_b", entropy_control={"target": 0.3})
    with pytest.raises(ValueError, match="monitor_every"):
        config(entropy_dynamics_monitor_every=-1)
    rise_fall = {"target": 0.3, "schedule": "rise_fall", "target_peak": 0.4}
    assert config(**target, entropy_control=rise_fall).generation_batches() is None  # fits any
    with pytest.raises(ValueError, match="peak_step must lie strictly between 0 and 10"):
        config(**target, max_steps=10, entropy_control={**rise_fall, "peak_step": 50})
    args = config(**target, entropy_control='{"target": 0.3, "ki": 0.1}')
    assert args.entropy_control == {"target": 0.3, "ki": 0.1}
    assert args.control_method() == "entropy_target"
    assert config(entropy_filter="clip_b").control_method() is None
