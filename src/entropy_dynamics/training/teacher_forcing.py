"""Teacher-forced forwards of a rollout: the inputs that replay it, and one forward of its rows
in which each distinct prompt runs once (GRPO's ``G`` samples of a prompt share it).

A rollout repeats every prompt ``G`` times (a group). A teacher-forced forward of the whole
``(N, P + R)`` batch runs each prompt's ``P`` positions ``G`` times over; on the embedded default
(``P`` 15, ``R`` about 10) that is 60 % of the tokens of every statistics, loss and dynamics pass.
Here the distinct prompts run once, their key/value cache is gathered to every row that shares
them (an index: differentiable, so the gradient of the ``G`` rows' losses flows back into the one
prompt pass), and the responses run on top. The outputs equal the full forward's to float
rounding; :func:`check_shared_prompts` tests that once on a probe, and the caller falls back to
the full forward for a model whose cache does not allow it.

``run(ids, attention_mask, position_ids, cache=None) -> (outputs, cache)`` is the model call:
the decoder's hidden states or the model's logits, ``(n, L, ·)``, and its key/value cache (kept
when ``cache`` is given or ``use_cache`` asked).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.training.rollout import Rollout

__all__ = [
    "Run",
    "check_shared_prompts",
    "distinct_prompts",
    "full_outputs",
    "narrowed",
    "response_logits",
    "shared_prompt_outputs",
    "teacher_forcing_inputs",
]

Run = Callable[..., tuple[Tensor, object]]
Rows = Tensor | slice | None

_PROBE_PROMPT, _PROBE_RESPONSE = 5, 4
_PROBE_ROWS = [0, 0, 1, 1]  # the prompt of each probe row


def response_logits(model, rollout: Rollout, rows: Tensor | slice | None = None) -> Tensor:
    """Teacher-forced raw logits that predict each response token.

    Args:
        model: the causal LM (any mode; gradients flow if enabled).
        rollout: the batch whose ``input_ids`` / ``attention_mask`` are replayed.
        rows: optional subset of the ``N`` rows.

    Returns:
        ``(n, R, V)`` logits, position ``t`` predicting ``response_ids[:, t]``.
    """
    logits = model(**teacher_forcing_inputs(rollout, rows)).logits
    return logits[:, rollout.prompt_length - 1 : -1]  # position t predicts token t + 1


def teacher_forcing_inputs(rollout: Rollout, rows: Tensor | slice | None = None) -> dict:
    """Keyword arguments replaying (a subset of) the rollout through a model or its decoder.

    Output position ``P - 1 + t`` predicts ``response_ids[:, t]``.
    """
    ids, attention = rollout.input_ids, rollout.attention_mask
    if rows is not None:
        ids, attention = ids[rows], attention[rows]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
    return {
        "input_ids": ids,
        "attention_mask": attention,
        "position_ids": position_ids,
        "use_cache": False,
    }


def _index(rollout: Rollout, rows: Tensor | slice | None) -> Tensor:
    """``rows`` as a ``(n,)`` index tensor of the rollout's rows."""
    every = torch.arange(rollout.input_ids.shape[0], device=rollout.input_ids.device)
    return every if rows is None else every[rows]


def narrowed(rollout: Rollout, rows: Rows) -> tuple[Rollout, Rows]:
    """``(rollout, rows)``, or when the rows' longest response is shorter than ``R``, the rows
    alone cut to it (:meth:`Rollout.select`, and ``None`` for rows): a forward of them spends
    nothing on the columns where every one of them is padding. Causal attention never lets a
    position see a later one, so the outputs at the kept positions are the same."""
    index = _index(rollout, rows)
    width = max(int(rollout.response_mask[index].sum(1).max()), 1) if len(index) else 1
    if width >= rollout.response_ids.shape[1]:
        return rollout, rows
    return rollout.select(index, width), None


def full_outputs(run: Run, rollout: Rollout, rows: Tensor | slice | None = None) -> Tensor:
    """``(n, R, ·)`` outputs predicting each response token, from one forward of the whole rows."""
    inputs = teacher_forcing_inputs(rollout, rows)
    outputs, _ = run(inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"])
    return outputs[:, rollout.prompt_length - 1 : -1]  # position t predicts token t + 1


def shared_prompt_outputs(run: Run, rollout: Rollout, rows: Tensor | slice | None = None) -> Tensor:
    """``(n, R, ·)`` outputs predicting each response token, each distinct prompt run once.

    The prompts are told apart by their ids and attention mask (left padding included), so rows
    need not be whole groups.
    """
    index = _index(rollout, rows)  # (n,)
    p = rollout.prompt_length
    ids, attention = rollout.input_ids[index], rollout.attention_mask[index]  # (n, P + R)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
    prompts, owner = distinct_prompts(torch.cat([ids[:, :p], attention[:, :p]], -1))
    prompt_attention = prompts[:, p:]
    prompt_positions = (prompt_attention.cumsum(-1) - 1).clamp(min=0)
    outputs, cache = run(prompts[:, :p], prompt_attention, prompt_positions, use_cache=True)
    last = outputs[:, -1:]  # (u, 1, ·): the last prompt position predicts response token 0
    first = last.repeat_interleave(owner, 0) if isinstance(owner, int) else last[owner]  # (n, 1, ·)
    if ids.shape[1] - p < 2:
        return first
    if cache is None:  # the model kept none (e.g. gradient checkpointing turned it on since)
        return full_outputs(run, rollout, rows)
    if isinstance(owner, int):  # (u, ·) → (n, ·) keys and values of every layer
        cache.batch_repeat_interleave(owner)
    else:
        cache.batch_select_indices(owner)
    rest, _ = run(ids[:, p:-1], attention[:, :-1], positions[:, p:-1], cache=cache)  # (n, R-1, ·)
    return torch.cat([first, rest], 1)  # (n, R, ·)


def distinct_prompts(prompts: Tensor) -> tuple[Tensor, Tensor | int]:
    """``(distinct, owner)`` of ``(n, ·)`` prompt rows: when the rows come in runs of one equal
    length ``G`` (a rollout's groups, in order), the runs' prompts ``(n / G, ·)`` and ``G`` — a
    repeat whose gradient is a sum over each run, where an index's is a scatter-add several
    times slower on a CPU; otherwise the distinct rows ``(u, ·)`` and ``(n,)`` which one each
    row has."""
    runs, counts = torch.unique_consecutive(prompts, dim=0, return_counts=True)
    if bool((counts == counts[0]).all()):
        return runs, int(counts[0])
    return torch.unique(prompts, dim=0, return_inverse=True)


def _probe(vocab: int, device: torch.device) -> Rollout:
    """Four rows, two groups of two sharing a prompt (one left-padded), one response cut short
    by padding."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(2, vocab, (2, _PROBE_PROMPT), generator=gen)
    prompt_mask = torch.ones_like(prompt)
    prompt_mask[0, 0] = 0  # left padding
    prompts = prompt[_PROBE_ROWS] * prompt_mask[_PROBE_ROWS]
    response = torch.randint(2, vocab, (len(_PROBE_ROWS), _PROBE_RESPONSE), generator=gen)
    response_mask = torch.ones_like(response, dtype=torch.bool)
    response_mask[1, -1] = False  # a response that ended early
    zeros = torch.zeros(response.shape)
    return Rollout(
        input_ids=torch.cat([prompts, response * response_mask], 1).to(device),
        attention_mask=torch.cat([prompt_mask[_PROBE_ROWS], response_mask.long()], 1).to(device),
        response_ids=response.to(device),
        response_mask=response_mask.to(device),
        sampling_logprobs=zeros,
        sampling_entropy=zeros,
        prompt_index=torch.tensor(_PROBE_ROWS),
        completions=[""] * len(_PROBE_ROWS),
        prompt_length=_PROBE_PROMPT,
        truncated=torch.zeros(len(_PROBE_ROWS), dtype=torch.bool),
    )


def check_shared_prompts(run: Run, model: torch.nn.Module) -> str:
    """``""`` when :func:`shared_prompt_outputs` reproduces :func:`full_outputs` on a probe for
    this model (in eval mode, no gradient), else why not."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    vocab = getattr(embeddings, "num_embeddings", None)
    if vocab is None or vocab < 3:
        return "the model exposes no input embeddings to probe with"
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        return "gradient checkpointing turns the key/value cache off"
    param = next(model.parameters())
    probe = _probe(vocab, param.device)
    was_training = model.training
    model.eval()
    errors = []
    try:  # equal groups (the prompts' cache repeated) and unequal ones (gathered by an index)
        for rows in (None, torch.tensor([0, 1, 2], device=param.device)):
            valid = probe.response_mask if rows is None else probe.response_mask[rows]
            with torch.no_grad():
                reference = full_outputs(run, probe, rows).float()[valid]
                shared = shared_prompt_outputs(run, probe, rows).float()[valid]
            errors.append(float((shared - reference).abs().max() / (1.0 + reference.abs().max())))
    except Exception as exc:  # any failure means: run every prompt with its rows
        return f"the shared-prompt forward failed: {type(exc).__name__}: {exc}"
    finally:
        model.train(was_training)
    tolerance = 1e-4 if param.dtype in (torch.float32, torch.float64) else 3e-2
    if not max(errors) <= tolerance:
        return f"the shared-prompt forward differs from the full one by {max(errors):.3g}, relative"
    return ""
