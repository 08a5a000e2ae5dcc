"""The TRL plug-in against our trainer's loss path, on one fixed batch (issue 12).

Same weights, token ids, advantages and old log-probs on both sides. Ours: the trainer's own
``forward`` statistics of the rollout policy, ``select_tokens`` on the whole batch (as its
``learn``), then its own ``_update`` (the fused policy loss, or ``compute_policy_loss``).
TRL's: ``EntropyGRPOTrainer.rollout_stats`` and ``apply_filter`` on the generation batch, then
TRL's unmodified ``compute_loss``. The keep-mask, the loss and every parameter gradient must
agree, for ``grpo``, ``clip_b`` and ``clip_v``, with TRL's ``loss_type`` mapped by
``trl_aggregation``.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from engine_batch import FILTERS, B, C, fixed_batch, our_update

from entropy_dynamics.integrations.trl import (
    EntropyGRPOConfig,
    EntropyGRPOTrainer,
    trl_aggregation,
)


@pytest.fixture(scope="module")
def batch():
    return fixed_batch()


def _ours(tmp_path, method: str, loss_type: str, fused: bool, batch):
    agg_mode, norm = trl_aggregation(loss_type, B, C)
    return our_update(tmp_path, method, agg_mode, norm, fused, batch)


def _trl(tmp_path, model, method: str, loss_type: str, batch, old_logprobs):
    prompt_ids, completion_ids, completion_mask, seq_adv, _ = batch
    name, options = FILTERS[method]
    args = EntropyGRPOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type=loss_type,
        entropy_filter=name,
        entropy_filter_options=options,
        per_device_train_batch_size=B,
        num_generations=B,
        max_completion_length=C,
        bf16=False,
        report_to="none",
    )
    data = Dataset.from_list([{"prompt": "1 2 -> 3: "}] * B)
    trainer = EntropyGRPOTrainer(
        model=copy.deepcopy(model),  # the weights our side started from
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=data,
    )
    trainer.model.zero_grad(set_to_none=True)
    output = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": seq_adv,
        "num_items_in_batch": completion_mask.sum(),
        "old_per_token_logps": old_logprobs,
    }
    output = trainer.apply_filter(output, trainer.rollout_stats(output))
    trainer.current_gradient_accumulation_steps = 1  # what TRL's training loop sets
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, output)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    keep = (output["tool_mask"] * completion_mask).bool()
    return trainer, keep, loss.detach(), grads


@pytest.mark.parametrize("fused", [True, False], ids=["fused-loss", "compute_policy_loss"])
@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("method", ["grpo", "clip_b", "clip_v"])
def test_plugin_keep_mask_loss_and_gradients_equal_our_trainer(
    tmp_path, batch, method, loss_type, fused
):
    model, keep, loss, grads, old_logprobs = _ours(tmp_path, method, loss_type, fused, batch)
    trainer, trl_keep, trl_loss, trl_grads = _trl(
        tmp_path, model, method, loss_type, batch, old_logprobs
    )
    mask = batch[2].bool()
    if method != "grpo":  # the comparison must involve dropped tokens
        assert (mask & ~keep).any()
    if loss_type == "grpo":  # trl_aggregation's condition for grpo ↔ seq-mean-token-mean
        assert keep.any(-1).all()
    torch.testing.assert_close(trl_keep, keep, rtol=0, atol=0)
    torch.testing.assert_close(trl_loss, loss, rtol=1e-5, atol=1e-6)
    assert set(trl_grads) == set(grads)
    for name, grad in grads.items():  # float32: two kernels, two summation orders
        atol = 1e-4 * float(grad.abs().max())
        torch.testing.assert_close(
            trl_grads[name], grad, rtol=1e-3, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
        )
    kept_fraction = trainer._metrics["train"]
    if method != "grpo":
        key = f"{method}/frac_clipped"
        expected = float((mask & ~keep).sum() / mask.sum())
        assert kept_fraction[key] == pytest.approx([expected])

