"""Our policy losses in verl's registry, and the loss-time filter for verl's legacy trainer.

**Registered losses.** Every loss of :func:`entropy_dynamics.losses.available_policy_losses` is
registered in verl's ``POLICY_LOSS_REGISTRY`` as ``ed_<name>`` (e.g. ``ed_ppo``, ``ed_kl_cov``) and
is selected by ``actor_rollout_ref.actor.policy_loss.loss_mode``. A loss that only closed-loop
methods use (:func:`entropy_dynamics.methods.controlled_loss`: ``entropic``, whose weight ``α``
its controller sets each step) is registered to refuse to run with a ``ValueError``: the
driver runs ``entropy_target`` and ``adaptive_entropy`` only, and without its controller it would
silently compute plain ``ed_ppo``.
Each of the others maps verl's actor options to
:class:`~entropy_dynamics.losses.PolicyLossConfig` (``clip_ratio_low/high`` → ``eps_low/high``,
``clip_ratio_c`` → ``dual_clip_c``, ``loss_agg_mode``, ``policy_loss.kl_cov_ratio`` /
``ppo_kl_coef``), runs :func:`~entropy_dynamics.losses.compute_policy_loss` on the micro-batch
with ``response_mask`` as the keep-mask (the whole-batch filter already narrowed it), and rescales
its micro-batch aggregate to verl's global one (``batch_num_tokens``, ``global_batch_size``,
``dp_size`` of ``config.global_batch_info``), so that gradient accumulation and data parallelism
add up as with verl's own losses. verl's ``ppo_loss`` adds the entropy bonus and the KL loss.

**The step's entropy coefficient.** Every worker's ``ppo_loss`` is wrapped
(:func:`with_step_entropy_coeff`): when the actor update carries the non-tensor flag
:data:`~entropy_dynamics.integrations.verl.control.ENTROPY_COEFF_FLAG` (``adaptive_entropy``'s
controller on the driver sets it each step), it replaces ``actor.entropy_coeff`` for that update;
without it the loss is verl's.

**Loss-time fallback** (:func:`loss_time_ppo_loss`), for trainers that drop the statistics before
the advantage step (verl's legacy ``RayPPOTrainer``, ``trainer.use_v1=false``): verl's
``ppo_loss`` preceded by the filter on each micro-batch — statistics of the *current* policy's
forward (equal to the rollout policy's on the first mini-batch of an on-policy step), moments per
micro-batch and per rank, and dropped tokens still counted in verl's ``batch_num_tokens`` (it is
computed per mini-batch before the loss runs). Enable it in every worker with the environment
variable :data:`LOSS_TIME_ENV` (a JSON object, e.g. ``{"filter": "clip_b", "filter_options":
{"mu": 2.5}}``), passed to Ray workers through ``ray_kwargs.ray_init.runtime_env.env_vars``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.integrations.verl.control import ENTROPY_COEFF_FLAG
from entropy_dynamics.integrations.verl.engine import STAT_KEYS
from entropy_dynamics.integrations.verl.filtering import CONFIG_KEY, FilterSettings, decide_keep
from entropy_dynamics.losses import (
    PolicyLossConfig,
    PolicyLossInputs,
    available_policy_losses,
    compute_policy_loss,
)
from entropy_dynamics.methods import controlled_loss
from entropy_dynamics.stats import TokenStats

__all__ = [
    "LOSS_TIME_ENV",
    "global_share",
    "loss_time_ppo_loss",
    "patch_engine_workers",
    "register_policy_losses",
    "verl_loss_config",
]

LOSS_TIME_ENV = "ENTROPY_DYNAMICS_VERL_LOSS_TIME_FILTER"
"""Environment variable that turns on :func:`loss_time_ppo_loss` in verl's engine workers."""
_OWN_KEYS = ("actor/pg_loss", "actor/entropy")  # verl's ppo_loss reports these itself


def verl_loss_config(name: str, config: Any, loss_agg_mode: str) -> PolicyLossConfig:
    """Our :class:`PolicyLossConfig` of loss ``name`` from verl's ``ActorConfig``."""
    clip = config.clip_ratio
    low = config.clip_ratio_low if config.clip_ratio_low is not None else clip
    high = config.clip_ratio_high if config.clip_ratio_high is not None else clip
    policy_loss = config.policy_loss
    norm = config.get("loss_scale_factor", None) if hasattr(config, "get") else None
    return PolicyLossConfig(
        loss=name,
        eps_low=float(low),
        eps_high=float(high),
        dual_clip_c=float(config.get("clip_ratio_c", 3.0)),  # verl's vanilla always dual-clips
        agg_mode=loss_agg_mode,
        loss_agg_norm=float(norm) if norm and loss_agg_mode == "seq-mean-token-sum-norm" else None,
        kl_cov_ratio=float(policy_loss.get("kl_cov_ratio", 2e-4)),
        kl_cov_coef=float(policy_loss.get("ppo_kl_coef", 1.0)),
    )


def global_share(agg_mode: str, mask: Tensor, batch_info: dict[str, Any]) -> Tensor:
    """Factor from the micro-batch aggregate of :func:`entropy_dynamics.aggregation.aggregate`
    to verl's ``agg_loss`` with global normalisation (``batch_info``: ``dp_size``,
    ``batch_num_tokens``, ``global_batch_size`` as verl's ``ppo_loss`` sets them).

    - ``token-mean``: local kept tokens × dp_size / global kept tokens;
    - ``seq-mean-token-{mean,sum}``: local sequences with a kept token × dp_size / global
      sequences (verl counts every sequence of the mini-batch in ``global_batch_size``);
    - ``seq-mean-token-sum-norm``: dp_size / global sequences (verl divides by both the sequence
      count and the constant; ours by the constant only).

    Without global counts (one process, verl's defaults) verl normalises locally: factor 1, and
    for ``seq-mean-token-sum-norm`` 1 / (local sequences with a token).
    """
    m = mask.bool()
    dp_size = int(batch_info.get("dp_size") or 1)
    seqs = m.any(-1).sum().to(torch.float64)  # sequences with a kept token
    if agg_mode == "token-mean":
        whole = batch_info.get("batch_num_tokens")
        return torch.ones(()) if whole is None else m.sum() * dp_size / float(whole)
    whole = batch_info.get("global_batch_size")
    if agg_mode == "seq-mean-token-sum-norm":
        return 1.0 / seqs.clamp(min=1) if whole is None else torch.tensor(dp_size / float(whole))
    return torch.ones(()) if whole is None else seqs * dp_size / float(whole)


def _make_verl_loss(name: str):
    def policy_loss(
        old_log_prob: Tensor,
        log_prob: Tensor,
        advantages: Tensor,
        response_mask: Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        if config is None:
            raise ValueError(f"ed_{name}: verl passes the actor config; got none")
        if rollout_is_weights is not None:
            raise ValueError(
                f"ed_{name} does not take rollout-correction importance weights; use "
                "policy_loss.loss_mode=vanilla (the entropy_dynamics filter works with any loss "
                "mode) or turn algorithm.rollout_correction off"
            )
        loss_config = verl_loss_config(name, config, loss_agg_mode)
        mask = response_mask.bool()  # (B, T), already narrowed by the whole-batch filter
        zeros = torch.zeros_like(log_prob, dtype=torch.float32)
        # kl_cov ranks tokens by log p of this forward; no loss here reads H or S
        stats = TokenStats(log_prob.detach(), zeros, zeros, zeros)
        inputs = PolicyLossInputs(log_prob, old_log_prob, advantages, mask, stats, keep_mask=mask)
        out = compute_policy_loss(loss_config, inputs)
        share = global_share(loss_agg_mode, mask, dict(config.global_batch_info))
        metrics = {k: float(v) for k, v in out.metrics.items() if k not in _OWN_KEYS}
        return out.loss * share.to(out.loss.dtype), metrics

    policy_loss.__name__ = policy_loss.__qualname__ = f"ed_{name}"
    policy_loss.__doc__ = f"entropy_dynamics' ``{name}`` policy loss in verl's registry."
    return policy_loss


def _refused_loss(name: str, method: str):
    def policy_loss(*args: Any, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        usable = [f"ed_{n}" for n in available_policy_losses() if controlled_loss(n) is None]
        raise ValueError(
            f"ed_{name}: the {name!r} loss needs the controller of the {method!r} method, which "
            f"sets its weight each step; that controller runs only in entropy_dynamics' own "
            f"trainer for now (entropy-dynamics train --method {method}), and without it "
            f"ed_{name} would compute plain ed_ppo. Use {', '.join(usable)} or a verl loss mode"
        )

    policy_loss.__name__ = policy_loss.__qualname__ = f"ed_{name}"
    policy_loss.__doc__ = f"Refuses to run: ``{name}`` needs the ``{method}`` controller."
    return policy_loss


def register_policy_losses(core_algos: ModuleType) -> None:
    """Register ``ed_<name>`` for each of our policy losses (``core_algos`` is
    ``verl.trainer.ppo.core_algos``); one that needs a closed-loop method's controller is
    registered to refuse to run."""
    for name in available_policy_losses():
        method = controlled_loss(name)
        loss = _make_verl_loss(name) if method is None else _refused_loss(name, method)
        core_algos.register_policy_loss(f"ed_{name}")(loss)


def loss_time_ppo_loss(
    config: Any,
    model_output: dict[str, Tensor],
    data: Any,
    dp_group: Any = None,
    *,
    settings: FilterSettings,
) -> tuple[Tensor, dict[str, Any]]:
    """verl's ``ppo_loss`` on the micro-batch's kept tokens (the filter decided here)."""
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding, response_to_nested

    missing = [k for k in STAT_KEYS if k not in model_output]
    if missing:
        raise KeyError(f"entropy_dynamics: the engine's output lacks {', '.join(missing)}")
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    batch = {k: padded[k] for k in ("response_mask", "old_log_probs", "advantages")}
    batch.update({k: no_padding_2_padding(model_output[k], data) for k in STAT_KEYS})
    keep, metrics = decide_keep(settings.loss_config(), batch)
    mask = data["response_mask"]
    narrowed = padded["response_mask"] * keep.to(padded["response_mask"].dtype)  # (B, T)
    data = data.copy()  # the caller's micro-batch stays as it was
    data["response_mask"] = response_to_nested(narrowed, mask) if mask.is_nested else narrowed
    loss, verl_metrics = ppo_loss(config, model_output, data, dp_group)
    verl_metrics.update({key: float(value) for key, value in metrics.items()})
    return loss, verl_metrics


loss_time_ppo_loss.needs_entropy_dynamics_stats = True  # type: ignore[attr-defined]


def with_step_entropy_coeff(loss: Any) -> Any:
    """``loss`` (verl's ``ppo_loss`` signature) with ``config.entropy_coeff`` replaced by the
    micro-batch's non-tensor ``ENTROPY_COEFF_FLAG`` when it carries one."""

    @functools.wraps(loss)
    def wrapped(config: Any, model_output: Any, data: Any, dp_group: Any = None):
        from verl.utils import tensordict_utils as tu

        coeff = tu.get_non_tensor_data(data, ENTROPY_COEFF_FLAG, None)
        if coeff is not None:  # verl's configs are frozen dataclasses: a copy for this call
            config = copy.copy(config)
            object.__setattr__(config, "entropy_coeff", float(coeff))
        return loss(config, model_output, data, dp_group)

    wrapped.needs_entropy_dynamics_stats = getattr(  # type: ignore[attr-defined]
        loss, "needs_entropy_dynamics_stats", False
    )
    return wrapped


def patch_engine_workers(module: ModuleType) -> None:
    """Make ``module`` (``verl.workers.engine_workers``) bind, where it binds ``ppo_loss``
    (``ActorRolloutRefWorker.init_model``), verl's loss with the step's entropy coefficient and,
    with :data:`LOSS_TIME_ENV` set, :func:`loss_time_ppo_loss`."""
    if getattr(module.ppo_loss, "_entropy_dynamics", False):
        return
    raw = os.environ.get(LOSS_TIME_ENV, "").strip()
    if not raw:
        module.ppo_loss = with_step_entropy_coeff(module.ppo_loss)
        module.ppo_loss._entropy_dynamics = True
        return
    try:
        values = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{LOSS_TIME_ENV} must be a JSON object such as "
            f'{{"filter": "clip_b", "filter_options": {{"mu": 2.5}}}}, got {raw!r} ({exc})'
        ) from exc
    settings = FilterSettings.from_config({CONFIG_KEY: values})
    if settings is not None and (settings.method is not None or settings.monitor_every):
        raise ValueError(
            f"{LOSS_TIME_ENV}: the loss-time fallback runs a filter only; a controller or the "
            "monitor runs on the v1 trainer's driver (+entropy_dynamics.* in its config)"
        )
    if settings is None or settings.filter == "none":
        module.ppo_loss = with_step_entropy_coeff(module.ppo_loss)
    else:
        loss = functools.partial(loss_time_ppo_loss, settings=settings)
        loss.needs_entropy_dynamics_stats = True  # type: ignore[attr-defined]
        module.ppo_loss = with_step_entropy_coeff(loss)
    module.ppo_loss._entropy_dynamics = True
