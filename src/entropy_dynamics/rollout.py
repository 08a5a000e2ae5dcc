"""Batched sampling from any Hugging Face causal LM: token ids, response mask, sampling log-probs.

Prompts are left-padded and sampled with ``model.generate`` (KV cache) at temperature ``T`` and
top-p, with top-k disabled, so that sampling follows ``softmax(z / T)`` (nucleus-truncated when
``top_p < 1``). Randomness comes from torch's global RNG: the trainer checkpoints and restores it
for exact resume. A response runs up to and including its first EOS; later positions are padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from entropy_dynamics.stats import token_stats

__all__ = ["Rollout", "generate", "response_logits", "response_mask_from_ids"]


@dataclass
class Rollout:
    """One batch of ``N = len(prompts) · num_samples`` sampled responses.

    Attributes:
        input_ids: ``(N, P + R)`` left-padded prompt followed by the response.
        attention_mask: ``(N, P + R)`` 1 on prompt tokens and on response tokens up to EOS.
        response_ids: ``(N, R)`` sampled tokens (padding after EOS).
        response_mask: ``(N, R)`` bool, response tokens up to and including the first EOS.
        sampling_logprobs: ``(N, R)`` float32 ``log p_k`` under ``softmax(z / T)`` at sampling
            time (0 on padding).
        sampling_entropy: ``(N, R)`` float32 entropy of ``softmax(z / T)`` at sampling time.
        prompt_index: ``(N,)`` which prompt each sample answers; a prompt's samples are contiguous.
        completions: decoded responses without special tokens.
        prompt_length: ``P``.
        truncated: ``(N,)`` bool, reached ``max_new_tokens`` without EOS.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    sampling_logprobs: Tensor
    sampling_entropy: Tensor
    prompt_index: Tensor
    completions: list[str]
    prompt_length: int
    truncated: Tensor


def response_mask_from_ids(response_ids: Tensor, eos_token_id: int | list[int]) -> Tensor:
    """``(N, R)`` bool mask: every token up to and including the first EOS (all if none)."""
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    eos_before = is_eos.long().cumsum(-1) - is_eos.long()  # EOS strictly before each position
    return eos_before == 0


def response_logits(model, rollout: Rollout, rows: Tensor | slice | None = None) -> Tensor:
    """Teacher-forced logits predicting each response token: ``(n, R, V)`` for ``rows``."""
    ids, attention = rollout.input_ids, rollout.attention_mask
    if rows is not None:
        ids, attention = ids[rows], attention[rows]
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens from 0
    logits = model(input_ids=ids, attention_mask=attention, position_ids=position_ids).logits
    return logits[:, rollout.prompt_length - 1 : -1]  # position t predicts token t + 1


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
    if ids is None:
        raise ValueError("the tokenizer and generation config define no EOS token")
    return [ids] if isinstance(ids, int) else list(ids)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    do_sample: bool = True,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt (see :class:`Rollout`)."""
    if not prompts:
        raise ValueError("prompts: need at least one prompt")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    device = next(model.parameters()).device

    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    prompt_ids = encoded["input_ids"].repeat_interleave(num_samples, 0).to(device)  # (N, P)
    prompt_mask = encoded["attention_mask"].repeat_interleave(num_samples, 0).to(device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=0 if do_sample else None,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
    finally:
        model.train(was_training)
    p = prompt_ids.shape[1]
    response_ids = out.sequences[:, p:]  # (N, R)
    response_mask = response_mask_from_ids(response_ids, eos_ids)
    raw_logits = torch.stack(out.logits, dim=1)  # (N, R, V), before temperature / top-p
    stats = token_stats(raw_logits, response_ids, temperature)
    completions = tokenizer.batch_decode(
        response_ids.masked_fill(~response_mask, pad_id), skip_special_tokens=True
    )
    has_eos = (torch.isin(response_ids, torch.tensor(eos_ids, device=device)) & response_mask).any(
        -1
    )
    return Rollout(
        input_ids=out.sequences,
        attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        response_ids=response_ids,
        response_mask=response_mask,
        sampling_logprobs=(stats.logprobs * response_mask).float(),
        sampling_entropy=(stats.entropy * response_mask).float(),
        prompt_index=torch.arange(len(prompts), device=device).repeat_interleave(num_samples),
        completions=completions,
        prompt_length=p,
        truncated=~has_eos,
    )
