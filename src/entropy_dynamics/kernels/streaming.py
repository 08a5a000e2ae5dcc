"""Token statistics straight from hidden states, in one streaming pass over the vocabulary.

For each row ``h`` of ``hidden`` the logits are ``z = h Wᵀ + b`` and ``p = softmax(z / T)``. This
module returns the four fields of :class:`~entropy_dynamics.stats.TokenStats` — ``log p_k``,
``H``, ``S_k`` and ``E_p[S]`` — without ever holding ``[N, V]`` logits: it walks the vocabulary in
chunks of ``vocab_chunk`` rows of ``W`` and the positions in chunks of ``row_chunk``, so at most a
``[row_chunk, vocab_chunk]`` block (and one temporary of that size) exists at any time.

The four streamed sums and their algebra (online max, rebasing, merging) are in
:mod:`entropy_dynamics.kernels.power_sums`.

Backward (custom autograd): each block's logits are recomputed from ``hidden`` and ``W`` (saving
only ``logsumexp`` and ``H`` per row) and turned into ``grad_z`` by
:func:`~entropy_dynamics.kernels.logit_grad.logit_grad_`, then
``grad_hidden += grad_z @ W_chunk``, ``grad_W_chunk += grad_zᵀ @ hidden``, ``grad_b += Σ grad_z``.
The vocabulary is the outer loop so each ``grad_W`` chunk is finished before the next begins.

``valid_vocab``: a lm_head padded beyond the tokenizer (Qwen: 151,936 rows for 151,665 tokens)
has rows ``≥ valid_vocab`` that are not tokens; they are skipped, which is exactly ``p = 0`` there
(their ``W`` and ``b`` gradients are zero).

Precision: float32 accumulation for bf16 / fp16 / fp32 inputs, float64 for float64 inputs. On the
torch path, half-precision logits are computed in the input dtype (as the model's own lm_head
would) and upcast per block; the Triton path keeps the matmul's float32 accumulator.

Parameters: the lm_head as one :class:`~entropy_dynamics.kernels.lm_head.LMHead` (weight, bias,
temperature, valid vocabulary), the block sizes and backend as one
:class:`~entropy_dynamics.kernels.chunking.Chunking`. Backends: ``"torch"``; ``"triton"``
(:mod:`.triton_stats`, the choice of ``"auto"`` on CUDA); ``"triton-matmul"``, opt-in: the forward
of :mod:`.triton_matmul` (Hopper tile defaults, splits sized to the GPU), the backward of
``"triton"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.kernels.chunking import DEFAULT_ROW_CHUNK, Chunking
from entropy_dynamics.kernels.lm_head import LMHead, compute_dtype
from entropy_dynamics.kernels.logit_grad import logit_grad_
from entropy_dynamics.kernels.power_sums import Sums, finalize, rebase

__all__ = ["fused_token_stats"]


def _block_sums(x: Tensor, new_max: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(A, B, C, D)`` of one block ``x`` ``(n, v)`` relative to ``new_max``; clobbers ``x``."""
    rel = x.sub_(new_max.unsqueeze(-1))  # (n, v) ≤ 0
    e = rel.exp()  # the only other block-sized tensor
    a = e.sum(-1)
    b = rel.mul_(e).sum(-1)  # rel := (x - m) e^{x - m}, in place
    d = rel.mul_(e).sum(-1)  # rel := (x - m) e^{2(x - m)}
    return a, b, e.square_().sum(-1), d


def _pick(x: Tensor, tokens: Tensor, start: int, x_k: Tensor) -> Tensor:
    """``x_k`` ``(n,)`` updated with ``x[row, token - start]`` for rows whose token lies in this
    block ``x`` ``(n, v)``."""
    inside = (tokens >= start) & (tokens < start + x.shape[-1])  # (n,)
    column = (tokens - start).clamp_(0, x.shape[-1] - 1).unsqueeze(-1)  # (n, 1)
    return torch.where(inside, x.gather(-1, column).squeeze(-1), x_k)


def _forward_torch(
    hidden: Tensor, head: LMHead, tokens: Tensor, chunking: Chunking
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Streaming forward; ``hidden`` ``(N, d)``, ``tokens`` ``(N,)``; ``chunking`` resolved."""
    n = hidden.shape[0]
    dtype = compute_dtype(hidden.dtype)
    vocab, vocab_chunk, row_chunk = head.valid_vocab, chunking.vocab_chunk, chunking.row_chunk
    state: list[Sums | None] = [None] * ((n + row_chunk - 1) // row_chunk)  # per row chunk
    x_k = torch.zeros(n, dtype=dtype, device=hidden.device)  # (N,)
    for v0 in range(0, vocab, vocab_chunk):
        v1 = min(v0 + vocab_chunk, vocab)
        for i, r0 in enumerate(range(0, n, row_chunk)):
            rows = slice(r0, r0 + row_chunk)
            x = head.logits(hidden[rows], dtype, v0, v1)  # (r, v)
            x_k[rows] = _pick(x, tokens[rows], v0, x_k[rows])
            block_max = x.amax(-1)  # (r,); amax: no argmax, several times cheaper than max
            prev = state[i]
            new_max = block_max if prev is None else torch.maximum(prev[0], block_max)
            sums = _block_sums(x, new_max)  # 4 × (r,)
            if prev is not None:
                sums = tuple(s + p for s, p in zip(sums, rebase(prev, new_max), strict=True))
            state[i] = (new_max, *sums)
            del x
    merged = tuple(torch.cat(parts) for parts in zip(*state, strict=True))  # 5 × (N,)
    return finalize(merged, x_k)  # type: ignore[arg-type]


GradTile = Callable[[slice, int, int], Tensor]
"""``tile(rows, v0, v1) -> grad_z`` ``(r, v1 - v0)``: the logit gradient of one block."""


def _torch_grad_tile(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    lse: Tensor,
    entropy: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
) -> GradTile:
    """``grad_z`` of one ``[rows, v0:v1]`` block (compute dtype), recomputing its logits
    (:func:`~entropy_dynamics.kernels.logit_grad.logit_grad_`); ``hidden`` ``(N, d)``,
    ``tokens``, ``lse``, ``entropy``, ``g1``, ``g2`` ``(N,)``."""
    dtype = lse.dtype

    def tile(rows: slice, v0: int, v1: int) -> Tensor:
        log_p = head.logits(hidden[rows], dtype, v0, v1)  # (r, v)
        log_p.sub_(lse[rows].unsqueeze(-1))
        g_logprob = None if g1 is None else g1[rows]
        g_entropy = None if g2 is None else g2[rows]
        return logit_grad_(log_p, entropy[rows], g_logprob, g_entropy, tokens[rows], head.inv_t, v0)

    return tile


def _backward_loop(
    tile: GradTile,
    hidden: Tensor,
    head: LMHead,
    chunking: Chunking,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Accumulate ``grad_hidden`` ``(N, d)``, ``grad_W`` ``(V, d)``, ``grad_b`` ``(V,)`` (those
    ``needs`` asks for) from the ``grad_z`` tiles."""
    need_h, need_w, need_b = needs
    weight, vocab = head.weight, head.valid_vocab
    vocab_chunk, row_chunk = chunking.vocab_chunk, chunking.row_chunk
    dtype = compute_dtype(hidden.dtype)
    n, dim = hidden.shape
    grad_h = torch.zeros(n, dim, dtype=dtype, device=hidden.device) if need_h else None
    grad_w = torch.zeros_like(weight) if need_w else None
    grad_b = (
        torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device) if need_b else None
    )
    for v0 in range(0, vocab, vocab_chunk):
        v1 = min(v0 + vocab_chunk, vocab)
        w = weight[v0:v1]  # (v, d)
        acc_w = torch.zeros(v1 - v0, dim, dtype=dtype, device=weight.device) if need_w else None
        acc_b = torch.zeros(v1 - v0, dtype=dtype, device=weight.device) if need_b else None
        for r0 in range(0, n, row_chunk):
            rows = slice(r0, r0 + row_chunk)
            grad = tile(rows, v0, v1)  # (r, v) grad_z
            if acc_b is not None:
                acc_b += grad.sum(0, dtype=dtype)  # (v,)
            if grad.dtype == hidden.dtype:  # float32 / float64: accumulate inside the GEMM
                if grad_h is not None:
                    grad_h[rows].addmm_(grad, w)  # (r, v) x (v, d) -> (r, d)
                if acc_w is not None:
                    acc_w.addmm_(grad.T, hidden[rows])  # (v, r) x (r, d) -> (v, d)
                del grad  # free the tile before the next one is formed: two blocks at most
                continue
            grad = grad.to(hidden.dtype)  # half: matmuls in the input dtype, sums in float32
            if grad_h is not None:
                grad_h[rows] += grad @ w  # (r, v) x (v, d) -> (r, d)
            if acc_w is not None:
                acc_w += grad.T @ hidden[rows]  # (v, r) x (r, d) -> (v, d)
            del grad
        if grad_w is not None:
            grad_w[v0:v1] = acc_w
        if grad_b is not None:
            grad_b[v0:v1] = acc_b
    return None if grad_h is None else grad_h.to(hidden.dtype), grad_w, grad_b


class _FusedTokenStats(torch.autograd.Function):
    """``weight`` and ``bias`` are ``head``'s own, passed again so autograd sees them as inputs;
    ``chunking`` is resolved (every field concrete)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, head, chunking):  # type: ignore[override]
        if chunking.backend == "triton-matmul":
            from entropy_dynamics.kernels import triton_matmul

            sums, x_k = triton_matmul.matmul_power_sums(hidden, head, tokens, with_es=True)
            outs = finalize(sums, x_k)
        elif chunking.backend == "triton":
            from entropy_dynamics.kernels import triton_stats

            outs = triton_stats.forward(hidden, head, tokens)
        else:
            outs = _forward_torch(hidden, head, tokens, chunking)
        log_p_k, entropy, discriminator, expected_s, lse = outs  # 5 × (N,)
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, entropy)
        ctx.config = (head.temperature, head.valid_vocab, chunking)
        ctx.mark_non_differentiable(discriminator, expected_s)
        ctx.set_materialize_grads(False)
        return log_p_k, entropy, discriminator, expected_s

    @staticmethod
    def backward(ctx, g1, g2, _g_s, _g_e):  # type: ignore[override]
        hidden, weight, bias, tokens, lse, entropy = ctx.saved_tensors
        temperature, valid_vocab, chunking = ctx.config
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        if (g1 is None and g2 is None) or not any(needs):
            return (None,) * 6
        head = LMHead(weight, bias, temperature, valid_vocab)  # around the saved tensors
        g1 = None if g1 is None else g1.to(lse.dtype)
        g2 = None if g2 is None else g2.to(lse.dtype)
        args = (hidden, head, tokens, lse, entropy, g1, g2)
        if chunking.backend != "torch":  # "triton-matmul" too: only its forward differs
            from entropy_dynamics.kernels import triton_stats

            tile = triton_stats.grad_tile(*args)
        else:
            tile = _torch_grad_tile(*args)
        grads = _backward_loop(tile, hidden, head, chunking, needs)
        return (*grads, None, None, None)


def fused_token_stats(
    hidden: Tensor, head: LMHead, tokens: Tensor, chunking: Chunking | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S])`` of ``softmax((hidden @ weightᵀ + bias) / T)``, streamed.

    The kernel behind :func:`entropy_dynamics.stats.token_stats_from_hidden`, which wraps the
    result in ``TokenStats``; arguments as documented there: ``hidden`` ``(..., d)``, ``tokens``
    ``(...)`` in ``[0, head.valid_vocab)``, ``chunking`` ``None``: ``Chunking()``.

    Returns:
        Four tensors of the shape of ``tokens``, float32 (float64 for float64 input);
        ``log p_k`` and ``H`` carry gradients to ``hidden``, ``weight`` and ``bias``,
        ``S_k`` and ``E_p[S]`` are not differentiable.
    """
    head.check(hidden, tokens)
    chunking = (chunking or Chunking()).resolve(hidden, DEFAULT_ROW_CHUNK)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    flat_tokens = tokens.reshape(-1).long()  # (N,)
    outs = _FusedTokenStats.apply(flat_hidden, head.weight, head.bias, flat_tokens, head, chunking)
    return tuple(x.reshape(tokens.shape) for x in outs)  # type: ignore[return-value]
