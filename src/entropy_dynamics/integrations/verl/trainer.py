"""The filter on the whole batch in verl's v1 PPO trainer (``verl.trainer.ppo.v1``, verl 0.9).

verl's v1 trainers (``trainer.v1.trainer_mode`` sync / colocate_async / separate_async) share
``PPOTrainer._compute_old_log_prob`` and ``PPOTrainer._compute_advantage``, and keep every field
of a batch in TransferQueue. When the config holds an ``entropy_dynamics`` node with a filter,
the wrapped methods

1. ask the rollout policy's forward (the old-log-prob pass verl runs anyway) for our statistics,
   with the non-tensor flag ``calculate_ed_stats`` — no extra forward — and store their response
   part next to ``old_log_probs``;
2. after verl computed the advantages, decide the keep-mask on the whole batch of the step with
   :func:`~entropy_dynamics.integrations.verl.filtering.decide_keep` (the paper's and the authors'
   semantics: rollout policy, batch statistics, before mini-batching) and narrow **both**
   ``response_mask`` and ``loss_mask``, so that dropped tokens leave the policy loss *and* verl's
   token-mean denominator (``batch_num_tokens`` counts ``loss_mask``), as verl itself narrows
   ``response_mask`` for rollout-correction rejection;
3. add ``entropy/mean``, ``discriminator/*`` and the filter's metrics (``clip_b/*``, ...) to the
   step's metrics, hence to every logger verl writes to.

A closed-loop method (``+entropy_dynamics.filter=entropy_target`` with
``+entropy_dynamics.control.*``, or ``+entropy_dynamics.method=adaptive_entropy``) decides step 2
through our trainer's controller; ``_update_actor`` carries ``adaptive_entropy``'s coefficient to
the workers and, after the update, runs the dynamics monitor (``+entropy_dynamics.monitor_every``)
and the controller's ``end``; ``_save_checkpoint`` / ``_load_checkpoint`` write and read the
controller's state in the step's directory (:mod:`~entropy_dynamics.integrations.verl.control`).

Without the node (or with nothing asked of it) every method is verl's own.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

from entropy_dynamics.integrations.verl.control import (
    INFER_INFO,
    actor_extra_info,
    decide_step,
    finish_step,
    load_state,
    save_state,
)
from entropy_dynamics.integrations.verl.engine import STAT_KEYS, STATS_FLAG
from entropy_dynamics.integrations.verl.filtering import FilterSettings

__all__ = ["patch_v1_trainer"]

logger = logging.getLogger(__name__)


def _settings(trainer: Any) -> FilterSettings | None:
    settings = FilterSettings.from_config(trainer.config)
    if settings is not None:
        correction = trainer.config.algorithm.get("rollout_correction", None)
        if correction and correction.get("bypass_mode", False):
            raise ValueError(
                "entropy_dynamics: algorithm.rollout_correction.bypass_mode=True skips the "
                "old-log-prob forward, which is where the filter's statistics come from; turn "
                "bypass_mode off or remove the entropy_dynamics filter"
            )
        adaptive = settings.method == "adaptive_entropy"
        actor = trainer.config.actor_rollout_ref.actor if adaptive else {}
        if adaptive and not (actor.get("calculate_entropy") or actor.get("entropy_coeff")):
            raise ValueError(
                "entropy_dynamics: adaptive_entropy sets the entropy bonus's coefficient, but "
                "verl computes no entropy in the actor update; set "
                "actor_rollout_ref.actor.calculate_entropy=True"
            )
    return settings


def store_response_stats(tq: Any, batch: Any) -> Any:
    """Replace the engine's whole-sequence statistics in TransferQueue by their response part
    (as verl does for ``entropy``)."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_from_nested

    fields = [*STAT_KEYS, "response_mask"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    response = {k: response_from_nested(data[k], data["response_mask"]) for k in STAT_KEYS}
    return tq.kv_batch_put(
        keys=batch.keys,
        partition_id=batch.partition_id,
        fields=TensorDict(response, batch_size=len(batch)),
    )


def narrow_masks(
    trainer: Any, tq: Any, batch: Any, settings: FilterSettings, metrics: dict
) -> Any:
    """Decide the keep-mask on the whole batch (through the run's controller) and narrow
    ``response_mask`` and ``loss_mask``."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_to_nested

    fields = ["old_log_probs", *STAT_KEYS, "advantages", "response_mask", "loss_mask"]
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    nested_mask = data["response_mask"]  # jagged (B, j): the response lengths
    padded = data.to_padded_tensor()  # (B, T)
    keep, filter_metrics = decide_step(trainer, settings, dict(padded.items()))
    metrics.update({key: float(value) for key, value in filter_metrics.items()})
    if settings.filter == "none":  # a controller without a filter (adaptive_entropy): no narrowing
        return batch
    narrowed = {
        name: response_to_nested(padded[name] * keep.to(padded[name].dtype), nested_mask)
        for name in ("response_mask", "loss_mask")
    }
    return tq.kv_batch_put(
        keys=batch.keys,
        partition_id=batch.partition_id,
        fields=TensorDict(narrowed, batch_size=len(batch)),
    )


def patch_v1_trainer(module: ModuleType) -> None:
    """Wrap ``module.PPOTrainer``'s old-log-prob, advantage, actor-update and checkpoint steps
    (``module`` is ``verl.trainer.ppo.v1.trainer_base``); verl's own behaviour without the
    node."""
    cls = module.PPOTrainer
    if getattr(cls._compute_advantage, "_entropy_dynamics", False):
        return
    compute_old_log_prob = cls._compute_old_log_prob
    compute_advantage = cls._compute_advantage
    update_actor, save_checkpoint = cls._update_actor, cls._save_checkpoint
    load_checkpoint = cls._load_checkpoint

    @functools.wraps(compute_old_log_prob)
    def _compute_old_log_prob(self, batch, metrics):
        if _settings(self) is None:
            return compute_old_log_prob(self, batch, metrics)
        sent = batch
        sent.extra_info[STATS_FLAG] = True
        try:
            batch = compute_old_log_prob(self, sent, metrics)
        finally:  # the later passes (reference, update) need no statistics
            sent.extra_info.pop(STATS_FLAG, None)
        setattr(self, INFER_INFO, dict(sent.extra_info))  # the monitor's pass repeats its flags
        return store_response_stats(module.tq, batch)

    @functools.wraps(compute_advantage)
    def _compute_advantage(self, batch, metrics):
        batch = compute_advantage(self, batch, metrics)
        settings = _settings(self)
        if settings is None:
            return batch
        return narrow_masks(self, module.tq, batch, settings, metrics)

    @functools.wraps(update_actor)
    def _update_actor(self, batch, metrics):
        flags = actor_extra_info(self) if _settings(self) is not None else {}
        batch.extra_info.update(flags)
        try:
            batch = update_actor(self, batch, metrics)
        finally:
            for key in flags:
                batch.extra_info.pop(key, None)
        if _settings(self) is not None:
            finish_step(self, module.tq, batch, metrics)
        return batch

    @functools.wraps(save_checkpoint)
    def _save_checkpoint(self, *args, **kwargs):
        result = save_checkpoint(self, *args, **kwargs)
        if _settings(self) is not None:
            save_state(self)
        return result

    @functools.wraps(load_checkpoint)
    def _load_checkpoint(self, *args, **kwargs):
        result = load_checkpoint(self, *args, **kwargs)
        if _settings(self) is not None:
            load_state(self)
        return result

    wrapped = (_compute_old_log_prob, _compute_advantage, _update_actor, _save_checkpoint,
               _load_checkpoint)  # fmt: skip
    for method in wrapped:
        method._entropy_dynamics = True  # type: ignore[attr-defined]
        setattr(cls, method.__name__, method)
    logger.info("entropy_dynamics: verl's v1 PPOTrainer applies the configured token filter")
