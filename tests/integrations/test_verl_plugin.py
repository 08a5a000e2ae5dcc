"""How the verl plug-in loads and acts outside the engine's forward (issue 13).

- verl loads it through the ``verl.plugins`` entry point in a fresh process (and only then, or
  through ``VERL_USE_EXTERNAL_MODULES``), and it patches verl's modules lazily;
- the v1 trainer patch asks the old-log-prob pass for the statistics, stores their response part
  and narrows ``response_mask`` and ``loss_mask`` with the whole batch's keep-mask (a stand-in for
  TransferQueue and the worker group around the real engine); without a filter it does nothing;
- the loss-time fallback applies the filter per micro-batch inside verl's ``ppo_loss``;
- bad settings are refused with what to change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from functools import partial

import pytest
import torch

pytest.importorskip("verl")

from omegaconf import OmegaConf
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl_cpu import actor_config, build_engine, flags, padded_batch

from entropy_dynamics.integrations.verl import (
    LOSS_TIME_ENV,
    STAT_KEYS,
    STATS_FLAG,
    FilterSettings,
    decide_keep,
)
from entropy_dynamics.integrations.verl.policy_losses import patch_engine_workers
from entropy_dynamics.integrations.verl.trainer import patch_v1_trainer

B, P, C = 6, 5, 8
PROBE = (  # is our loss registered before this process imports our module itself?
    "import verl, verl.trainer.ppo.core_algos as c; r = 'ed_ppo' in c.POLICY_LOSS_REGISTRY; "
    "import entropy_dynamics.integrations.verl as p; print(int(r), sorted(p.PATCHED))"
)


def _probe(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_verl_loads_the_plugin_through_its_entry_point_in_a_fresh_process() -> None:
    assert _probe().startswith("1 ['verl.trainer.ppo.core_algos']")
    # verl's switch turns entry points off; VERL_USE_EXTERNAL_MODULES loads it on any verl
    assert _probe(VERL_USE_EXTERNAL_PLUGINS="none").startswith("0")
    modules = "entropy_dynamics.integrations.verl"
    assert _probe(VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES=modules)[0] == "1"


def test_the_real_v1_trainer_and_engine_are_patched() -> None:
    from verl.trainer.ppo.v1 import trainer_base
    from verl.workers.engine.fsdp import transformer_impl

    for method in ("_compute_old_log_prob", "_compute_advantage"):
        assert getattr(trainer_base.PPOTrainer, method)._entropy_dynamics
    assert transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs._entropy_dynamics


@pytest.fixture(scope="module")
def engine():
    return build_engine()


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    prompt_mask = torch.arange(P) >= torch.tensor([0, 2, 1, 0, 3, 0]).unsqueeze(1)
    prompts = torch.randint(2, 40, (B, P), generator=gen) * prompt_mask
    response_mask = torch.arange(C) < torch.tensor([8, 5, 3, 8, 6, 7]).unsqueeze(1)
    responses = torch.randint(2, 40, (B, C), generator=gen) * response_mask
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.5, -1.5]).unsqueeze(1) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages


class FakeTransferQueue:
    """TransferQueue's key-value calls on one batch held in memory (the real one needs a Ray
    controller and storage units)."""

    def __init__(self, fields: dict[str, torch.Tensor]) -> None:
        self.store = dict(fields)

    def kv_batch_get(self, keys, partition_id, select_fields):
        return TensorDict({f: self.store[f] for f in select_fields}, batch_size=len(keys))

    def kv_batch_put(self, keys, partition_id, fields):
        self.store.update(dict(fields.items()))
        return KVBatchMeta(keys=list(keys), tags=[{}] * len(keys), partition_id=partition_id)


def _trainer_module(engine, rollout, tq):
    """A stand-in for ``verl.trainer.ppo.v1.trainer_base`` whose PPOTrainer does what verl's
    does with TransferQueue: the old-log-prob pass runs the real engine with the batch's
    extra_info as non-tensor flags and stores every output field."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import response_from_nested

    class PPOTrainer:
        def __init__(self, config):
            self.config = OmegaConf.create(config)
            self.seen_flags = []

        def _compute_old_log_prob(self, batch, metrics):
            self.seen_flags.append(dict(batch.extra_info))
            tu.assign_non_tensor(rollout, **batch.extra_info)
            with engine.eval_mode():
                output = engine.infer_batch(rollout, loss_function=None)["model_output"]
            tq.store.update(output)
            tq.store["old_log_probs"] = response_from_nested(
                output["log_probs"], tq.store["response_mask"]
            )
            return batch

        def _compute_advantage(self, batch, metrics):
            tq.store["advantages"] = tq.store["response_advantages"]
            return batch

    return types.SimpleNamespace(PPOTrainer=PPOTrainer, tq=tq)


def _nested(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nested.as_nested_tensor(
        [row[: int(n)] for row, n in zip(padded, mask.sum(1), strict=True)], layout=torch.jagged
    )


@pytest.mark.parametrize("with_filter", [True, False], ids=["clip_b", "no-filter"])
def test_v1_trainer_patch_narrows_both_masks_on_the_whole_batch(engine, data, with_filter):
    prompts, prompt_mask, responses, response_mask, advantages = data
    rollout = padded_batch(
        prompts, prompt_mask, responses, response_mask, advantages, torch.zeros(B, C)
    )
    flags(rollout, micro_batch_size_per_gpu=3)
    tq = FakeTransferQueue(
        {
            "response_mask": _nested(response_mask.long(), response_mask),
            "loss_mask": _nested(response_mask.long(), response_mask),
            "response_advantages": _nested(advantages.float(), response_mask),
        }
    )
    module = _trainer_module(engine, rollout, tq)
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


def test_loss_time_fallback_filters_each_micro_batch_inside_ppo_loss(engine, data, monkeypatch):
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    settings = {"filter": "clip_b", "filter_options": {"mu": 0.3}}
    monkeypatch.setenv(LOSS_TIME_ENV, json.dumps(settings))
    workers = types.SimpleNamespace(ppo_loss=ppo_loss)
    patch_engine_workers(workers)  # what the plug-in does to verl.workers.engine_workers
    config = actor_config(B, 3)
    prompts, prompt_mask, responses, response_mask, advantages = data
    train = padded_batch(
        prompts, prompt_mask, responses, response_mask, advantages, torch.zeros(B, C)
    )
    flags(train, micro_batch_size_per_gpu=3)

    reference = []

    def by_hand(config, model_output, data, dp_group=None):  # the filter, then verl's loss
        padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
        batch = {k: padded[k] for k in ("response_mask", "old_log_probs", "advantages")}
        batch.update({k: no_padding_2_padding(model_output[k], data) for k in STAT_KEYS})
        keep, _ = decide_keep(FilterSettings(**settings).loss_config(), batch)
        reference.append(int((batch["response_mask"].bool() & ~keep).sum()))
        data = data.copy()
        data["response_mask"] = padded["response_mask"] * keep
        return ppo_loss(config, model_output, data, dp_group)

    by_hand.needs_entropy_dynamics_stats = True
    with engine.eval_mode():  # forward only: the two losses on the same weights
        got = engine.infer_batch(train, loss_function=partial(workers.ppo_loss, config=config))
        want = engine.infer_batch(train, loss_function=partial(by_hand, config=config))
    assert sum(reference) > 0  # tokens were dropped
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    assert "clip_b/frac_clipped" in got["metrics"]


def test_bad_settings_are_refused_with_what_to_change(monkeypatch) -> None:
    with pytest.raises(ValueError, match="registered filters"):
        FilterSettings("clip_z")
    with pytest.raises(ValueError, match="has no option 'tau'"):
        FilterSettings("clip_b", {"tau": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        FilterSettings.from_config({"entropy_dynamics": {"filter": "clip_b", "mu": 2.5}})
    assert FilterSettings.from_config({"entropy_dynamics": {"filter": "none"}}) is None
    assert FilterSettings.from_config({}) is None
    monkeypatch.setenv(LOSS_TIME_ENV, "clip_b")
    with pytest.raises(ValueError, match="JSON object"):
        patch_engine_workers(types.SimpleNamespace(ppo_loss=None))
