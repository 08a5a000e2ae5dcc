"""The fixed batch every engine's equality test uses, and our trainer's update on it.

Our side of "our trainer, TRL and verl agree": the trainer's own ``forward`` statistics of the
rollout policy, ``select_tokens`` on the whole batch (as its ``learn``), then its own ``_update``
(the fused policy loss, or ``compute_policy_loss``), up to the gradient of that one update.
Each engine's test (``test_trl_equality.py``, ``test_verl_equality.py``) feeds the same token
ids, advantages and old log-probs through the engine's real loss code with our plug-in and
compares keep-mask, loss and parameter gradients with this. Imports no engine.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.losses import select_tokens
from entropy_dynamics.stats import TokenStats
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.rollout import Rollout
from entropy_dynamics.training.trainer import Trainer
from entropy_dynamics.training.update import UpdateBatch

B, P, C = 8, 6, 10
# Options that make both filters drop tokens on this small batch (the paper's mu would not).
FILTERS = {
    "grpo": ("none", {}),
    "clip_b": ("clip_b", {"mu": 0.5}),
    "clip_v": ("clip_v", {"mu": 0.5, "max_frac": 0.05}),
}


def fixed_batch():
    """Fixed token ids, masks, advantages and old log-prob noise (ratios ≠ 1, some clipped):
    ``(prompt_ids (B, P), completion_ids (B, C), completion_mask (B, C), advantages (B,),
    noise (B, C))``."""
    gen = torch.Generator().manual_seed(0)
    vocab = 40  # ids of ordinary characters of the embedded tokenizer
    prompt_ids = torch.randint(2, vocab, (B, P), generator=gen)
    completion_ids = torch.randint(2, vocab, (B, C), generator=gen)
    lengths = torch.tensor([10, 7, 4, 10, 9, 3, 6, 8])
    completion_mask = (torch.arange(C) < lengths.unsqueeze(1)).long()  # (B, C)
    completion_ids = torch.where(completion_mask.bool(), completion_ids, 0)
    advantages = torch.tensor([1.2, -0.8, 0.5, -1.5, 0.9, -0.3, 1.1, -1.1])
    noise = 0.3 * torch.randn(B, C, generator=gen)
    return prompt_ids, completion_ids, completion_mask, advantages, noise


def our_update(
    tmp_path: Path,
    method: str,
    agg_mode: str,
    norm: float | None,
    fused: bool,
    batch,
    extra: tuple[str, ...] = (),
):
    """Our trainer's ``learn`` on the fixed batch, up to the gradient of its one update:
    ``(start model, keep (B, C), loss, {name: grad}, old_logprobs (B, C))``. ``extra``: more
    config overrides (e.g. verl's always-on dual clip)."""
    prompt_ids, completion_ids, completion_mask, seq_adv, noise = batch
    name, options = FILTERS[method]
    overrides = [
        f"output_dir={tmp_path}",
        "steps=1",
        f"algorithm.method={'grpo' if name == 'none' else name}",
        f"algorithm.loss.agg_mode={agg_mode}",
        "optim.grad_clip=1e9",  # the raw gradient: clipping would rescale it
        *extra,
    ]
    if norm is not None:
        overrides.append(f"algorithm.loss.loss_agg_norm={norm}")
    if options:
        body = ", ".join(f"{k}: {v}" for k, v in options.items())
        overrides.append(f"algorithm.loss.filter_options={{{body}}}")
    trainer = Trainer(load_config(None, overrides), tmp_path / "ours")
    assert trainer.fused_loss  # the default on the embedded model
    trainer.fused_loss = fused  # its fused loss, or compute_policy_loss
    start = copy.deepcopy(trainer.model)  # the weights the gradient is taken at
    trainer.model.train()
    mask = completion_mask.bool()
    rollout = Rollout(
        input_ids=torch.cat([prompt_ids, completion_ids], 1),
        attention_mask=torch.cat([torch.ones_like(prompt_ids), completion_mask], 1),
        response_ids=completion_ids,
        response_mask=mask,
        sampling_logprobs=torch.zeros(B, C),
        sampling_entropy=torch.zeros(B, C),
        prompt_index=torch.arange(B),
        completions=[""] * B,
        prompt_length=P,
        truncated=torch.zeros(B, dtype=torch.bool),
    )
    advantages = broadcast_to_tokens(seq_adv, mask)
    with torch.no_grad():  # the trainer's `learn`: rollout-policy statistics, then the filter
        old = trainer.forward.stats(trainer.forward.features(rollout), rollout.response_ids)
    keep, _ = select_tokens(trainer.loss_config, old, advantages, mask)
    old_logprobs = torch.where(mask, old.logprobs + noise, 0.0)
    old = TokenStats(old_logprobs, old.entropy, old.discriminator, old.expected_discriminator)
    batch = UpdateBatch(rollout, old, advantages, keep)
    metrics, _ = trainer._update(batch, torch.arange(B), None)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    return start, keep & mask, metrics["actor/loss"], grads, old_logprobs
