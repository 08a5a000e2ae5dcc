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

``valid_vocab``: lm_head rows ``≥ valid_vocab`` are not tokens; they are skipped (``p = 0``) and
their gradient is zero. Precision: float32 sums and gradients for bf16 / fp16 / fp32 inputs
(matmuls in the input dtype), float64 for float64 inputs. Backends: the matmuls are torch's
(cuBLAS on CUDA); the element-wise work on each block is torch's on CPU and two Triton kernels on
CUDA (:mod:`entropy_dynamics.kernels.triton_loss`: one read of the block for the statistics, one
read + write for ``grad_z``). The opt-in ``backend="triton-matmul"``
(:mod:`entropy_dynamics.kernels.triton_matmul`) forms no logits block at all: the statistics in a
Triton matmul's epilogue, ``grad_z`` of the live rows from a second Triton matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.kernels.logit_grad import grad_coefficients
from entropy_dynamics.kernels.power_sums import finalize
from entropy_dynamics.kernels.streaming import (
    _block_logits,
    _check_inputs,
    _compute_dtype,
    resolve_backend,
)

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


def _block_stats(x: Tensor, tokens: Tensor, with_es: bool):
    """Statistics of one block of logits ``x`` ``(r, V)`` (already ``/ T``), which becomes
    ``x - max``; returns ``(e = exp(x - max), (log p_k, H, S_k, E_p[S], log A))``."""
    x_k = x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (r,)
    row_max = x.amax(-1)  # (r,)
    rel = x.sub_(row_max.unsqueeze(-1))  # (r, V) ≤ 0
    e = rel.exp()  # (r, V), the second block
    a = e.sum(-1)
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
    """``grad_z`` of the block (:func:`~entropy_dynamics.kernels.logit_grad.grad_coefficients`),
    written over ``e``; ``rel`` is clobbered."""
    coef, g2s, g1t = grad_coefficients(log_a, entropy, g1, g2, inv_t)
    if bool((g2 != 0).any()):
        grad = torch.addcmul(coef.unsqueeze(-1), rel, g2s.unsqueeze(-1), out=rel)
        grad.mul_(e)
    else:
        grad = e.mul_(coef.unsqueeze(-1))
    grad.scatter_add_(-1, tokens.unsqueeze(-1), g1t.unsqueeze(-1).to(grad.dtype))
    return grad


def _torch_block(h, w, b, tokens, inv_t, with_es, dtype, out_dtype):
    """``(stats, grad_fn)`` of one block with torch element-wise passes (CPU, float64)."""
    x = _block_logits(h, w, b, inv_t, dtype)  # (r, V') matmul 1
    e, block = _block_stats(x, tokens, with_es)  # x := x - max

    def grad_fn(g1: Tensor, g2: Tensor, live: Tensor | None = None) -> Tensor:
        grad = _block_grad_(x, e, block[4], block[1], g1, g2, tokens, inv_t)
        grad = grad if live is None else _compact_rows_(grad, live)
        return grad if grad.dtype == out_dtype else grad.to(out_dtype)

    return block, grad_fn


def _mm_float32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` as float32: for half inputs the matmul's float32 accumulator where torch has it
    (CUDA, torch ≥ 2.8), else the half product upcast."""
    if a.dtype == torch.float32:
        return a @ b
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except (TypeError, RuntimeError):
        return (a @ b).float()


def _raw_logits(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``h Wᵀ + b`` as float32 ``(r, V')``."""
    if h.dtype == torch.float32 and b is not None:
        return torch.addmm(b, h, w.T)
    z = _mm_float32(h, w.T)
    return z if b is None else z.add_(b)


def _triton_block(h, w, b, tokens, inv_t, with_es, dtype, out_dtype):
    """``(stats, grad_fn)`` of one block with the Triton kernels of :mod:`.triton_loss`."""
    from entropy_dynamics.kernels import triton_loss

    z = _raw_logits(h, w, b)  # (r, V') float32, unscaled
    row_max, a, b_sum, c, d, x_k = triton_loss.block_stats(z, tokens, inv_t, with_es)
    log_p_k, entropy, s_k, e_s, lse = finalize((row_max, a, b_sum, c, d), x_k)
    block = (log_p_k, entropy, s_k, e_s, lse - row_max)

    def grad_fn(g1: Tensor, g2: Tensor, live: Tensor | None = None) -> Tensor:
        coef, g2s, g1t = grad_coefficients(block[4], entropy, g1, g2, inv_t)
        out = z if out_dtype == torch.float32 else torch.empty_like(z, dtype=out_dtype)
        coefficients = torch.stack([row_max, coef, g2s, g1t]).float().contiguous()
        grad = triton_loss.block_grad(z, tokens, coefficients, inv_t, out)
        return grad if live is None else _compact_rows_(grad, live)

    return block, grad_fn


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


def _block_function(backend: str):
    """The block work of ``backend`` (a name :func:`.streaming.resolve_backend` returned)."""
    if backend == "triton-matmul":
        from entropy_dynamics.kernels.triton_matmul import triton_matmul_block

        return triton_matmul_block
    return _triton_block if backend == "triton" else _torch_block


def _compact_rows_(grad: Tensor, keep: Tensor) -> Tensor:
    """The rows ``keep`` (ascending indices) of ``grad``, moved to its front in place on CPU (no
    second block in memory); a gathered copy on CUDA (one kernel instead of one per row)."""
    if grad.device.type != "cpu":
        return grad.index_select(0, keep)
    for dst, src in enumerate(keep.tolist()):
        if dst != src:  # src > dst: row src is not yet overwritten
            grad[dst].copy_(grad[src])
    return grad[: keep.numel()]


def _fused_pass(
    hidden, weight, bias, tokens, loss_fn, inv_t, vocab, row_chunk, with_es, needs, backend,
    positions,
):  # fmt: skip
    """The single pass: ``(loss, stats (5 × (N,)), grad_hidden, grad_W, grad_b)``.

    ``positions`` (ascending flat indices, or ``None`` for all) are the rows computed; the others
    keep statistics 0 and gradient 0. Rows whose ``g1`` and ``g2`` are both exactly 0 (a zero
    aggregation weight, a binding PPO clip) are left out of matmuls 2 and 3.
    """
    need_h, need_w, need_b = needs
    dtype = _compute_dtype(hidden.dtype)
    n, dim = hidden.shape
    count = n if positions is None else positions.numel()
    w = weight[:vocab]  # (V', d): padded rows are not tokens
    b = None if bias is None else bias[:vocab]
    grad_h = torch.zeros(n, dim, dtype=dtype, device=hidden.device) if need_h else None
    # full-size gradients (padded rows stay 0), accumulated through views of the valid rows
    full_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
    full_b = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_b else None
    grad_w = None if full_w is None else full_w[:vocab]
    grad_b = None if full_b is None else full_b[:vocab]
    loss = torch.zeros((), dtype=dtype, device=hidden.device)
    stats = [torch.zeros(n, dtype=dtype, device=hidden.device) for _ in range(5)]
    block_fn = _block_function(backend)
    for r0 in range(0, count, row_chunk):
        r1 = min(r0 + row_chunk, count)
        rows = slice(r0, r1) if positions is None else positions[r0:r1]
        h = hidden[rows]  # (r, d)
        block, grad_fn = block_fn(h, w, b, tokens[rows], inv_t, with_es, dtype, hidden.dtype)
        for out, value in zip(stats, block, strict=True):
            out[rows] = value
        block_loss, g1, g2 = _loss_grads(loss_fn, rows, block[0], block[1])
        loss += block_loss.to(dtype)
        live = (g1 != 0) | (g2 != 0)  # rows with a gradient
        n_live = int(live.sum())
        if not (need_h or need_w or need_b) or n_live == 0:
            continue
        keep = None
        if n_live < live.numel():  # matmuls 2 and 3 on the live rows only
            keep = live.nonzero().squeeze(1)
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
            grad_h[rows] = _mm_float32(grad, w)
        elif isinstance(rows, slice):
            torch.mm(grad, w, out=grad_h[rows])
        else:
            grad_h[rows] = grad @ w
    if grad_w is not None:  # (V', r) x (r, d) -> (V', d) matmul 3
        if grad.dtype == dtype:
            grad_w.addmm_(grad.T, h)
        else:
            grad_w += _mm_float32(grad.T, h)


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, hidden, weight, bias, tokens, loss_fn, inv_t, vocab, row_chunk, with_es, grads_on,
        backend, positions,
    ):  # fmt: skip
        # forward() itself runs with grad mode off: the caller's mode comes in as ``grads_on``
        needs = tuple(grads_on and bool(x) for x in ctx.needs_input_grad[:3])
        loss, stats, grad_h, grad_w, grad_b = _fused_pass(
            hidden, weight, bias, tokens, loss_fn, inv_t, vocab, row_chunk, with_es, needs,
            backend, positions,
        )  # fmt: skip
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
        return (*grads, *[None] * 9)


def fused_linear_loss(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    loss_fn: BlockLoss,
    temperature: float = 1.0,
    *,
    bias: Tensor | None = None,
    row_chunk: int | None = None,
    valid_vocab: int | None = None,
    expected_discriminator: bool = True,
    backend: str = "auto",
    positions: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(loss, log p_k, H, S_k, E_p[S])`` of ``softmax((hidden @ weightᵀ + bias) / T)``, with the
    loss's gradient to ``hidden``, ``weight`` and ``bias`` formed during the forward.

    Args:
        hidden: ``(N, d)`` final hidden states (flattened positions).
        weight: ``(V, d)`` lm_head weight, same dtype and device as ``hidden``.
        tokens: ``(N,)`` sampled ids in ``[0, valid_vocab)``.
        loss_fn: :data:`BlockLoss`, called once per block with the flat slice of its positions
            and their ``log p_k`` and ``H`` (compute dtype, requiring grad); must be a sum of
            per-position terms (the total is the sum of the blocks' losses).
        temperature: ``T > 0`` (the caller checks it).
        bias: optional ``(V,)`` finite lm_head bias.
        row_chunk: positions per block (``None``: :func:`default_loss_row_chunk`).
        valid_vocab: rows of ``weight`` that are tokens (``None``: all).
        expected_discriminator: also compute ``E_p[S]`` (two extra power sums); else it is 0.
        backend: ``"auto"`` (the Triton block kernels on CUDA when triton is importable, else
            torch), ``"torch"``, ``"triton"`` (also on CPU under ``TRITON_INTERPRET=1``) or
            ``"triton-matmul"`` (opt-in, unmeasured on a GPU so far: the statistics in the
            epilogue of a Triton matmul and ``grad_z`` from a second one,
            :mod:`entropy_dynamics.kernels.triton_matmul`; no float32 logits block).
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
    vocab = _check_inputs(hidden, weight, tokens, bias, 1, 1, valid_vocab)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be (N, d) (flatten positions first), got {hidden.dim()}-d")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    backend = resolve_backend(backend, hidden)
    row_chunk = default_loss_row_chunk(vocab, hidden.device) if row_chunk is None else row_chunk
    if row_chunk < 1:
        raise ValueError(f"row_chunk must be >= 1, got {row_chunk}")
    if positions is not None:
        if positions.shape != tokens.shape or positions.dtype != torch.bool:
            raise ValueError(
                f"positions must be a bool mask of tokens' shape {tuple(tokens.shape)}, got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )
        positions = None if bool(positions.all()) else positions.nonzero().squeeze(1)
    return _FusedLinearLoss.apply(
        hidden,
        weight,
        bias,
        tokens.long(),
        loss_fn,
        1.0 / float(temperature),
        vocab,
        int(row_chunk),
        bool(expected_discriminator),
        torch.is_grad_enabled(),
        backend,
        positions,
    )
