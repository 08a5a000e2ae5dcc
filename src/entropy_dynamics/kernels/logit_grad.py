"""The one definition of the gradient of ``(log p_k, H)`` with respect to the logits.

For ``p = softmax(x)``, ``x = z / T``, with upstream gradients ``g1`` of ``log p_k`` and ``g2`` of
``H``::

    ∂ log p_k / ∂x_i = 1[i = k] - p_i
    ∂ H / ∂x_i       = -p_i (log p_i + H)          (Theorem 3.2's first-order form)

    grad_z = [g1 (e_k - p) - g2 p (log p + H)] / T

Every backward pass of the package forms its logit gradient here: the chunked pass over
materialised logits (:func:`entropy_dynamics.stats.token_stats`), the streaming pass from hidden
states (:mod:`entropy_dynamics.kernels.streaming`), and the tests of the Triton kernels, whose
in-register form of this line (``triton_matmul._logit_grad_kernel``, through
:func:`grad_coefficients`) is checked against this function.

:func:`grad_coefficients` is the same formula rearranged around a row's running max, for kernels
that hold ``x - max`` and ``exp(x - max)`` rather than ``log p`` (the fused loss's block kernels
and :mod:`entropy_dynamics.kernels.triton_matmul`); its test checks it against :func:`logit_grad_`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grad_coefficients", "logit_grad_"]

_LOG_P_FLOOR = -1.0e4  # exp(-1e4) = 0 in float32 and float64: p = 0 entries stay exactly 0


def logit_grad_(
    log_p: Tensor,
    entropy: Tensor,
    g_logprob: Tensor | None,
    g_entropy: Tensor | None,
    tokens: Tensor,
    inv_t: float,
    col_start: int = 0,
) -> Tensor:
    """``grad_z`` of one block of rows × vocabulary columns, written over ``log_p``.

    Args:
        log_p: ``(n, v)`` log-probabilities ``log p_i`` of vocabulary columns
            ``[col_start, col_start + v)`` of ``n`` rows, in the compute dtype; overwritten (it
            becomes the result). ``-inf`` entries (``p = 0``) get gradient 0.
        entropy: ``(n,)`` entropy ``H`` of each row's full distribution.
        g_logprob: ``(n,)`` upstream gradient of ``log p_k``, or ``None``.
        g_entropy: ``(n,)`` upstream gradient of ``H``, or ``None``; one of the two is given.
        tokens: ``(n,)`` sampled ids in the full vocabulary; only those inside this block's
            columns receive the ``g1 e_k`` term.
        inv_t: ``1 / T``.
        col_start: vocabulary id of the block's first column.

    Returns:
        ``(n, v)`` gradient with respect to the logits ``z``, in the storage of ``log_p`` (with
        an entropy gradient, one block-sized temporary exists while it is formed).
    """
    if g_logprob is None and g_entropy is None:
        raise ValueError("logit_grad_ needs g_logprob, g_entropy or both")
    if g_entropy is None:
        grad = log_p.exp_().mul_(-g_logprob.unsqueeze(-1))  # type: ignore[union-attr]  # (n, v)
    else:
        p = log_p.exp()  # (n, v), the one block-sized temporary
        # the coefficient of -p: g1 + g2 (log p + H); the floor keeps 0 · (-inf) out at p = 0
        coef = log_p.clamp_(min=_LOG_P_FLOOR).add_(entropy.unsqueeze(-1))  # (n, v)
        coef.mul_(g_entropy.unsqueeze(-1))
        if g_logprob is not None:
            coef.add_(g_logprob.unsqueeze(-1))
        grad = coef.mul_(p).neg_()  # (n, v)
    if g_logprob is not None:
        width = grad.shape[-1]
        inside = (tokens >= col_start) & (tokens < col_start + width)  # (n,)
        column = (tokens - col_start).clamp(0, width - 1).unsqueeze(-1)  # (n, 1)
        value = torch.where(inside, g_logprob, torch.zeros_like(g_logprob)).to(grad.dtype)  # (n,)
        grad.scatter_add_(-1, column, value.unsqueeze(-1))  # + g1 e_k, no host sync
    return grad.mul_(inv_t) if inv_t != 1.0 else grad


def grad_coefficients(
    log_a: Tensor, entropy: Tensor, g1: Tensor, g2: Tensor, inv_t: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row ``(coef, g2s, g1t)`` (each ``(n,)``): ``grad_z = e ⊙ (coef + g2s·rel) + g1t·e_k``.

    With ``rel = x - max``, ``e = exp(rel)``, ``A = Σ e``, ``p = e / A`` and
    ``log p = rel - log A``, the formula of :func:`logit_grad_` reads
    ``grad_z = g1 e_k / T - e ⊙ [g1 + g2 (H - log A) + g2 rel] / (A T)``.

    Args:
        log_a: ``(n,)`` ``log A``, the logsumexp of the row minus its max.
        entropy: ``(n,)`` ``H`` of the row.
        g1, g2: ``(n,)`` upstream gradients of ``log p_k`` and ``H``.
        inv_t: ``1 / T``.
    """
    scale = -inv_t / log_a.exp()  # (n,)  -1 / (A T)
    return (g1 + g2 * (entropy - log_a)) * scale, g2 * scale, g1 * inv_t
