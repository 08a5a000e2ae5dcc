"""One look for every figure (``study/plot_style.py``): the smoothing every curve is drawn with, a
minimum span, whole steps, an r never shown as nan. That the figures drawn in this style read (no
overlapping texts): ``test_figures.py``."""

from __future__ import annotations

import pytest

from entropy_dynamics.study import plot_style


def test_ema_by_hand() -> None:
    # span 3 -> a = 0.5: raw 0.5·2 = 1, weight 0.5 -> 2; then (0.5·1 + 0.5·4)/0.75 = 10/3.
    assert plot_style.ema([2.0, 4.0], span=3) == pytest.approx([2.0, 10 / 3])
    assert plot_style.ema([1.0, 5.0, 2.0], span=1) == [1.0, 5.0, 2.0]  # span 1: no smoothing


def test_a_smoothed_curve_is_drawn_over_its_faint_raw_series() -> None:
    plt = plot_style.pyplot()
    fig, ax = plt.subplots()
    line = plot_style.plot_smoothed(ax, [1, 2, 3], [2.0, 4.0, 0.0], "entropy")
    assert line is ax.lines[0] and line.get_label() == "entropy" and len(ax.lines) == 2
    raw = ax.lines[1]
    assert list(raw.get_ydata()) == [2.0, 4.0, 0.0] and raw.get_alpha() == plot_style.RAW_ALPHA
    assert raw.get_color() == line.get_color()
    assert plot_style.plot_smoothed(ax, [], [], "nothing") is None
    plt.close(fig)


def test_a_minimum_span_and_whole_steps_and_an_r_that_is_never_nan() -> None:
    plt = plot_style.pyplot()
    fig, ax = plt.subplots()
    ax.plot([1], [0.249])
    ax.set_ylim(0.248, 0.250)  # the 0.002 change of issue 29 filling the whole axis
    plot_style.finish(ax, 0.1, low=0.0, high=1.0)
    bottom, top = ax.get_ylim()
    assert top - bottom == pytest.approx(0.1) and bottom <= 0.248 and top >= 0.250
    assert ax.get_xlim() == (0.5, 1.5)  # one step: a step wide, its tick a whole number
    assert [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1.0]
    ax.set_ylim(0.0, 0.02)
    plot_style.min_span(ax, 0.1, low=0.0)  # kept at or above its floor
    assert ax.get_ylim() == (0.0, pytest.approx(0.1))
    plt.close(fig)
    assert plot_style.r_text(0.91234) == "r = 0.912"
    assert "nan" not in plot_style.r_text(float("nan"))
