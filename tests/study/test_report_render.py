"""Rendering of the comparison report (``study/report_render.py``): the Markdown and the
self-contained HTML page of hand-made sections, escaped, with their figures."""

from __future__ import annotations

import base64
from types import SimpleNamespace

from entropy_dynamics.study.report_render import markdown, page

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)  # a 1 × 1 PNG


def _sections(tmp_path):
    figure = tmp_path / "figures" / "entropy.png"
    figure.parent.mkdir()
    figure.write_bytes(PNG)
    table = (["method", "note"], [["clip_b", "a|b"], ["<grpo>", ""]])
    return [
        SimpleNamespace(title="Entropy", text="Mean & std.", tables=[table], figures=[figure]),
        SimpleNamespace(title="Empty", text="", tables=[], figures=[]),
    ]


def test_markdown_tables_escape_pipes_and_link_figures_relative_to_the_report(tmp_path) -> None:
    text = markdown("Runs", _sections(tmp_path), tmp_path)
    lines = text.splitlines()
    assert lines[:4] == ["# Runs", "", "## Entropy", ""]
    assert "| method | note |" in lines and "|---|---|" in lines
    assert "| clip_b | a\\|b |" in lines  # a pipe inside a cell does not split it
    assert "![entropy](figures/entropy.png)" in lines
    assert "## Empty" in lines


def test_the_page_is_escaped_and_embeds_its_figures(tmp_path) -> None:
    html = page("Runs <1>", _sections(tmp_path))
    assert "<title>Runs &lt;1&gt;</title>" in html and "<h1>Runs &lt;1&gt;</h1>" in html
    assert "<td>&lt;grpo&gt;</td>" in html and "<p>Mean &amp; std.</p>" in html
    encoded = base64.b64encode(PNG).decode("ascii")
    assert f"<img alt='entropy' src='data:image/png;base64,{encoded}'>" in html
    assert html.endswith("</body></html>")
