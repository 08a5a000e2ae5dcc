"""The paper's mathematics as pure functions of logits (arXiv 2602.03392, §3).

Notation, as in the paper: logits ``z`` of shape ``(..., V)``, sampling temperature ``T``,
policy ``p = softmax(z / T)``, entropy ``H = -Σ_i p_i log p_i``, sampled token ``k``.

- Entropy discriminator (§3.1): ``S_i = p_i (H + log p_i)``; ``sign(S_k) = sign(p_k - e^{-H})``.
- Theorem 3.2: a logit step ``Δz = ε e_k`` changes entropy by ``ΔH = -ε S_k / T + O(ε²)``;
  for any ``Δz``: ``ΔH ≈ -Σ_i p_i (log p_i + H) Δz_i / T``.
- Theorem 3.3: one gradient step of size ``η`` on the token surrogate ``A · log p_k`` moves the
  logits by ``Δz = η A (e_k - p) / T`` and changes entropy by
  ``ΔH = -(η A / T²) (S_k - E_{i~p}[S_i]) + O(η²)``, with
  ``E_{i~p}[S_i] = Σ_i p_i² (H + log p_i)`` (a per-position baseline, not a batch average).

At ``T = 1`` these are exactly the paper's formulas. Every function here computes in float64 when
given float64 and in float32 otherwise, and treats ``-inf`` logits (padded vocabulary entries) as
``p_i = 0`` contributing nothing: the limit ``p log p → 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

# the temperature rule every input is held to (MIN_TEMPERATURE = 1e-5, vLLM's greedy threshold)
# and the float32 / float64 compute dtype: defined with the lm_head parameters at the bottom of
# the package, so the kernels share them; the rule is re-exported here
from entropy_dynamics.kernels.lm_head import MIN_TEMPERATURE, check_temperature, compute_dtype

__all__ = [
    "MIN_TEMPERATURE",
    "check_temperature",
    "discriminator",
    "entropy",
    "entropy_change",
    "expected_discriminator",
    "first_order_entropy_change",
    "grpo_entropy_change",
    "grpo_logit_update",
]


def _log_probs(logits: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(p, log p)`` of ``softmax(logits / T)`` in the compute dtype; shapes ``(..., V)``."""
    check_temperature(temperature)
    scaled = logits.to(compute_dtype(logits.dtype)) / temperature
    log_p = torch.log_softmax(scaled, dim=-1)  # (..., V), -inf where logits are -inf
    return log_p.exp(), log_p


def _p_log_p(p: Tensor, log_p: Tensor) -> Tensor:
    """``p · log p`` with the limit 0 where ``p = 0`` (avoids ``0 · -inf = nan``)."""
    return torch.where(p > 0, p * log_p, torch.zeros_like(p))


def _entropy_from(p: Tensor, log_p: Tensor) -> Tensor:
    return -_p_log_p(p, log_p).sum(dim=-1)  # (...)


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy ``H = -Σ_i p_i log p_i`` of ``p = softmax(logits / T)``.

    Args:
        logits: ``(..., V)``.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)`` entropy in nats, in the compute dtype.
    """
    return _entropy_from(*_log_probs(logits, temperature))


def discriminator(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy discriminator of the sampled token, ``S_k = p_k (H + log p_k)``.

    Args:
        logits: ``(..., V)``.
        tokens: ``(...)`` integer ids of the sampled tokens ``k``.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)`` values of ``S_k``; ``0`` where ``p_k = 0``.
    """
    p, log_p = _log_probs(logits, temperature)
    h = _entropy_from(p, log_p)  # (...)
    index = tokens.long().unsqueeze(-1)  # (..., 1)
    p_k = p.gather(-1, index).squeeze(-1)
    log_p_k = log_p.gather(-1, index).squeeze(-1)
    return torch.where(p_k > 0, p_k * (h + log_p_k), torch.zeros_like(p_k))


def expected_discriminator(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Vocabulary average ``E_{i~p}[S_i] = Σ_i p_i² (H + log p_i)`` at each position (Thm 3.3).

    Args:
        logits: ``(..., V)``.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)``.
    """
    p, log_p = _log_probs(logits, temperature)
    h = _entropy_from(p, log_p)  # (...)
    p2 = p * p  # (..., V)
    return h * p2.sum(-1) + (p * _p_log_p(p, log_p)).sum(-1)


def entropy_change(logits: Tensor, delta: Tensor, temperature: float = 1.0) -> Tensor:
    """Exact entropy change ``H(softmax((z + Δz) / T)) - H(softmax(z / T))``.

    Args:
        logits: ``(..., V)`` logits ``z``.
        delta: ``(..., V)`` logit change ``Δz`` (raw logit space, before temperature).
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)``.
    """
    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    return entropy(z + delta.to(dtype), temperature) - entropy(z, temperature)


def first_order_entropy_change(logits: Tensor, delta: Tensor, temperature: float = 1.0) -> Tensor:
    """First-order entropy change ``-Σ_i p_i (log p_i + H) Δz_i / T`` (general form of Thm 3.2).

    This is ``⟨∂H/∂z, Δz⟩``. Entries with ``p_i = 0`` contribute nothing, whatever their ``Δz_i``.

    Args:
        logits: ``(..., V)`` logits ``z``.
        delta: ``(..., V)`` logit change ``Δz``.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)``.
    """
    p, log_p = _log_probs(logits, temperature)
    h = _entropy_from(p, log_p).unsqueeze(-1)  # (..., 1)
    s = torch.where(p > 0, p * (log_p + h), torch.zeros_like(p))  # (..., V): S_i for every i
    d = torch.where(p > 0, delta.to(p.dtype), torch.zeros_like(p))
    return -(s * d).sum(-1) / temperature


def grpo_logit_update(
    logits: Tensor, tokens: Tensor, advantages: Tensor, lr: float, temperature: float = 1.0
) -> Tensor:
    """Logit update of one gradient-ascent step on the surrogate ``A · log p_k`` (ratio 1).

    ``∂ log p_k / ∂z = (e_k - p) / T``, so a step of size ``lr`` gives
    ``Δz = α (e_k - p) / T`` with ``α = lr · A`` — the update Theorem 3.3 assumes.

    Args:
        logits: ``(..., V)``.
        tokens: ``(...)`` sampled token ids ``k``.
        advantages: ``(...)`` advantages ``A`` (a float or a tensor broadcastable to ``(...)``).
        lr: step size ``η`` on the logits.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(..., V)`` logit change ``Δz`` in the compute dtype.
    """
    p, _ = _log_probs(logits, temperature)
    one_hot = torch.zeros_like(p).scatter_(-1, tokens.long().unsqueeze(-1), 1.0)  # (..., V)
    alpha = lr * torch.as_tensor(advantages, dtype=p.dtype, device=p.device)  # (...)
    return alpha.unsqueeze(-1) * (one_hot - p) / temperature


def grpo_entropy_change(
    logits: Tensor, tokens: Tensor, advantages: Tensor, lr: float, temperature: float = 1.0
) -> Tensor:
    """Theorem 3.3's first-order entropy change ``-(α / T²) (S_k - E_{i~p}[S_i])``, ``α = lr·A``.

    Args:
        logits: ``(..., V)``.
        tokens: ``(...)`` sampled token ids ``k``.
        advantages: ``(...)`` advantages ``A``.
        lr: step size ``η`` on the logits.
        temperature: sampling temperature ``T ≥ MIN_TEMPERATURE``.

    Returns:
        ``(...)`` predicted ``ΔH`` per position.
    """
    s_k = discriminator(logits, tokens, temperature)
    centre = expected_discriminator(logits, temperature)
    alpha = lr * torch.as_tensor(advantages, dtype=s_k.dtype, device=s_k.device)
    return -alpha * (s_k - centre) / temperature**2
