"""Predicted versus actual entropy change of a real update (the paper's §3 on a live model).

Given the logits of the same response positions before and after an optimizer step (teacher-forced
on the step's own samples), this module reports

- ``dynamics/delta_h_actual``: mean over positions of ``H(after) - H(before)``;
- ``dynamics/delta_h_kept`` / ``dynamics/delta_h_dropped``: mean actual ΔH over the positions
  that carried loss weight (the tokens the update trained) and over the others (zero advantage or
  dropped by the filter): Theorem 3.2 speaks of the trained positions; the rest move only through
  the parameters they share with them;
- ``dynamics/delta_h_first_order``: mean of ``⟨∂H/∂z, Δz⟩`` with the *measured* logit change
  ``Δz`` (Theorem 3.2's general first-order form) — exact up to O(|Δz|²);
- ``dynamics/delta_h_thm33``: Theorem 3.3's prediction ``-α̂ w_t A_t (S_t - E_p[S]_t) / T²``,
  where the network's logit change is modelled as the GRPO direction
  ``u_t = w_t A_t (e_k - p_t) / T`` times one scalar ``α̂``
  (the effective logit step, ``dynamics/effective_logit_lr``), fitted by
  least squares ``α̂ = Σ_t ⟨Δz_t, u_t⟩ / Σ_t |u_t|²``. The shape of the prediction is pure theory;
  only its scale is measured. A neural network couples positions, so this prediction is expected to
  be good in sign and correlation, not exact — which is what users want to measure;
- ``dynamics/quadrant/{pos,neg}_adv_{pos,neg}_dev``: the actual ΔH contributed (sum over the
  positions of that quadrant, divided by all positions) by each advantage sign × sign of
  ``S_k - E_p[S]``: which tokens drive the entropy change;
- ``dynamics/batch_deviation_mean`` and ``dynamics/batch_discriminator_abs_mean``: Corollary 3.5
  says the first is ~0 on an on-policy batch, orders of magnitude below the second.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entropy_dynamics import theory
from entropy_dynamics.aggregation import masked_mean

__all__ = ["entropy_dynamics_metrics"]

_QUADRANTS = {
    "pos_adv_pos_dev": (1, 1),
    "pos_adv_neg_dev": (1, -1),
    "neg_adv_pos_dev": (-1, 1),
    "neg_adv_neg_dev": (-1, -1),
}


@torch.no_grad()
def entropy_dynamics_metrics(
    logits_before: Tensor,
    logits_after: Tensor,
    tokens: Tensor,
    advantages: Tensor,
    weights: Tensor,
    temperature: float = 1.0,
) -> dict[str, Tensor]:
    """Predicted and actual entropy change at ``N`` response positions.

    Args:
        logits_before: ``(N, V)`` logits before the update.
        logits_after: ``(N, V)`` logits at the same positions after the update.
        tokens: ``(N,)`` sampled tokens ``k``.
        advantages: ``(N,)`` advantages ``A_t`` used in the update.
        weights: ``(N,)`` loss weight of each position (the filter's keep mask; 0 = dropped).
        temperature: sampling temperature ``T``.

    Returns:
        Dict of 0-d float tensors with the keys listed in the module docstring.
    """
    if logits_before.shape != logits_after.shape or logits_before.dim() != 2:
        raise ValueError(
            f"logits_before and logits_after must both be (N, V), got "
            f"{tuple(logits_before.shape)} and {tuple(logits_after.shape)}"
        )
    n = logits_before.shape[0]
    for name, value in (("tokens", tokens), ("advantages", advantages), ("weights", weights)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(value.shape)}")
    z0 = logits_before.float()
    delta = logits_after.float() - z0  # (N, V)
    actual = theory.entropy(logits_after.float(), temperature) - theory.entropy(z0, temperature)
    first_order = theory.first_order_entropy_change(z0, delta, temperature)  # (N,)

    s_k = theory.discriminator(z0, tokens, temperature)  # (N,)
    centre = theory.expected_discriminator(z0, temperature)  # (N,)
    deviation = s_k - centre
    coef = weights.float() * advantages.float()  # (N,)
    trained = coef != 0
    # u_t = coef_t (e_k - p_t) / T is grpo_logit_update with lr = 1 and A = coef.
    direction = theory.grpo_logit_update(z0, tokens, coef, 1.0, temperature)  # (N, V)
    norm = (direction * direction).sum()
    alpha = (delta * direction).sum() / norm if norm > 0 else norm.new_zeros(())
    thm33 = -alpha * coef * deviation / temperature**2  # (N,)

    metrics = {
        "dynamics/delta_h_actual": actual.mean(),
        "dynamics/delta_h_kept": masked_mean(actual, trained),
        "dynamics/delta_h_dropped": masked_mean(actual, ~trained),
        "dynamics/delta_h_first_order": first_order.mean(),
        "dynamics/delta_h_thm33": thm33.mean(),
        "dynamics/effective_logit_lr": alpha,
        "dynamics/batch_deviation_mean": deviation.mean(),
        "dynamics/batch_discriminator_abs_mean": s_k.abs().mean(),
    }
    adv_sign, dev_sign = torch.sign(advantages), torch.sign(deviation)
    for name, (a, d) in _QUADRANTS.items():
        in_quadrant = (adv_sign == a) & (dev_sign == d)
        metrics[f"dynamics/quadrant/{name}"] = (actual * in_quadrant).sum() / max(n, 1)
    return metrics
