"""What the TRL plug-in's decoder hook records (``integrations/trl/capture.py``), on hand-made
tensors: a generation record is used only when it is aligned with TRL's completions."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from entropy_dynamics.integrations.trl.capture import GenerationRecord, cat_stats, generation_hidden
from entropy_dynamics.stats import TokenStats

B, P, C, D = 2, 3, 4, 5


def _record(steps: int, completion: torch.Tensor) -> GenerationRecord:
    """A ``generate`` call with a KV cache: the prefill, then one token per decode step."""
    record = GenerationRecord()
    prompt = torch.arange(B * P).reshape(B, P)
    record.record(prompt, torch.randn(B, P, D))  # (B, P, d): the prefill predicts token 0
    for t in range(1, steps):
        record.record(completion[:, t - 1 : t], torch.randn(B, 1, D))  # fed token t - 1
    return record


def _output(completion: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    prompt = torch.arange(B * P).reshape(B, P)
    return {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": completion,
        "completion_mask": mask,
    }


def test_an_aligned_record_gives_the_hidden_state_before_each_completion_token():
    torch.manual_seed(0)
    completion = torch.randint(0, 9, (B, C))
    record = _record(C, completion)
    hidden = generation_hidden([record], _output(completion, torch.ones(B, C, dtype=torch.long)))
    assert hidden is not None and hidden.shape == (B, C, D)
    assert torch.equal(hidden, torch.stack(record.hidden, dim=1))


def test_fewer_steps_than_columns_are_padded_when_the_mask_drops_them():
    torch.manual_seed(0)
    completion = torch.randint(0, 9, (B, C))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])  # both ended after two tokens
    hidden = generation_hidden([_record(2, completion)], _output(completion, mask))
    assert hidden is not None and hidden.shape == (B, C, D)
    assert not hidden[:, 2:].any()  # (B, 2, d) of padding
    mask[0, 2] = 1  # a valid token no forward predicted
    assert generation_hidden([_record(2, completion)], _output(completion, mask)) is None


def test_a_misaligned_record_gives_none():
    torch.manual_seed(0)
    completion = torch.randint(0, 9, (B, C))
    output = _output(completion, torch.ones(B, C, dtype=torch.long))
    fed_other = _record(C, completion + 1)  # decode steps fed other tokens
    assert generation_hidden([fed_other], output) is None
    assert generation_hidden([_record(C, completion)] * 2, output) is None  # two generate calls
    beams = _record(C, completion)
    beams.record(torch.zeros(2 * B, 1, dtype=torch.long), torch.randn(2 * B, 1, D))
    assert not beams.aligned and generation_hidden([beams], output) is None


def test_row_chunks_of_statistics_concatenate_in_order():
    parts = [TokenStats(*(torch.full((rows, C), float(rows)) for _ in range(4))) for rows in (1, 2)]
    whole = cat_stats(parts)
    assert whole.logprobs.shape == (3, C)
    assert whole.entropy[:, 0].tolist() == [1.0, 2.0, 2.0]
