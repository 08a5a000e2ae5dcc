"""Our policy losses in verl's registry and the loss-time filter (``integrations/verl/
policy_losses.py``; issue 13): each loss registered as ``ed_<name>``, one a closed-loop method needs
refusing to run, verl's actor options mapped, micro-batch aggregates rescaled to verl's global ones,
and — in verl's real engine — the filter applied per micro-batch inside verl's ``ppo_loss``."""

from __future__ import annotations

import json
import types
from functools import partial

import pytest
import torch
from verl_batch import B, C, small_batch

from entropy_dynamics.integrations.verl import LOSS_TIME_ENV, STAT_KEYS, FilterSettings, decide_keep
from entropy_dynamics.integrations.verl.policy_losses import (
    global_share,
    patch_engine_workers,
    register_policy_losses,
    verl_loss_config,
)
from entropy_dynamics.losses import available_policy_losses


class _Config(dict):
    """verl's ``ActorConfig`` as the losses read it: attributes and ``get``."""

    __getattr__ = dict.__getitem__


def test_every_loss_is_registered_and_a_controlled_one_refuses_to_run() -> None:
    registry = {}

    def register_policy_loss(name):
        return lambda fn: registry.setdefault(name, fn)

    register_policy_losses(types.SimpleNamespace(register_policy_loss=register_policy_loss))
    assert sorted(registry) == [f"ed_{name}" for name in available_policy_losses()]
    assert all(fn.__name__ == name for name, fn in registry.items())
    with pytest.raises(ValueError, match="'entropic' loss needs the controller"):
        registry["ed_entropic"]()
    config = _Config(
        clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=0.28, clip_ratio_c=3.0,
        policy_loss=_Config(), global_batch_info={},
    )  # fmt: skip
    ones = torch.ones(2, 3)
    loss, metrics = registry["ed_ppo"](ones.log(), ones.log(), ones, ones.bool(), config=config)
    assert loss.item() == pytest.approx(-1.0)  # ratio 1, A = 1, token-mean, one process
    assert "actor/pg_loss" not in metrics  # verl's ppo_loss reports it itself


def test_verl_options_map_onto_our_loss_config() -> None:
    config = _Config(
        clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=0.28, clip_ratio_c=10.0,
        policy_loss=_Config(kl_cov_ratio=0.01, ppo_kl_coef=2.0), loss_scale_factor=64,
    )  # fmt: skip
    ppo = verl_loss_config("ppo", config, "token-mean")
    assert (ppo.eps_low, ppo.eps_high, ppo.dual_clip_c) == (0.2, 0.28, 10.0)
    assert ppo.loss_agg_norm is None  # the constant applies to seq-mean-token-sum-norm only
    kl_cov = verl_loss_config("kl_cov", config, "seq-mean-token-sum-norm")
    assert (kl_cov.kl_cov_ratio, kl_cov.kl_cov_coef, kl_cov.loss_agg_norm) == (0.01, 2.0, 64.0)


def test_micro_batch_aggregates_rescale_to_verls_global_ones() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # 3 tokens, 2 sequences with one
    info = {"dp_size": 2, "batch_num_tokens": 12, "global_batch_size": 8}
    assert global_share("token-mean", mask, info).item() == pytest.approx(3 * 2 / 12)
    assert global_share("seq-mean-token-mean", mask, info).item() == pytest.approx(2 * 2 / 8)
    assert global_share("seq-mean-token-sum-norm", mask, info).item() == pytest.approx(2 / 8)
    # without global counts verl normalises locally
    assert global_share("token-mean", mask, {}).item() == 1.0
    assert global_share("seq-mean-token-sum-norm", mask, {}).item() == pytest.approx(1 / 2)


def test_a_loss_time_setting_that_is_not_json_is_refused(monkeypatch) -> None:
    monkeypatch.setenv(LOSS_TIME_ENV, "clip_b")
    with pytest.raises(ValueError, match="JSON object"):
        patch_engine_workers(types.SimpleNamespace(ppo_loss=None))


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("verl")
    from verl_cpu import build_engine

    return build_engine()


@pytest.fixture(scope="module")
def data():
    return small_batch()


def test_loss_time_fallback_filters_each_micro_batch_inside_ppo_loss(engine, data, monkeypatch):
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding
    from verl_cpu import actor_config, flags, padded_batch

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
