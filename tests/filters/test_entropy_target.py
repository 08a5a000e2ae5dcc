"""The entropy_target filter (filters/entropy_target.py) on hand-built batches: the forecast
contributions, the drops toward the target, the cap, the band, the offset, and its option checks.
(The rules and the entropic loss, tested with it before, are in tests/control/test_rules.py and
tests/losses/test_registered.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics.filters import entropy_target, forecast_contributions
from entropy_dynamics.methods import resolve_method
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
