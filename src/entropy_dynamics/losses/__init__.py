"""Policy losses over per-token log-probabilities: three registered losses, one shared tail.

What lives here: the contract — :class:`PolicyLossConfig` (one default per option, with its
source), the inputs and output, the registry and :func:`compute_policy_loss` (``base``); the tail
every loss shares — the token filter by name, the aggregation, the entropy bonus, the ``actor/``
metrics (``tail``, with :func:`select_tokens`); the per-token formulas (``token``, the estimators
of the KL to a reference policy among them); the registered losses ``ppo`` (PPO-clip with
clip-higher and dual clip), ``kl_cov`` (KL-Cov) and ``entropic`` (EntroPIC) (``registered``); and
the ``ppo`` loss fused with the lm_head, straight from hidden states (``fused``). This package
re-exports the public names.

A new loss is one ``@register_policy_loss`` function; the methods built from the losses (``grpo``,
``clip_b``, ``clip_higher``, ...) are the entries of :data:`entropy_dynamics.methods.METHODS`.

Imports: torch, ``kernels`` and the mathematics below it (``stats``, ``aggregation``, ``filters``).
"""

from entropy_dynamics.aggregation import AGG_MODES, aggregate, aggregation_share
from entropy_dynamics.losses.base import (
    PolicyLossConfig,
    PolicyLossFn,
    PolicyLossInputs,
    PolicyLossOutput,
    available_policy_losses,
    check_entropic_options,
    compute_policy_loss,
    get_policy_loss,
    register_policy_loss,
)
from entropy_dynamics.losses.fused import aggregation_weights, fused_policy_loss
from entropy_dynamics.losses.registered import (
    entropic_policy_loss,
    kl_cov_policy_loss,
    ppo_policy_loss,
)
from entropy_dynamics.losses.tail import select_tokens
from entropy_dynamics.losses.token import (
    KL_ESTIMATORS,
    entropic_adjustment,
    kl_cov_token_loss,
    kl_to_reference,
    ppo_clip_token_loss,
)

__all__ = [
    "AGG_MODES",
    "KL_ESTIMATORS",
    "PolicyLossConfig",
    "PolicyLossFn",
    "PolicyLossInputs",
    "PolicyLossOutput",
    "aggregate",
    "aggregation_share",
    "aggregation_weights",
    "available_policy_losses",
    "check_entropic_options",
    "compute_policy_loss",
    "entropic_adjustment",
    "entropic_policy_loss",
    "fused_policy_loss",
    "get_policy_loss",
    "kl_cov_policy_loss",
    "kl_cov_token_loss",
    "kl_to_reference",
    "ppo_clip_token_loss",
    "ppo_policy_loss",
    "register_policy_loss",
    "select_tokens",
]
