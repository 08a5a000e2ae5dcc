"""What the TRL plug-in's decoder hook records, and its alignment with TRL's completions.

Two records: :class:`Capture`, the statistics of an armed teacher-forced pass (TRL's own
old-log-prob pass or the plug-in's extra one), row chunk by row chunk; and
:class:`GenerationRecord`, the ids each forward of one ``generate`` call was fed and the hidden
state of its last position. :func:`generation_hidden` turns a generation record into the hidden
states that predicted each completion token, only when the record is exactly aligned with them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from entropy_dynamics.stats import TokenStats

__all__ = ["Capture", "GenerationRecord", "cat_stats", "generation_hidden"]


@torch.no_grad()
def cat_stats(parts: list[TokenStats]) -> TokenStats:
    """Row chunks of ``TokenStats`` ``(b_i, C)`` → one ``(Σ b_i, C)``."""
    names = ("logprobs", "entropy", "discriminator", "expected_discriminator")
    return TokenStats(*(torch.cat([getattr(p, name) for p in parts]) for name in names))


class Capture:
    """What the decoder hook needs while armed: the ids of the pass and the response width."""

    def __init__(self, input_ids: Tensor, response_width: int) -> None:
        self.input_ids, self.width, self.offset = input_ids, response_width, 0
        self.parts: list[TokenStats] = []


class GenerationRecord:
    """What the decoder hook records during one ``generate`` call: the ids each forward was fed
    and the final hidden state of its last position, the one that predicts the next token."""

    def __init__(self) -> None:
        self.prompt: Tensor | None = None  # (B, P): the prefill's ids
        self.fed: list[Tensor] = []  # (B,) per decode step: the completion token it was fed
        self.hidden: list[Tensor] = []  # (B, d) per forward: predicts completion token t
        self.aligned = True

    def record(self, input_ids: Tensor | None, hidden: Tensor) -> None:
        rows = None if self.prompt is None else self.prompt.shape[0]
        if input_ids is None or (rows is not None and input_ids.shape[0] != rows):
            self.aligned = False  # inputs_embeds, beams, ...: no token-by-token alignment
        if not self.aligned:
            return
        if self.prompt is None:
            self.prompt = input_ids.detach().clone()
        else:  # one new token per step (or the whole sequence, without a KV cache)
            self.fed.append(input_ids[:, -1].detach().clone())
        self.hidden.append(hidden[:, -1].detach().clone())


def generation_hidden(
    generations: list[GenerationRecord], output: dict[str, Any]
) -> Tensor | None:
    """The final hidden states ``(B, C, d)`` that predicted each completion token of ``output``,
    from the records of TRL's ``generate``, or ``None`` (then a teacher-forced pass is needed)
    unless the record is exactly aligned: one ``generate`` call, its prefill fed
    ``output["prompt_ids"]`` and its decode steps fed the completion tokens of ``output`` at every
    valid position.

    Args:
        generations: the records of one generation batch (aligned only if exactly one).
        output: TRL's generation batch: ``prompt_ids`` / ``prompt_mask`` ``(B, P)``,
            ``completion_ids`` / ``completion_mask`` ``(B, C)``.
    """
    if len(generations) != 1 or not generations[0].aligned or not generations[0].hidden:
        return None
    record = generations[0]
    prompt_ids, tokens = output["prompt_ids"], output["completion_ids"]
    # TRL may left-pad the prompts it returns wider than it fed them (1.12 with
    # pad_to_multiple_of): extra columns on the left must be padding, the rest equal
    extra = prompt_ids.shape[1] - record.prompt.shape[1]
    if (
        extra < 0
        or record.prompt.shape[0] != prompt_ids.shape[0]
        or output["prompt_mask"][:, :extra].any()
        or not torch.equal(record.prompt.to(prompt_ids.device), prompt_ids[:, extra:])
    ):
        return None
    steps, width = len(record.hidden), tokens.shape[1]
    valid = output["completion_mask"].bool()
    if valid[:, steps:].any():  # a valid token no forward predicted
        return None
    if record.fed:  # decode step t was fed completion token t - 1
        fed = torch.stack(record.fed, dim=1).to(tokens.device)[:, :width]
        check = valid[:, : fed.shape[1]]
        if not torch.equal(fed[check], tokens[:, : fed.shape[1]][check]):
            return None
    hidden = torch.stack(record.hidden, dim=1)[:, :width]  # (B, min(steps, C), d)
    if hidden.shape[1] < width:  # TRL's pad_to_multiple_of: padding, dropped by the mask
        hidden = nn.functional.pad(hidden, (0, 0, 0, width - hidden.shape[1]))
    return hidden
