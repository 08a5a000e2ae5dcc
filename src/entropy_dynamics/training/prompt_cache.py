"""The key/value cache of each distinct prompt, computed once and handed to all of its rows.

GRPO samples ``G`` responses per prompt. ``model.generate`` would prefill every one of the
``N = B·G`` rows with its prompt; :func:`shared_prefill` runs the ``B`` distinct prompts, all but
their last token, once, and repeats the cache to the ``G`` rows of each: generation then starts
from it, its first step running the last prompt token (whose logits sample the first response
token), exactly as after a full prefill up to float rounding. The teacher-forced passes share
prompts the same way (:mod:`~entropy_dynamics.training.teacher_forcing`).

Everything here speaks transformers' cache API of both eras: the keyword is ``cache`` from
transformers 5.25 on and ``past_key_values`` before (:func:`cache_keyword`).
"""

from __future__ import annotations

import inspect
from functools import cache as memoize

import torch
from torch import Tensor

__all__ = ["cache_keyword", "check_shared_prefill", "shared_prefill"]


@memoize
def _keyword_of(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_keyword(module: torch.nn.Module) -> str:
    """The name under which ``module``'s forward takes (and its output returns) the cache."""
    return _keyword_of(type(module).forward)


def shared_prefill(model, prompt_ids: Tensor, prompt_mask: Tensor, repeats: int) -> object | None:
    """The cache of ``prompt_ids[:, :-1]`` (``(B, P)``, left-padded, ``prompt_mask`` its
    attention) run once, each row repeated ``repeats`` times in place (``(B·repeats, ·)``), for
    ``model.generate`` to continue from; ``None`` for one-token prompts (nothing to share)."""
    if prompt_ids.shape[1] < 2:
        return None
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
    name = cache_keyword(model)
    out = model(input_ids=prompt_ids[:, :-1], attention_mask=prompt_mask[:, :-1],
                position_ids=positions[:, :-1], use_cache=True)  # fmt: skip
    cached = out.get(name)
    if cached is not None:
        cached.batch_repeat_interleave(repeats)
    return cached


def check_shared_prefill(model) -> str:
    """``""`` when the next-token logits after :func:`shared_prefill` and one more token equal
    those of a full forward on a probe (two prompts, one left-padded), else why not."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    vocab = getattr(embeddings, "num_embeddings", None)
    if vocab is None or vocab < 3:
        return "the model exposes no input embeddings to probe with"
    device = next(model.parameters()).device
    ids = torch.randint(2, vocab, (2, 5), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    mask[0, 0] = 0  # left padding
    ids = ids * mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(input_ids=ids, attention_mask=mask, position_ids=positions)
            cached = shared_prefill(model, ids, mask, 2)
            rows = torch.tensor([0, 0, 1, 1], device=device)
            step = model(input_ids=ids[rows, -1:], attention_mask=mask[rows],
                         position_ids=positions[rows, -1:], use_cache=True,
                         **{cache_keyword(model): cached})  # fmt: skip
    except Exception as exc:  # any failure means: prefill every row
        return f"prefilling from a shared cache failed: {type(exc).__name__}: {exc}"
    finally:
        model.train(was_training)
    expected = reference.logits[rows, -1].float()
    error = float((step.logits[:, -1].float() - expected).abs().max())
    if not error <= 1e-3 * (1.0 + float(expected.abs().max())):
        return f"prefilling from a shared cache differs from a full prefill by {error:.3g}"
    return ""
