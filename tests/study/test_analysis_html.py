"""The HTML page of sampled responses (``study/analysis_html.py``): one escaped span per token with
its values on hover, coloured on a symmetric diverging scale of ``S_k - E_p[S]``."""

from __future__ import annotations

from entropy_dynamics.study.analysis import quadrant
from entropy_dynamics.study.analysis_html import deviation_colour, render_html


def _row(sample: int, position: int, token: str, deviation: float) -> dict:
    return {
        "sample": sample,
        "prompt": 0,
        "position": position,
        "token_id": 7,
        "token": token,
        "logp": -0.5,
        "p_k": 0.6065,
        "entropy": 1.25,
        "discriminator": 0.123,
        "expected_discriminator": 0.123 - deviation,
        "deviation": deviation,
        "advantage": 1.0,
        "quadrant": quadrant(1.0, deviation),
    }


def test_html_one_escaped_span_per_token_with_hover_values() -> None:
    rows = [
        _row(0, 0, "<b>", 0.2),
        _row(0, 1, "a&b", -0.2),
        _row(0, 2, "\n", 0.0),
        _row(1, 0, ' "q" ', 0.05),
        _row(1, 1, "  ", -0.05),
    ]
    page = render_html(rows, prompts=["<script>alert(1)</script>"], advantages=[1.0, -1.0])
    assert page.count('<span class="tok"') == len(rows)
    assert "<b>" not in page and "&lt;b&gt;" in page and "a&amp;b" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "↵" in page and "·" in page  # a newline and a space-only token stay visible
    assert page.count("p_k = 0.6065") == len(rows) and "S_k - E_p[S] = -0.2" in page
    assert "E_p[S] = 0.323" in page  # 0.123 - (-0.2), in the hover text
    # symmetric diverging scale: ±d get mirrored colours, 0 is white, beyond the scale saturates
    assert deviation_colour(0.0, 0.2) == "rgb(255,255,255)"
    assert deviation_colour(0.2, 0.2) == deviation_colour(5.0, 0.2) == "rgb(214,39,40)"
    assert deviation_colour(-0.1, 0.2) == "rgb(143,187,218)"  # halfway to (31,119,180): exact
    # halfway to (214,39,40): 255 - 41/2 = 234.5 rounds (half to even) to 234
    assert deviation_colour(0.1, 0.2) == "rgb(234,147,148)"
