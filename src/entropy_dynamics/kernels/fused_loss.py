"""A loss of ``(log p_k, H)`` and its gradient from hidden states, in one pass (three matmuls).

For a training loss ``L = Σ_t ℓ(rows_t; log p_k, H)`` whose per-token inputs (old log-probs,
advantages, keep-mask, aggregation weights) are all known before the forward, the gradient with
respect to the logits of a block of positions is known as soon as that block's statistics are:

    g1 = ∂L/∂ log p_k,  g2 = ∂L/∂H                 (from the caller's loss on the block's rows)
    grad_z = [g1 (e_k - p) - g2 p (log p + H)] / T  (kernels/logit_grad.py, the one formula)

So each block of ``row_chunk`` positions is processed once, over the whole vocabulary:

    x = (h Wᵀ + b) / T            (r, V)   matmul 1
    sums A, B (and C, D for E_p[S]) over x - max  → log p_k, H, S_k, E_p[S]   (power_sums.py)
    loss of the block, g1, g2 by autograd on r-vectors (the caller's own loss definition)
    grad_z in place of the block                 (r, V)
    grad_hidden[rows] = grad_z W                 (r, d)   matmul 2
    grad_W += grad_zᵀ h[rows]                    (V, d)   matmul 3

and no logits are saved: the custom autograd function's backward only scales the gradients the
forward stored by the upstream gradient of the loss (a scalar). That is one matmul fewer than the
statistics path (:mod:`entropy_dynamics.kernels.streaming`), whose backward recomputes every block,
and ``[N, V]`` never exists: at most two ``(row_chunk, V)`` blocks in the compute dtype (three
on CUDA while a block's live rows are gathered).

Matmuls 2 and 3 take only the block's *live* rows, those with ``g1 ≠ 0`` or ``g2 ≠ 0``: a token
the keep-mask dropped (zero aggregation weight) or whose PPO clip binds has no gradient, and
skipping it there is exact. Positions the caller leaves out (``positions``: padding) skip all
three matmuls.

Where the loss needs ``log p_k`` itself (a ratio to old log-probs, a clip decision) it cannot be
streamed over vocabulary chunks in one pass — ``log p_k`` needs the row's full ``logsumexp`` — so
blocks span the whole (valid) vocabulary and are bounded by rows instead.

The lm_head comes as one :class:`~entropy_dynamics.kernels.lm_head.LMHead` (weight, bias, ``T``,
valid vocabulary: rows ``≥ valid_vocab`` are not tokens; they are skipped, ``p = 0``, and their
gradient is zero), the row block and backend as one
:class:`~entropy_dynamics.kernels.chunking.Chunking`. Precision: float32 sums and gradients for
bf16 / fp16 / fp32 inputs (matmuls in the input dtype), float64 for float64 inputs. Backends: the
matmuls 2 and 3 are torch's (cuBLAS on CUDA); a block's own work (matmul 1, statistics,
``grad_z``) is one function per backend in :mod:`entropy_dynamics.kernels.loss_blocks`: torch's
element-wise passes on CPU, two Triton kernels on CUDA (:mod:`entropy_dynamics.kernels.triton_loss`:
one read of the block for the statistics, one read + write for ``grad_z``), or with the opt-in
``backend="triton-matmul"`` (:mod:`entropy_dynamics.kernels.triton_matmul`) no logits block at
all: the statistics in a Triton matmul's epilogue, ``grad_z`` of the live rows from a second one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.kernels.chunking import Chunking
from entropy_dynamics.kernels.lm_head import LMHead, compute_dtype
from entropy_dynamics.kernels.loss_blocks import block_function, mm_float32

__all__ = ["BlockLoss", "default_loss_row_chunk", "fused_linear_loss"]

BlockLoss = Callable[[slice | Tensor, Tensor, Tensor], Tensor]
"""``loss(rows, log_p_k, entropy) -> 0-d tensor``: the loss of the flat positions ``rows`` (a
slice, or ascending int64 indices when ``positions`` leaves some out), differentiable in the two
``(r,)`` tensors; the total loss is the sum over blocks."""

_BLOCK_BYTES = 1 << 27  # 128 MiB per (row_chunk, V) block in the compute dtype, by default


def default_loss_row_chunk(vocab: int, device: torch.device) -> int:
    """Positions per block: 128 MiB of float32 logits (1 GiB on CUDA), at least 16 rows."""
    budget = _BLOCK_BYTES * (8 if device.type == "cuda" else 1)
    return max(16, budget // (4 * max(vocab, 1)))


def _loss_grads(loss_fn: BlockLoss, rows: slice | Tensor, log_p_k: Tensor, entropy: Tensor):
    """``(loss, g1, g2)`` of the caller's block loss, by autograd on the two ``(r,)`` vectors."""
    with torch.enable_grad():
        lp = log_p_k.detach().requires_grad_(True)
        h = entropy.detach().requires_grad_(True)
        loss = loss_fn(rows, lp, h)
        if not loss.requires_grad:  # a loss that does not depend on this block
            return loss.detach(), torch.zeros_like(lp), torch.zeros_like(h)
        g1, g2 = torch.autograd.grad(loss, (lp, h), allow_unused=True)
    g1 = torch.zeros_like(lp) if g1 is None else g1
    g2 = torch.zeros_like(h) if g2 is None else g2
    return loss.detach(), g1.detach(), g2.detach()


def _fused_pass(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    loss_fn: BlockLoss,
    chunking: Chunking,
    with_es: bool,
    needs: tuple[bool, bool, bool],
    positions: Tensor | None,
):
    """The single pass: ``(loss, stats (5 × (N,)), grad_hidden, grad_W, grad_b)``.

    ``hidden`` ``(N, d)``, ``tokens`` ``(N,)``, ``chunking`` resolved. ``positions`` (ascending
    flat indices, or ``None`` for all) are the rows computed; the others keep statistics 0 and
    gradient 0. Rows whose ``g1`` and ``g2`` are both exactly 0 (a zero aggregation weight, a
    binding PPO clip) are left out of matmuls 2 and 3.
    """
    need_h, need_w, need_b = needs
    weight, row_chunk = head.weight, chunking.row_chunk
    dtype = compute_dtype(hidden.dtype)
    n, dim = hidden.shape
    count = n if positions is None else positions.numel()
    w = head.rows()[0]  # (V', d): padded rows are not tokens
    grad_h = torch.zeros(n, dim, dtype=dtype, device=hidden.device) if need_h else None
    # full-size gradients (padded rows stay 0), accumulated through views of the valid rows
    full_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
    full_b = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_b else None
    grad_w = None if full_w is None else full_w[: head.valid_vocab]  # (V', d)
    grad_b = None if full_b is None else full_b[: head.valid_vocab]  # (V',)
    loss = torch.zeros((), dtype=dtype, device=hidden.device)
    stats = [torch.zeros(n, dtype=dtype, device=hidden.device) for _ in range(5)]  # 5 × (N,)
    block_fn = block_function(chunking.backend)
    for r0 in range(0, count, row_chunk):
        r1 = min(r0 + row_chunk, count)
        rows = slice(r0, r1) if positions is None else positions[r0:r1]
        h = hidden[rows]  # (r, d)
        block, grad_fn = block_fn(head, h, tokens[rows], with_es)  # 5 × (r,)
        for out, value in zip(stats, block, strict=True):
            out[rows] = value
        block_loss, g1, g2 = _loss_grads(loss_fn, rows, block[0], block[1])  # 0-d, (r,), (r,)
        loss += block_loss.to(dtype)
        live = (g1 != 0) | (g2 != 0)  # (r,) rows with a gradient
        n_live = int(live.sum())
        if not (need_h or need_w or need_b) or n_live == 0:
            continue
        keep = None
        if n_live < live.numel():  # matmuls 2 and 3 on the live rows only
            keep = live.nonzero().squeeze(1)  # (live,)
            block_rows = torch.arange(r0, r1, device=keep.device) if positions is None else rows
            h, rows = h[keep], block_rows[keep]
        grad = grad_fn(g1.to(dtype), g2.to(dtype), keep)  # (live rows, V'), the matmuls' dtype
        del grad_fn
        _accumulate_(grad, h, w, rows, (grad_h, grad_w, grad_b), dtype)
        del grad
    return loss, stats, grad_h, full_w, full_b


def _accumulate_(grad: Tensor, h: Tensor, w: Tensor, rows, grads, dtype) -> None:
    """Matmuls 2 and 3 (and the bias sum) of one block's ``grad_z`` ``(r, V')`` into the
    ``(grad_hidden, grad_W, grad_b)`` that are not ``None``; half ``grad`` is multiplied in its
    own dtype with float32 results."""
    grad_h, grad_w, grad_b = grads
    if grad_b is not None:
        grad_b += grad.sum(0, dtype=dtype)
    if grad_h is not None:  # (r, V') x (V', d) -> (r, d) matmul 2
        if grad.dtype != dtype:
            grad_h[rows] = mm_float32(grad, w)
        elif isinstance(rows, slice):
            torch.mm(grad, w, out=grad_h[rows])
        else:
            grad_h[rows] = grad @ w
    if grad_w is not None:  # (V', r) x (r, d) -> (V', d) matmul 3
        if grad.dtype == dtype:
            grad_w.addmm_(grad.T, h)
        else:
            grad_w += mm_float32(grad.T, h)


class _FusedLinearLoss(torch.autograd.Function):
    """``weight`` and ``bias`` are ``head``'s own, passed again so autograd sees them as inputs;
    ``chunking`` is resolved."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, hidden, weight, bias, tokens, loss_fn, head, chunking, with_es, grads_on, positions
    ):
        # forward() itself runs with grad mode off: the caller's mode comes in as ``grads_on``
        needs = tuple(grads_on and bool(x) for x in ctx.needs_input_grad[:3])
        loss, stats, grad_h, grad_w, grad_b = _fused_pass(
            hidden, head, tokens, loss_fn, chunking, with_es, needs, positions
        )
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, weight.dtype)
        ctx.mark_non_differentiable(*stats)
        return (loss, *stats[:4])

    @staticmethod
    def backward(ctx, g_loss, *_unused):  # type: ignore[override]
        # The usual upstream gradient is 1: hand over the stored tensors as fresh aliases
        # (detach), which autograd takes as ``.grad`` without copying the weight-sized gradient;
        # the stored ones stay intact for a second backward of a retained graph.
        unit = g_loss is not None and bool(g_loss == 1)
        grads = []
        for grad, dtype in zip(ctx.grads, ctx.dtypes, strict=True):
            if grad is None or g_loss is None:
                grads.append(None)
            else:
                grads.append((grad if unit else grad * g_loss).to(dtype).detach())
        return (*grads, *[None] * 7)


def fused_linear_loss(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    loss_fn: BlockLoss,
    *,
    chunking: Chunking | None = None,
    expected_discriminator: bool = True,
    positions: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(loss, log p_k, H, S_k, E_p[S])`` of ``softmax((hidden @ weightᵀ + bias) / T)``, with the
    loss's gradient to ``hidden``, ``weight`` and ``bias`` formed during the forward.

    Args:
        hidden: ``(N, d)`` final hidden states (flattened positions).
        head: the lm_head (weight ``(V, d)`` of ``hidden``'s dtype and device, optional finite
            bias, ``T``, valid vocabulary).
        tokens: ``(N,)`` sampled ids in ``[0, head.valid_vocab)``.
        loss_fn: :data:`BlockLoss`, called once per block with the flat slice of its positions
            and their ``log p_k`` and ``H`` (compute dtype, requiring grad); must be a sum of
            per-position terms (the total is the sum of the blocks' losses).
        chunking: ``row_chunk`` positions per block (``None``: :func:`default_loss_row_chunk`;
            ``vocab_chunk`` is not used: a block spans the valid vocabulary) and the backend:
            ``"auto"`` (the Triton block kernels on CUDA when triton is importable, else
            torch), ``"torch"``, ``"triton"`` (also on CPU under ``TRITON_INTERPRET=1``) or
            ``"triton-matmul"`` (opt-in, unmeasured on a GPU so far: the statistics in the
            epilogue of a Triton matmul and ``grad_z`` from a second one,
            :mod:`entropy_dynamics.kernels.triton_matmul`; no float32 logits block).
            ``None``: ``Chunking()``, every default.
        expected_discriminator: also compute ``E_p[S]`` (two extra power sums); else it is 0.
        positions: optional ``(N,)`` bool mask of the positions to compute (e.g. the valid
            response tokens); the others cost nothing, never reach ``loss_fn``, and get
            statistics 0 and gradient 0. ``None``: every position.

    Returns:
        ``loss`` (0-d, differentiable: its backward scales the stored gradients) and four
        detached ``(N,)`` statistics, float32 (float64 for float64 input).

    Rows whose loss has no gradient (``∂L/∂log p_k = ∂L/∂H = 0`` exactly: a zero weight, a
    binding clip) are left out of the two gradient matmuls, so a keep-mask or clipping that
    drops a share of the tokens saves that share of two thirds of the matmul work.
    """
    head.check(hidden, tokens)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be (N, d) (flatten positions first), got {hidden.dim()}-d")
    chunking = (chunking or Chunking()).resolve(
        hidden, default_loss_row_chunk(head.valid_vocab, hidden.device)
    )
    if positions is not None:
        if positions.shape != tokens.shape or positions.dtype != torch.bool:
            raise ValueError(
                f"positions must be a bool mask of tokens' shape {tuple(tokens.shape)}, got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )
        positions = None if bool(positions.all()) else positions.nonzero().squeeze(1)
    return _FusedLinearLoss.apply(
        hidden,
        head.weight,
        head.bias,
        tokens.long(),
        loss_fn,
        head,
        chunking,
        bool(expected_discriminator),
        torch.is_grad_enabled(),
        positions,
    )
