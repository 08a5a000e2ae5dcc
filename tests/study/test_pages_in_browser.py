"""The HTML a user opens: the report and analyze's tokens.html, loaded in headless Chromium (every
image decodes, no console error, no failed request), and every text of tokens.html readable
(WCAG 2 contrast ≥ 4.5 : 1, AA, computed here from the definition).

The browser tests need the system's ``chromium`` (``.ci/run`` installs Debian's package); the
contrast of every colour the token page can produce is checked without it.
"""

from __future__ import annotations

import re

import pytest
from test_figures import _write_run

from browser_helpers import chromium, open_page
from entropy_dynamics.study.analysis import analyze
from entropy_dynamics.study.analysis_html import render_html
from entropy_dynamics.study.report import write_report

AA = 4.5
needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed")


def _channel(value: int) -> float:
    c = value / 255  # WCAG 2: sRGB channel to linear light
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _wcag_contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    la, lb = (
        0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b_) for r, g, b_ in (a, b)
    )
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _rgb(css: str) -> tuple[int, ...]:
    if css.startswith("#"):
        digits = css[1:] if len(css) == 7 else "".join(c * 2 for c in css[1:])
        return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def test_wcag_contrast_by_hand() -> None:
    assert _wcag_contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert _wcag_contrast((119, 119, 119), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)  # #777


def _token_rows(deviations: list[float]) -> list[dict]:
    return [
        {"sample": 0, "prompt": 0, "position": i, "token_id": 1, "token": "ab", "p_k": 0.5,
         "entropy": 1.0, "discriminator": d, "expected_discriminator": 0.0, "deviation": d,
         "quadrant": "pos_adv_pos_dev"}
        for i, d in enumerate(deviations)
    ]  # fmt: skip


def test_every_token_cell_keeps_aa_contrast() -> None:
    # a dense sweep of the diverging scale, both saturated ends and beyond, 0 and non-finite
    deviations = [i / 100 for i in range(-150, 151)] + [float("nan"), 1e9, -1e9]
    page = render_html(_token_rows(deviations))
    cells = re.findall(r'class="tok" style="background:(rgb\([\d,]+\));color:(#\w+)"', page)
    assert len(cells) == len(deviations)
    worst = min(_wcag_contrast(_rgb(bg), _rgb(fg)) for bg, fg in cells)
    assert worst >= AA, worst
    assert {fg for _, fg in cells} == {"#000", "#fff"}  # the saturated ends need white text


def _assert_readable_texts(report) -> None:
    low = [
        (t["text"], t["color"], t["background"], round(contrast, 2))
        for t in report.texts
        if (contrast := _wcag_contrast(_rgb(t["color"]), _rgb(t["background"]))) < AA
        or t["opacity"] != "1"
    ]
    assert not low, f"texts under {AA}:1 contrast: {low[:10]}"


@needs_chromium
def test_tokens_html_in_a_browser(tiny_lm, tmp_path) -> None:
    model, tokenizer = tiny_lm
    prompts = ["12 34 5 =", "7 + 8\t=\n"]  # a tab and a newline: whitespace markers on the page
    result = analyze(model, tokenizer, prompts, num_samples=3, max_new_tokens=12, seed=0,
                     output_dir=tmp_path)  # fmt: skip
    report = open_page(result.paths["html"])
    assert report.errors == []
    assert len(report.texts) > len(result.rows)  # every token's text was found on the page
    _assert_readable_texts(report)


@needs_chromium
def test_report_html_in_a_browser(tmp_path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        _write_run(root, f"grpo-seed{seed}", [f"seed={seed}"], 1.0, seed)
        overrides = [f"seed={seed}", "algorithm.method=clip_b"]
        _write_run(root, f"clip_b-seed{seed}", overrides, 2.0, seed)
    result = write_report([root], tmp_path / "report", ks=(1, 4))
    report = open_page(result.html)
    assert report.errors == []
    assert len(report.images) == len(result.figures) > 0
    broken = [
        image["src"] for image in report.images if not image["complete"] or image["width"] == 0
    ]
    assert not broken, f"images that do not load: {broken}"
    _assert_readable_texts(report)


@needs_chromium
def test_report_shows_the_sample_completions_in_a_browser(tmp_path) -> None:
    from test_report_samples import write_samples

    root = tmp_path / "runs"
    for seed in (0, 1):
        write_samples(_write_run(root, f"grpo-seed{seed}", [f"seed={seed}"], 1.0, seed))
    result = write_report([root], tmp_path / "report", ks=(1, 4))
    report = open_page(result.html)
    assert report.errors == []
    shown = [t["text"] for t in report.texts]
    assert "Sample completions" in shown
    assert "1+2*1=" in shown and "1 2 3 -> 0:" in shown  # a completion and its prompt, visible
    _assert_readable_texts(report)


@needs_chromium
def test_report_shows_a_non_empty_pass_rate_histogram_in_a_browser(tmp_path) -> None:
    import json

    def page(with_counts: bool):
        root = tmp_path / f"runs-{with_counts}"
        for seed in (0, 1):
            run = _write_run(root, f"grpo-seed{seed}", [f"seed={seed}"], 1.0, seed)
            if with_counts:  # what eval --run writes: per-problem correct counts of k samples
                scores = {"split": "test", "k": 4, "per_problem_correct": [0, 2, 4, 1 + seed],
                          "metrics": {"eval/pass@1": 0.5}}  # fmt: skip
                (run / "eval.json").write_text(json.dumps(scores))
        result = write_report([root], tmp_path / f"report-{with_counts}", ks=(1, 4))
        report = open_page(result.html)
        assert report.errors == [] and all(i["complete"] and i["width"] for i in report.images)
        return " ".join(report.shown.split())

    shown = page(with_counts=True)
    assert "Per-problem pass rates" in shown and "No data" not in shown
    assert "25.0%" in shown  # the never-solved share: 1 problem of 4 in each run, pooled
    assert "No data: no run has per-problem counts yet." in page(with_counts=False)
