"""The verl plug-in through a Ray worker group (issue 13): verl's ``TrainingWorker`` in a Ray
actor process, which loads the plug-in through verl's entry point on its own (nothing of this
process's imports carries over). Its old-log-prob pass returns our statistics through verl's
dispatch and collect, equal to the same engine's in this process, and ``train_mini_batch`` with
the narrowed masks reports our loss-time metrics back."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("ray")

import ray
from verl_cpu import actor_config, engine_configs, flags, padded_batch

from entropy_dynamics.integrations.verl import STAT_KEYS, STATS_FLAG, FilterSettings
from entropy_dynamics.integrations.verl.policy_losses import loss_time_ppo_loss

HERE = Path(__file__).resolve().parent
B, P, C = 4, 5, 6


@pytest.fixture(scope="module")
def worker_group():
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import TrainingWorkerConfig
    from verl.workers.engine_workers import TrainingWorker

    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {
        "VERL_USE_EXTERNAL_MODULES": "verl_cpu_worker",
        "VERL_ENGINE_DEVICE": "cuda",  # verl registers its FSDP engine for cuda and npu only
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
    }
    ray.init(
        num_cpus=2, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False
    )
    model_config, engine_config, optimizer_config = engine_configs(micro_batch=2)
    config = TrainingWorkerConfig(
        model_type="language_model",
        model_config=model_config,
        engine_config=engine_config,
        optimizer_config=optimizer_config,
        checkpoint_config=CheckpointConfig(),
    )
    pool = RayResourcePool([1], use_gpu=False, max_colocate_count=1)
    group = RayWorkerGroup(
        pool, RayClassWithInitArgs(ray.remote(TrainingWorker), config=config), device_name="cpu"
    )
    group.reset()
    yield group
    ray.shutdown()


def _batch():
    gen = torch.Generator().manual_seed(5)
    prompt_mask = torch.arange(P) >= torch.tensor([0, 1, 2, 0]).unsqueeze(1)
    response_mask = torch.arange(C) < torch.tensor([6, 4, 5, 3]).unsqueeze(1)
    prompts = torch.randint(2, 40, (B, P), generator=gen) * prompt_mask
    responses = torch.randint(2, 40, (B, C), generator=gen) * response_mask
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5]).unsqueeze(1) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages


def test_ray_worker_computes_the_statistics_and_trains_with_the_filter(worker_group):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    tensors = _batch()
    data = padded_batch(*tensors, torch.zeros(B, C))
    flags(data, micro_batch_size_per_gpu=2)
    tu.assign_non_tensor(data, **{STATS_FLAG: True}, compute_loss=False, global_token_num=None)
    output = worker_group.infer_batch(data)
    output = output.get() if hasattr(output, "get") else output
    got = {k: no_padding_2_padding(output[k], data) for k in STAT_KEYS}
    reference = {k: no_padding_2_padding(v, data) for k, v in _local_stats(tensors).items()}
    mask = tensors[3]
    for key in STAT_KEYS:
        torch.testing.assert_close(got[key][mask], reference[key][mask], rtol=1e-5, atol=1e-6)

    actor = actor_config(B, 2)
    settings = FilterSettings("clip_b", {"mu": 0.3})
    worker_group.set_loss_fn(partial(loss_time_ppo_loss, config=actor, settings=settings))
    train = padded_batch(*tensors, no_padding_2_padding(output["log_probs"], data))
    flags(train, micro_batch_size_per_gpu=2)
    tu.assign_non_tensor(train, mini_batch_size=B, epochs=1, seed=0)
    metrics = worker_group.train_mini_batch(train)
    metrics = metrics.get() if hasattr(metrics, "get") else metrics
    metrics = tu.get(metrics, "metrics")
    assert "clip_b/frac_clipped" in metrics and "entropy/mean" in metrics


def _local_stats(tensors):
    """The same statistics from an engine in this process (the CPU platform, no Ray)."""
    from verl.utils import tensordict_utils as tu
    from verl_cpu import build_engine

    engine = build_engine(micro_batch=2)
    data = padded_batch(*tensors, torch.zeros(B, C))
    flags(data, micro_batch_size_per_gpu=2)
    tu.assign_non_tensor(data, **{STATS_FLAG: True})
    with engine.eval_mode():
        output = engine.infer_batch(data, loss_function=None)["model_output"]
    return {k: output[k] for k in STAT_KEYS}
