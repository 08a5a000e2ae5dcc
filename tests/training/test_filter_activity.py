"""The idle-filter notice and the effective filter options (issue 18, point 4)."""

from __future__ import annotations

import math

from entropy_dynamics.methods import resolve_method
from entropy_dynamics.training.filter_activity import effective_filter_options, idle_filter_notice


def _history(kept: list[float]) -> list[dict[str, float]]:
    return [{"step": i + 1, "actor/frac_kept": k} for i, k in enumerate(kept)]


def test_effective_options_are_the_filter_defaults_under_the_users():
    assert effective_filter_options(resolve_method("grpo")) == {}
    clip_b = effective_filter_options(resolve_method("clip_b", filter_options={"mu": 1.0}))
    assert clip_b == {"mu": 1.0, "mu_plus": None, "mu_minus": None}
    clip_v = effective_filter_options(resolve_method("clip_v"))
    assert clip_v["mu"] == 8.5 and clip_v["max_frac"] == 1e-4


def test_idle_when_the_mean_dropped_share_of_the_window_is_below_a_tenth_of_a_percent():
    loss = resolve_method("clip_v")
    # 19 steps with nothing dropped, then 1 step dropping 1.9 %: mean 0.095 % < 0.1 % -> idle
    notice = idle_filter_notice(_history([1.0] * 19 + [0.981]), loss)
    assert notice is not None
    assert "clip_v is idle" in notice and "0.095%" in notice
    assert "mu=8.5" in notice and "max_frac=0.0001" in notice
    # 2.1 % in one step of 20: mean 0.105 % >= 0.1 % -> active
    assert idle_filter_notice(_history([1.0] * 19 + [0.979]), loss) is None


def test_only_the_last_window_counts_and_short_or_unfiltered_runs_say_nothing():
    loss = resolve_method("clip_b")
    active_then_idle = _history([0.5] * 30 + [1.0] * 20)
    assert idle_filter_notice(active_then_idle, loss) is not None
    assert idle_filter_notice(active_then_idle[:-1], loss) is None  # window holds a 0.5 step
    assert idle_filter_notice(_history([1.0] * 19), loss) is None  # fewer than 20 steps
    assert idle_filter_notice(_history([1.0] * 40), resolve_method("grpo")) is None
    nan_steps = _history([1.0] * 20 + [math.nan])
    assert idle_filter_notice(nan_steps, loss) is None  # a NaN step leaves 19 finite ones


def test_filters_without_mu_get_no_mu_hint():
    notice = idle_filter_notice(_history([1.0] * 20), resolve_method("clip_cov"))
    assert notice is not None and "mu" not in notice.split("GRPO")[1]
