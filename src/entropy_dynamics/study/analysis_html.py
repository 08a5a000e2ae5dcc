"""Self-contained HTML page of sampled responses, each token coloured by ``S_k - E_p[S]``.

Theorem 3.3: a step on a token with advantage ``A`` changes the entropy at its position by
``-(η A / T²)(S_k - E_p[S])``. Red tokens (``S_k > E_p[S]``) lower the entropy when rewarded and
raise it when penalised; blue tokens do the opposite. The colour scale is symmetric around 0
and saturates at the 98th percentile of ``|S_k - E_p[S]|`` on the page, so one outlier does not
wash out the rest; every value is in the token's hover text. Each token's text is black or
white, whichever contrasts more with its cell, so every text on the page keeps a WCAG 2
contrast of at least 4.5 : 1 (AA; the worse of the two is never under 4.58).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["contrast_ratio", "deviation_colour", "render_html", "text_colour"]

_RED = (214, 39, 40)  # S_k > E_p[S]
_BLUE = (31, 119, 180)  # S_k < E_p[S]
_SCALE_QUANTILE = 0.98
_VISIBLE = {"\n": "↵", "\r": "␍", "\t": "→"}  # shown in place of invisible characters

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.sample { margin: 1.2em 0; padding: 0.6em 0.8em; border: 1px solid #ddd; border-radius: 6px; }
.meta { font-size: 0.85em; color: #555; margin-bottom: 0.4em; }
.prompt { font-family: monospace; white-space: pre-wrap; color: #595959; }
.response { font-family: monospace; white-space: pre-wrap; line-height: 1.9; }
.tok { border-right: 1px solid rgba(0, 0, 0, 0.12); padding: 1px 0; cursor: help; }
.ws { text-decoration: underline dotted; }
.legend { display: flex; align-items: center; gap: 0.6em; font-size: 0.9em; }
.bar { width: 240px; height: 14px; border: 1px solid #aaa;
  background: linear-gradient(to right, rgb(31,119,180), #fff, rgb(214,39,40)); }
"""


def _deviation_rgb(deviation: float, scale: float) -> tuple[int, int, int]:
    if not (scale > 0 and math.isfinite(deviation)):
        return (255, 255, 255)
    t = max(-1.0, min(1.0, deviation / scale))
    end = _RED if t > 0 else _BLUE
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in end)
    return (r, g, b)


def deviation_colour(deviation: float, scale: float) -> str:
    """CSS colour of a deviation on the diverging scale ``[-scale, scale]`` (white at 0)."""
    return "rgb({},{},{})".format(*_deviation_rgb(deviation, scale))


def _relative_luminance(rgb: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour with 0–255 channels."""
    linear = [
        c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2 contrast ratio ``(L_light + 0.05) / (L_dark + 0.05)`` of two sRGB colours."""
    la, lb = sorted((_relative_luminance(a), _relative_luminance(b)))
    return (lb + 0.05) / (la + 0.05)


def text_colour(background: Sequence[int]) -> str:
    """``#000`` or ``#fff``, whichever contrasts more with ``background``."""
    black = contrast_ratio((0, 0, 0), background)
    return "#000" if black >= contrast_ratio((255, 255, 255), background) else "#fff"


def _scale(deviations: list[float]) -> float:
    magnitudes = sorted(abs(d) for d in deviations if math.isfinite(d))
    if not magnitudes:
        return 0.0
    return magnitudes[min(len(magnitudes) - 1, int(_SCALE_QUANTILE * len(magnitudes)))]


def _cell_style(deviation: float, scale: float) -> str:
    rgb = _deviation_rgb(deviation, scale)
    return "background:rgb({},{},{});".format(*rgb) + f"color:{text_colour(rgb)}"


def _token_html(text: str) -> str:
    """Escaped token text with whitespace made visible; a newline still breaks the line."""
    if text == "":
        return '<span class="ws">∅</span>'
    parts = []
    for char in text:
        if char in _VISIBLE:
            parts.append(f'<span class="ws">{_VISIBLE[char]}</span>')
            if char == "\n":
                parts.append("\n")
        elif char == " " and text.strip() == "":
            parts.append('<span class="ws">·</span>')  # a token of only spaces
        else:
            parts.append(html.escape(char))
    return "".join(parts)


def _hover(row: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"token {row['token']!r} (id {row['token_id']}, position {row['position']})",
            f"p_k = {row['p_k']:.4g}",
            f"H = {row['entropy']:.4g}",
            f"S_k = {row['discriminator']:.4g}",
            f"E_p[S] = {row['expected_discriminator']:.4g}",
            f"S_k - E_p[S] = {row['deviation']:.4g}",
            f"quadrant = {row['quadrant']}",
        ]
    )


def render_html(
    rows: Sequence[dict[str, Any]],
    *,
    prompts: Sequence[str] | None = None,
    advantages: Sequence[float] | None = None,
    rewards: Sequence[float] | None = None,
    title: str = "Token entropy diagnostics",
) -> str:
    """A self-contained HTML page: one block per response, one ``<span class="tok">`` per token.

    Args:
        rows: :func:`entropy_dynamics.study.analysis.token_table` rows (keys ``sample``, ``prompt``,
            ``position``, ``token_id``, ``token``, ``p_k``, ``entropy``, ``discriminator``,
            ``expected_discriminator``, ``deviation``, ``quadrant``).
        prompts: prompt texts by prompt index, shown above each response.
        advantages: advantage of each sample (by sample index), shown in its header.
        rewards: reward of each sample, shown in its header.
        title: page title.

    Returns:
        The page; every text from the model or the user is HTML-escaped.
    """
    samples: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        samples.setdefault(int(row["sample"]), []).append(row)
    scale = _scale([float(row["deviation"]) for row in rows])
    blocks = []
    for sample, tokens in sorted(samples.items()):
        tokens = sorted(tokens, key=lambda r: r["position"])
        prompt_index = int(tokens[0]["prompt"])
        meta = [f"sample {sample}", f"prompt {prompt_index}", f"{len(tokens)} tokens"]
        if rewards is not None:
            meta.append(f"reward {rewards[sample]:.3g}")
        if advantages is not None:
            meta.append(f"advantage {advantages[sample]:+.3g}")
        prompt = ""
        if prompts is not None and 0 <= prompt_index < len(prompts):
            prompt = f'<div class="prompt">{html.escape(prompts[prompt_index])}</div>'
        spans = "".join(
            f'<span class="tok" style="{_cell_style(row["deviation"], scale)}" '
            f'data-deviation="{row["deviation"]:.6g}" '
            f'title="{html.escape(_hover(row), quote=True)}">{_token_html(row["token"])}</span>'
            for row in tokens
        )
        blocks.append(
            f'<div class="sample"><div class="meta">{html.escape(" · ".join(meta))}</div>'
            f'{prompt}<div class="response">{spans}</div></div>'
        )
    legend = (
        '<div class="legend"><span>S_k &lt; E_p[S]</span><span>'
        f"−{scale:.3g}</span>"
        '<div class="bar"></div>'
        f"<span>+{scale:.3g}</span><span>S_k &gt; E_p[S]</span></div>"
        "<p>Colour: the deviation S_k − E_p[S] of each sampled token (Theorem 3.3: "
        "ΔH ≈ −(η A / T²)(S_k − E_p[S])). Red tokens lower the entropy when rewarded (A &gt; 0) "
        "and raise it when penalised; blue tokens the opposite. Scale symmetric around 0, "
        f"saturating at ±{scale:.3g} (98th percentile of |deviation|). Hover a token for "
        "p_k, H, S_k, E_p[S] and the deviation. ↵ newline, → tab, · space-only token, ∅ empty "
        "text.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>{legend}\n" + "\n".join(blocks) + "\n</body></html>\n"
    )
