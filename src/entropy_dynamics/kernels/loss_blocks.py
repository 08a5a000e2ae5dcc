"""The fused loss's work on one block of positions, per backend: its statistics and ``grad_z``.

:func:`~entropy_dynamics.kernels.fused_loss.fused_linear_loss` walks the positions in blocks of
``row_chunk``; for each it calls the backend's :data:`BlockFunction`, which forms the block's
logits over the valid vocabulary (matmul 1), its statistics ``(log p_k, H, S_k, E_p[S])`` and,
once the caller's loss has given ``g1 = ∂L/∂log p_k`` and ``g2 = ∂L/∂H``, its logit gradient
``grad_z`` (the formula of :mod:`entropy_dynamics.kernels.logit_grad` in the coefficient form of
:func:`~entropy_dynamics.kernels.logit_grad.grad_coefficients`):

- :func:`torch_block`: torch element-wise passes over a ``(r, V')`` block in the compute dtype
  (CPU, float64);
- :func:`triton_block`: a float32 cuBLAS logits block read by the two Triton kernels of
  :mod:`.triton_loss` (CUDA, or ``TRITON_INTERPRET=1``);
- ``triton_matmul.triton_matmul_block``: no logits block, the statistics in a Triton matmul's
  epilogue (opt-in ``"triton-matmul"``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.kernels.lm_head import LMHead, compute_dtype
from entropy_dynamics.kernels.logit_grad import grad_coefficients
from entropy_dynamics.kernels.power_sums import finalize

__all__ = [
    "BlockFunction",
    "block_function",
    "compact_rows_",
    "mm_float32",
    "torch_block",
    "triton_block",
]

BlockFunction = Callable[..., tuple[tuple[Tensor, ...], Callable[..., Tensor]]]
"""A backend's block work, ``block(head, h, tokens, with_es) -> (stats, grad_fn)``: ``h``
``(r, d)``, ``tokens`` ``(r,)``; ``stats`` is ``(log p_k, H, S_k, E_p[S], log A)`` in the compute
dtype, ``(r,)`` each; ``grad_fn(g1, g2, live=None)`` returns ``grad_z`` ``(r, V')`` over the
valid vocabulary in ``h``'s dtype, or of the rows ``live`` (ascending indices) only."""


def _block_stats(x: Tensor, tokens: Tensor, with_es: bool):
    """Statistics of one block of logits ``x`` ``(r, V)`` (already ``/ T``), which becomes
    ``x - max``; returns ``(e = exp(x - max), (log p_k, H, S_k, E_p[S], log A))``."""
    x_k = x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (r,)
    row_max = x.amax(-1)  # (r,)
    rel = x.sub_(row_max.unsqueeze(-1))  # (r, V) ≤ 0
    e = rel.exp()  # (r, V), the second block
    a = e.sum(-1)  # (r,), as b, c, d
    if with_es:
        re = rel * e  # (r, V) temporary: (x - m) e^{x - m}
        b = re.sum(-1)
        c = torch.linalg.vecdot(e, e)
        d = torch.linalg.vecdot(re, e)
        del re
    else:
        b = torch.linalg.vecdot(rel, e)
        c = d = torch.zeros_like(a)
    log_p_k, entropy, s_k, e_s, lse = finalize((row_max, a, b, c, d), x_k)
    return e, (log_p_k, entropy, s_k, e_s, lse - row_max)


def _block_grad_(rel: Tensor, e: Tensor, log_a, entropy, g1, g2, tokens, inv_t) -> Tensor:
    """``grad_z`` ``(r, V)`` of the block (``rel = x - max`` and ``e = exp(rel)`` ``(r, V)``,
    the rest ``(r,)``; :func:`~entropy_dynamics.kernels.logit_grad.grad_coefficients`),
    written over ``e``; ``rel`` is clobbered."""
    coef, g2s, g1t = grad_coefficients(log_a, entropy, g1, g2, inv_t)  # 3 × (r,)
    if bool((g2 != 0).any()):
        grad = torch.addcmul(coef.unsqueeze(-1), rel, g2s.unsqueeze(-1), out=rel)  # (r, V)
        grad.mul_(e)
    else:
        grad = e.mul_(coef.unsqueeze(-1))  # (r, V)
    grad.scatter_add_(-1, tokens.unsqueeze(-1), g1t.unsqueeze(-1).to(grad.dtype))  # + g1t e_k
    return grad


def torch_block(head: LMHead, h: Tensor, tokens: Tensor, with_es: bool):
    """:data:`BlockFunction` with torch element-wise passes (CPU, float64)."""
    x = head.logits(h, compute_dtype(h.dtype))  # (r, V') matmul 1
    e, block = _block_stats(x, tokens, with_es)  # x := x - max

    def grad_fn(g1: Tensor, g2: Tensor, live: Tensor | None = None) -> Tensor:
        grad = _block_grad_(x, e, block[4], block[1], g1, g2, tokens, head.inv_t)  # (r, V')
        grad = grad if live is None else compact_rows_(grad, live)
        return grad if grad.dtype == h.dtype else grad.to(h.dtype)

    return block, grad_fn


def mm_float32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` as float32: for half inputs the matmul's float32 accumulator where torch has it
    (CUDA, torch ≥ 2.8), else the half product upcast."""
    if a.dtype == torch.float32:
        return a @ b
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return (a @ b).float()


def _raw_logits(head: LMHead, h: Tensor) -> Tensor:
    """``h Wᵀ + b`` over the valid vocabulary as float32 ``(r, V')``; ``h`` ``(r, d)``."""
    w, b = head.rows()  # (V', d), (V',)
    if h.dtype == torch.float32 and b is not None:
        return torch.addmm(b, h, w.T)
    z = mm_float32(h, w.T)
    return z if b is None else z.add_(b)


def triton_block(head: LMHead, h: Tensor, tokens: Tensor, with_es: bool):
    """:data:`BlockFunction` with the Triton kernels of :mod:`.triton_loss`."""
    from entropy_dynamics.kernels import triton_loss

    inv_t = head.inv_t
    z = _raw_logits(head, h)  # (r, V') float32, unscaled
    row_max, a, b_sum, c, d, x_k = triton_loss.block_stats(z, tokens, inv_t, with_es)  # (6, r)
    log_p_k, entropy, s_k, e_s, lse = finalize((row_max, a, b_sum, c, d), x_k)
    block = (log_p_k, entropy, s_k, e_s, lse - row_max)

    def grad_fn(g1: Tensor, g2: Tensor, live: Tensor | None = None) -> Tensor:
        coef, g2s, g1t = grad_coefficients(block[4], entropy, g1, g2, inv_t)  # 3 × (r,)
        out = z if h.dtype == torch.float32 else torch.empty_like(z, dtype=h.dtype)  # (r, V')
        coefficients = torch.stack([row_max, coef, g2s, g1t]).float().contiguous()  # (4, r)
        grad = triton_loss.block_grad(z, tokens, coefficients, inv_t, out)  # (r, V')
        return grad if live is None else compact_rows_(grad, live)

    return block, grad_fn


def block_function(backend: str) -> BlockFunction:
    """The block work of ``backend`` (a name :func:`.chunking.resolve_backend` returned)."""
    if backend == "triton-matmul":
        from entropy_dynamics.kernels.triton_matmul import triton_matmul_block

        return triton_matmul_block
    return triton_block if backend == "triton" else torch_block


def compact_rows_(grad: Tensor, keep: Tensor) -> Tensor:
    """The rows ``keep`` (ascending indices) of ``grad``, moved to its front in place on CPU (no
    second block in memory); a gathered copy on CUDA (one kernel instead of one per row)."""
    if grad.device.type != "cpu":
        return grad.index_select(0, keep)
    for dst, src in enumerate(keep.tolist()):
        if dst != src:  # src > dst: row src is not yet overwritten
            grad[dst].copy_(grad[src])
    return grad[: keep.numel()]
