"""The filter on the whole batch in verl's v1 trainer (``integrations/verl/trainer.py``; issue 13):
the patch asks the old-log-prob pass for the statistics, stores their response part and narrows
``response_mask`` and ``loss_mask`` with the whole batch's keep-mask (a stand-in for TransferQueue
and the worker group around the real engine: ``verl_v1``); without a filter it does nothing."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl")

from transfer_queue import KVBatchMeta
from verl_batch import B, C, small_batch
from verl_cpu import build_engine, flags, padded_batch
from verl_v1 import FakeTransferQueue, nested, trainer_module

from entropy_dynamics.integrations.verl import STAT_KEYS, STATS_FLAG, FilterSettings, decide_keep
from entropy_dynamics.integrations.verl.trainer import patch_v1_trainer


@pytest.fixture(scope="module")
def engine():
    return build_engine()


@pytest.fixture(scope="module")
def data():
    return small_batch()


@pytest.mark.parametrize("with_filter", [True, False], ids=["clip_b", "no-filter"])
def test_v1_trainer_patch_narrows_both_masks_on_the_whole_batch(engine, data, with_filter):
    prompts, prompt_mask, responses, response_mask, advantages = data
    rollout = padded_batch(
        prompts, prompt_mask, responses, response_mask, advantages, torch.zeros(B, C)
    )
    flags(rollout, micro_batch_size_per_gpu=3)
    tq = FakeTransferQueue(
        {
            "response_mask": nested(response_mask.long(), response_mask),
            "loss_mask": nested(response_mask.long(), response_mask),
            "response_advantages": nested(advantages.float(), response_mask),
        }
    )
    module = trainer_module(engine, rollout, tq)
    patch_v1_trainer(module)
    config = {"algorithm": {"rollout_correction": None}}
    if with_filter:
        config["entropy_dynamics"] = {"filter": "clip_b", "filter_options": {"mu": 0.5}}
    trainer = module.PPOTrainer(config)
    batch = KVBatchMeta(keys=[str(i) for i in range(B)], tags=[{}] * B, partition_id="train")
    metrics: dict = {}
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    masks = {k: tq.store[k].to_padded_tensor(0) for k in ("response_mask", "loss_mask")}
    if not with_filter:
        assert trainer.seen_flags == [{}] and not metrics
        assert all(torch.equal(m.bool(), response_mask) for m in masks.values())
        return
    assert trainer.seen_flags == [{STATS_FLAG: True}]  # asked once, then removed
    assert STATS_FLAG not in batch.extra_info
    padded = {k: tq.store[k].to_padded_tensor(0) for k in ("old_log_probs", *STAT_KEYS)}
    padded.update(advantages=advantages.float(), response_mask=response_mask)
    keep, expected = decide_keep(FilterSettings("clip_b", {"mu": 0.5}).loss_config(), padded)
    assert (response_mask & ~keep).any() and keep.any()
    for mask in masks.values():
        torch.testing.assert_close(mask.bool(), keep, rtol=0, atol=0)
    assert metrics["clip_b/frac_clipped"] == pytest.approx(float(expected["clip_b/frac_clipped"]))
    assert {"entropy/mean", "discriminator/mean"} <= set(metrics)
