"""A stand-in for verl 0.9's v1 trainer module (``verl.trainer.ppo.v1.trainer_base``) around the
real FSDP engine on CPU, for tests only: TransferQueue's key-value calls on one batch in memory
(the real one needs a Ray controller and storage units), and a ``PPOTrainer`` whose old-log-prob
pass, advantage step, actor update and checkpoints do what verl's do with that queue."""

from __future__ import annotations

import os
import types
from functools import partial

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from transfer_queue import KVBatchMeta

__all__ = ["FakeTransferQueue", "nested", "run_step", "trainer_module"]


class FakeTransferQueue:
    """TransferQueue's key-value calls on one batch held in memory."""

    def __init__(self, fields: dict[str, torch.Tensor]) -> None:
        self.store = dict(fields)

    def kv_batch_get(self, keys, partition_id, select_fields):
        return TensorDict({f: self.store[f] for f in select_fields}, batch_size=len(keys))

    def kv_batch_put(self, keys, partition_id, fields):
        self.store.update(dict(fields.items()))
        return KVBatchMeta(keys=list(keys), tags=[{}] * len(keys), partition_id=partition_id)


def nested(padded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` padded rows → jagged rows of each row's ``mask.sum()`` leading entries."""
    return torch.nested.as_nested_tensor(
        [row[: int(n)] for row, n in zip(padded, mask.sum(1), strict=True)], layout=torch.jagged
    )


def trainer_module(engine, rollout, tq, train_data=None, loss=None, actor_config=None):
    """A module with ``PPOTrainer`` and ``tq``. ``rollout``: the no-padding batch the engine's
    passes read (its non-tensor flags are the batch's ``extra_info``); ``train_data()``: the
    update's batch from the queue's current fields, trained with ``loss`` (verl's ``ppo_loss``
    signature) bound to ``actor_config``."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import response_from_nested

    class Workers:  # actor_rollout_wg
        def compute_log_prob(self, batch):
            tu.assign_non_tensor(rollout, **batch.extra_info)
            with engine.eval_mode():
                output = engine.infer_batch(rollout, loss_function=None)["model_output"]
            tq.store.update(output)  # every output field, as tqbridge does
            return batch

        def update_actor(self, batch):
            data = train_data()
            tu.assign_non_tensor(data, **batch.extra_info)
            with engine.train_mode():
                return engine.train_batch(data, loss_function=partial(loss, config=actor_config))

    class PPOTrainer:
        def __init__(self, config):
            self.config = OmegaConf.create(config)
            self.seen_flags = []
            self.global_steps, self.total_training_steps = 0, 4
            self.actor_rollout_wg = Workers()

        def _compute_old_log_prob(self, batch, metrics):
            self.seen_flags.append(dict(batch.extra_info))
            batch.extra_info.update({"calculate_entropy": True, "compute_loss": False})
            self.actor_rollout_wg.compute_log_prob(batch)
            mask = tq.store["response_mask"]
            tq.store["old_log_probs"] = response_from_nested(tq.store["log_probs"], mask)
            tq.store["entropy"] = response_from_nested(tq.store["entropy"], mask)
            return batch

        def _compute_advantage(self, batch, metrics):
            tq.store["advantages"] = tq.store["response_advantages"]
            return batch

        def _update_actor(self, batch, metrics):
            batch.extra_info.update({"calculate_entropy": True})
            self.actor_rollout_wg.update_actor(batch)
            return batch

        def _save_checkpoint(self):
            folder = os.path.join(
                self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"
            )
            os.makedirs(folder, exist_ok=True)

        def _load_checkpoint(self):
            self.global_steps = 0
            path = self.config.trainer.get("resume_from_path")
            if self.config.trainer.get("resume_mode") == "resume_path" and path:
                self.global_steps = int(str(path).split("global_step_")[-1])

    return types.SimpleNamespace(PPOTrainer=PPOTrainer, tq=tq)


def run_step(trainer, batch_size: int, save: bool = False) -> dict:
    """One step of verl's ``fit`` loop through the (patched) trainer: its metrics."""
    trainer.global_steps += 1
    batch = KVBatchMeta(
        keys=[str(i) for i in range(batch_size)], tags=[{}] * batch_size, partition_id="train"
    )
    metrics: dict = {}
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    trainer._update_actor(batch, metrics)
    if save:
        trainer._save_checkpoint()
    return metrics
