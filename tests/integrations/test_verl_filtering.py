"""The keep-mask of a token filter on a verl batch (``integrations/verl/filtering.py``): the
settings checked where they are read, and ``decide_keep`` — our trainer's ``select_tokens`` on the
rollout policy's statistics — never keeping padding. Needs no verl."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.integrations.verl import STAT_KEYS, FilterSettings, decide_keep
from entropy_dynamics.losses import select_tokens
from entropy_dynamics.stats import TokenStats


def test_bad_settings_are_refused_with_what_to_change() -> None:
    # the loss-time fallback's own refusal: test_verl_policy_losses.py
    with pytest.raises(ValueError, match="registered filters"):
        FilterSettings("clip_z")
    with pytest.raises(ValueError, match="has no option 'tau'"):
        FilterSettings("clip_b", {"tau": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        FilterSettings.from_config({"entropy_dynamics": {"filter": "clip_b", "mu": 2.5}})
    assert FilterSettings.from_config({"entropy_dynamics": {"filter": "none"}}) is None
    assert FilterSettings.from_config({}) is None


def test_the_keep_mask_is_our_trainers_on_the_rollout_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = torch.arange(6) < torch.tensor([6, 4, 2, 5]).unsqueeze(1)  # (B, T) = (4, 6)
    batch = {k: torch.randn(4, 6, generator=gen) for k in ("old_log_probs", *STAT_KEYS)}
    batch["advantages"] = torch.tensor([1.0, -1.0, 0.5, -0.5]).unsqueeze(1).expand(4, 6)
    batch["response_mask"] = mask.long()
    node = {"filter": "clip_b", "filter_options": {"mu": 0.5}}
    settings = FilterSettings.from_config({"entropy_dynamics": node})
    keep, metrics = decide_keep(settings.loss_config(), batch)
    stats = TokenStats(batch["old_log_probs"], *(batch[k] for k in STAT_KEYS))
    advantages = torch.where(mask, batch["advantages"], 0.0)
    expected, _ = select_tokens(settings.loss_config(), stats, advantages, mask)
    assert torch.equal(keep, expected & mask) and not (keep & ~mask).any()
    assert (mask & ~keep).any()  # some tokens dropped at mu = 0.5
    assert {"entropy/mean", "clip_b/frac_clipped"} <= set(metrics)
    del batch[STAT_KEYS[0]]
    with pytest.raises(KeyError, match="calculate_ed_stats"):
        decide_keep(settings.loss_config(), batch)


def test_controller_options_are_checked_when_the_settings_are_read() -> None:
    def read(**node):
        return FilterSettings.from_config({"entropy_dynamics": node})

    with pytest.raises(ValueError, match=r"entropy_dynamics\.control: .*target_final"):
        read(filter="entropy_target", control={"target": 0.3, "schedule": "linear"})
    with pytest.raises(ValueError, match=r"entropy_dynamics\.control: entropy_target has no"):
        read(filter="entropy_target", control={"kp": 1.0})
    with pytest.raises(ValueError, match=r"set entropy_dynamics\.control\.target"):
        read(filter="entropy_target", filter_options={"target": 0.3})
    with pytest.raises(ValueError, match="no closed-loop method"):
        read(filter="clip_b", control={"target": 0.3})
    with pytest.raises(ValueError, match="does not run in verl"):
        read(method="entropic")
    with pytest.raises(ValueError, match="filter=entropy_target"):
        read(method="entropy_target", filter="clip_b")
    with pytest.raises(ValueError, match="monitor_every"):
        read(monitor_every=-1)
    settings = read(filter="entropy_target", control={"target": 0.3, "ki": 0.1})
    assert settings.method == "entropy_target" and settings.control == {"target": 0.3, "ki": 0.1}
    assert read(method="adaptive_entropy").method == "adaptive_entropy"
    assert read(monitor_every=5).active  # the monitor alone, no filter
    rise_fall = {"target": 0.3, "schedule": "rise_fall", "target_peak": 0.4}
    assert read(filter="entropy_target", control=rise_fall).control == rise_fall  # any length
