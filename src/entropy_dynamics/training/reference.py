"""The KL penalty to a reference policy: its options, the frozen reference and the loss term.

- the penalty: ``loss += β · agg(KL_k)`` over every valid response token, ``KL_k`` a per-token
  estimator of ``KL(π_θ ‖ π_ref)`` at the sampled token
  (:func:`~entropy_dynamics.losses.kl_to_reference`: k1, k2, k3), aggregated as the policy loss
  (verl's ``use_kl_loss`` with ``kl_loss_type``; TRL's ``beta``, which adds ``β · k3`` to each
  token's loss before the same aggregation); off by default (:class:`KLConfig`, ``β = 0``), as in
  DAPO and the paper's runs;
- the reference: the run's initial model, frozen (eval mode, no gradient), as TRL's
  ``ref_model`` and verl's reference worker; kept only when ``β > 0`` (one more copy of the
  weights in memory);
- not saved with checkpoints: it equals the initial model, which a resumed run loads again from
  ``model.path`` (:meth:`~entropy_dynamics.training.setup.RunSetup.initial_model`). Each
  checkpoint records the reference's :func:`weights_fingerprint`, and a resume whose model at
  ``model.path`` no longer has it is refused, so a model changed on disk cannot silently change
  the penalty of a resumed run;
- its log-probabilities: one no-grad teacher-forced pass per rollout batch
  (:class:`~entropy_dynamics.training.forward.ResponseStats`: fused from hidden states, each
  distinct prompt once), at the sampling temperature, as TRL and verl compute them.

Shapes: ``N`` sequences, ``R`` response positions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from entropy_dynamics.aggregation import aggregate, masked_mean
from entropy_dynamics.errors import ConfigError
from entropy_dynamics.losses import KL_ESTIMATORS, kl_to_reference
from entropy_dynamics.training.forward import FusedMode, ResponseStats
from entropy_dynamics.training.rollout import Rollout

__all__ = [
    "UNFUSED_NOTICE",
    "KLConfig",
    "ReferencePolicy",
    "kl_penalty",
    "start_reference",
    "weights_fingerprint",
]

UNFUSED_NOTICE = (
    "algorithm.kl.coef > 0: the loss is formed unfused (the fused loss has no KL term); the "
    "statistics stay fused"
)
"""What the trainer says when the KL penalty turns the fused loss off."""


@dataclass
class KLConfig:
    """A penalty on the KL divergence from a frozen reference policy, the run's initial model
    (TRL ``beta``, verl ``use_kl_loss``). Off by default, as in DAPO and the paper's runs."""

    coef: float = 0.0
    """Weight ``β`` of ``loss += β · agg(KL)`` over every valid response token, aggregated as the
    policy loss (``algorithm.loss.agg_mode``); metric ``actor/kl_ref``. 0 (DAPO; TRL's default
    ``beta``) keeps no reference model; verl's ``kl_loss_coef`` is 0.001, TRL's GRPO used 0.04."""
    estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token estimator, ``log r = log π_ref - log π_θ`` at the sampled token:
    ``k3 = r - 1 - log r`` (TRL's, verl's ``low_var_kl``), ``k1 = -log r`` (verl ``kl``),
    ``k2 = (log r)² / 2`` (verl ``mse``)."""

    def __post_init__(self) -> None:
        if not self.coef >= 0:
            raise ConfigError(f"algorithm.kl.coef must be >= 0 (0: no penalty), got {self.coef}")
        if self.estimator not in KL_ESTIMATORS:
            raise ConfigError(
                f"algorithm.kl.estimator: must be one of {', '.join(KL_ESTIMATORS)}, "
                f"got {self.estimator!r}"
            )


def kl_penalty(
    kl: KLConfig,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
    agg_mode: str,
    norm: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(β · agg(KL_k), mean KL_k)``: the penalty over the valid tokens of ``response_mask``
    (``(n, R)``) and its detached token mean (metric ``actor/kl_ref``).

    Args:
        logprobs: ``(n, R)`` current ``log π_θ`` of the sampled tokens (with gradient).
        ref_logprobs: ``(n, R)`` the reference's.
        agg_mode, norm: the policy loss's aggregation (``PolicyLossConfig``).
    """
    valid = response_mask != 0  # (n, R)
    # padding may hold anything: masked before the estimator, so no NaN reaches the gradient
    current = torch.where(valid, logprobs, 0.0)
    reference = torch.where(valid, ref_logprobs.to(logprobs.dtype), 0.0)
    per_token = kl_to_reference(current, reference, kl.estimator)  # (n, R)
    value = aggregate(per_token, valid, agg_mode, norm)  # 0-d
    return kl.coef * value, masked_mean(per_token.detach(), valid)


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameter and buffer names and bytes, in ``state_dict`` order."""
    sha = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        sha.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        sha.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


class ReferencePolicy:
    """A frozen reference model and the log-probabilities it gives a rollout's tokens.

    Args:
        model: the reference model (a copy of the initial policy, not the trained one); put in
            eval mode without gradients here.
        temperature: the sampling temperature ``T`` (statistics of ``softmax(z / T)``).
        fused_stats: as ``model.fused_stats``; valid_vocab: real tokens of a padded head.
    """

    def __init__(
        self,
        model: nn.Module,
        temperature: float,
        fused_stats: FusedMode = "auto",
        valid_vocab: int | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.stats = ResponseStats(model, temperature, fused_stats, valid_vocab)
        self.fingerprint = weights_fingerprint(model)

    def logprobs(self, rollout: Rollout) -> Tensor:
        """``(N, R)`` ``log π_ref`` of each response token, from one no-grad teacher-forced
        pass."""
        with torch.no_grad():
            features = self.stats.features(rollout)  # (N, R, d) hidden, or (N, R, V) logits
            return self.stats.stats(features, rollout.response_ids).logprobs

    def check(self, recorded: str | None, path: str) -> None:
        """Refuse a resume whose reference, loaded again from ``path``, is not the one the
        checkpoint recorded (``recorded``; ``None``: the checkpoint had no penalty)."""
        if recorded is None:
            raise ConfigError(
                "algorithm.kl.coef: the checkpoint was written without a KL penalty; resume "
                "with algorithm.kl.coef=0, or start a new run"
            )
        if recorded != self.fingerprint:
            raise ConfigError(
                f"model.path: the model at {path} is not the one this run started from (its "
                "weights changed since), so the KL penalty's reference would differ; restore "
                "that model, or start a new run"
            )


def start_reference(setup: Any, kl: KLConfig) -> ReferencePolicy | None:
    """The reference of ``setup`` (a :class:`~entropy_dynamics.training.setup.RunSetup`, not
    imported: it imports the config, which imports this module): a frozen copy of its initial model
    (:meth:`~entropy_dynamics.training.setup.RunSetup.initial_model`), its statistics formed as
    the policy's; ``None`` when ``kl.coef == 0`` (no second model in memory)."""
    if kl.coef == 0:
        return None
    cfg = setup.config
    return ReferencePolicy(
        setup.initial_model(), cfg.rollout.temperature, cfg.model.fused_stats, setup.valid_vocab
    )
