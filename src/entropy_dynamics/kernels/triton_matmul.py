"""Triton matmul kernels with the softmax statistics in their epilogue: no logits are written.

Both kernels form ``x = (h Wᵀ + b) / T`` tile by tile with ``tl.dot`` over ``d`` (float32
accumulator; bf16 / fp16 / fp32 inputs, fp32 as IEEE products, not TF32) and use each tile while
it is still in registers:

- ``matmul_power_sums`` (grid: row blocks × vocabulary splits): each program walks a contiguous
  range of vocabulary tiles for its ``BLOCK_M`` rows and folds every tile into the online power
  sums of :mod:`entropy_dynamics.kernels.power_sums` — running max ``m``, ``A, B`` (and ``C, D``
  for ``E_p[S]``), rebased onto each new max by ``A' = e^δ A``, ``B' = e^δ (B + δ A)``,
  ``C' = e^{2δ} C``, ``D' = e^{2δ} (D + δ C)`` — and picks ``x_k``. Columns ``≥ valid_vocab``
  get ``p = 0``. The per-(split, row) partial sums, ``(6, splits, N)`` floats, are merged by
  ``power_sums.merge_splits``.
- ``matmul_logit_grad`` (grid: row blocks × vocabulary tiles): recomputes the tile and writes
  ``grad_z = e ⊙ (coef + g2s·rel) + g1t·[col = k]`` (``rel = x - max``, ``e = exp(rel)``; the
  per-row coefficients of :func:`entropy_dynamics.kernels.logit_grad.grad_coefficients`) in the
  gradient matmuls' dtype.

Why: the Triton kernels of :mod:`.triton_loss` run after a cuBLAS matmul has written a float32
``(r, V)`` logits block, which they read back (statistics) and read + write again (``grad_z``);
on an H100 in bf16 those passes are memory-bound (the fused loss forward is 2.44× its three
matmuls, docs/performance.md "GPU"). Here the statistics cost no logits traffic at all, and the
gradient costs one extra matmul on the tensor cores instead of a float32 write and two reads.
:func:`triton_matmul_block` has the contract of the fused loss's other block backends
(``fused_loss.BlockFunction``); ``streaming.fused_token_stats`` with ``backend="triton-matmul"``
takes its forward from here. The launchers take the lm_head as one
:class:`~entropy_dynamics.kernels.lm_head.LMHead` (weight, bias, ``1 / T``, valid vocabulary).

Their speed is unmeasured until a GPU run (``benchmarks/gpu/check_triton_matmul.py``); they are
tested through Triton's CPU interpreter and compiled ahead of time for sm_90 (where the test also
checks that the K loop is software-pipelined: ``cp.async`` into several shared-memory stages).
Imported only when used (CUDA with triton, or ``TRITON_INTERPRET=1`` in the tests).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from entropy_dynamics.kernels.lm_head import LMHead
from entropy_dynamics.kernels.logit_grad import grad_coefficients
from entropy_dynamics.kernels.power_sums import Sums, finalize, merge_splits

__all__ = ["matmul_logit_grad", "matmul_power_sums", "triton_matmul_block"]

# Hopper defaults: a 128 × 128 float32 accumulator over 8 warps, 64-deep K steps, 3 stages of
# shared memory (96 KiB for bf16 inputs). float32 inputs take 64 × 128 × 32 tiles: at 128 × 128 ×
# 64 the sm_90 compile of the power-sums kernel spills ~12 KiB per thread (ptxas), at 64 × 128 × 32
# it does not.
BLOCK_M, BLOCK_N, BLOCK_K, NUM_WARPS, NUM_STAGES = 128, 128, 64, 8, 3
FLOAT32_TILES = (64, 128, 32)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # tf32 is ignored for half inputs


def _upcast(dtype: torch.dtype) -> bool:
    return _interpreting() and dtype != torch.float32


def _tiles(dtype: torch.dtype, block_m, block_n, block_k) -> tuple[int, int, int]:
    """The tile shape: the arguments where given, else the defaults for ``dtype``."""
    default = FLOAT32_TILES if dtype == torch.float32 else (BLOCK_M, BLOCK_N, BLOCK_K)
    given = (block_m, block_n, block_k)
    return tuple(d if g is None else g for g, d in zip(given, default, strict=True))  # type: ignore[return-value]


def _stages(num_stages: int | None, dtype: torch.dtype) -> int:
    if num_stages is not None:
        return num_stages
    return 2 if dtype == torch.float32 else NUM_STAGES  # float32 tiles: twice the shared memory


@triton.jit
def _logits_tile(
    h_ptr, w_ptr, bias_ptr, rows, cols, row_ok, col_ok, dim, inv_t,
    stride_hn, stride_hd, stride_wv, stride_wd,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``(h[rows] @ w[cols]ᵀ + bias[cols]) · inv_t`` as float32 ``(BLOCK_M, BLOCK_N)``; offsets
    in int64 (``N·d`` and ``V·d`` may exceed 2^31; ``rows`` comes in int64, ``cols`` in int32
    so that the compiler still sees contiguous columns); masked rows / columns read 0.
    ``UPCAST`` (interpreter only): half operands go to float32 before ``tl.dot``, exactly, since
    triton 3.9's interpreter multiplies bf16 operands wrongly."""
    ks = tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    h_ptrs = h_ptr + rows[:, None] * stride_hn + ks[None, :] * stride_hd  # (BLOCK_M, BLOCK_K)
    w_ptrs = w_ptr + cols[None, :].to(tl.int64) * stride_wv + ks[:, None] * stride_wd  # (K, N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # (BLOCK_M, BLOCK_N)
    for k0 in range(0, dim, BLOCK_K):
        k_ok = ks < dim - k0  # (BLOCK_K,)
        h = tl.load(h_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(w_ptrs, mask=col_ok[None, :] & k_ok[:, None], other=0.0)  # (BLOCK_K, BLOCK_N)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, w, acc, input_precision=PRECISION)  # (M, K) x (K, N) -> (M, N)
        h_ptrs += BLOCK_K * stride_hd
        w_ptrs += BLOCK_K * stride_wd
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]  # (1, N)
    return acc * inv_t  # (BLOCK_M, BLOCK_N)


@triton.jit
def _power_sums_kernel(
    h_ptr, w_ptr, bias_ptr, tokens_ptr, partial_ptr,
    n_rows, valid_vocab, dim, split_cols, inv_t,
    stride_hn, stride_hd, stride_wv, stride_wd,
    HAS_BIAS: tl.constexpr, WITH_ES: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_s = tl.program_id(1)  # the vocabulary split
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # (BLOCK_M,)
    row_ok = rows < n_rows  # (BLOCK_M,)
    tok = tl.load(tokens_ptr + rows, mask=row_ok, other=-1)  # (BLOCK_M,) int64
    v_begin = pid_s * split_cols
    v_end = tl.minimum(v_begin + split_cols, valid_vocab)
    # the initial running max: finite, so that δ · 0 never forms inf · 0 (a literal: jit'd code
    # may not read module globals); masked columns sit at the same floor with e forced to 0
    m = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # (BLOCK_M,) running max
    a = tl.zeros((BLOCK_M,), tl.float32)  # (BLOCK_M,) each of A, B, C, D and x_k
    b = tl.zeros((BLOCK_M,), tl.float32)
    c = tl.zeros((BLOCK_M,), tl.float32)
    d = tl.zeros((BLOCK_M,), tl.float32)
    x_k = tl.zeros((BLOCK_M,), tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_N):
        cols = v0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        col_ok = cols < v_end  # (BLOCK_N,)
        x = _logits_tile(  # (BLOCK_M, BLOCK_N)
            h_ptr, w_ptr, bias_ptr, rows, cols, row_ok, col_ok, dim, inv_t,
            stride_hn, stride_hd, stride_wv, stride_wd,
            HAS_BIAS, PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        hit = (tok >= v0) & (tok < v0 + BLOCK_N)  # (BLOCK_M,) rows whose token is in this tile
        if tl.max(hit.to(tl.int32), 0) > 0:  # most tiles hold none: skip the 2-D select + sum
            x_k += tl.sum(tl.where(cols[None, :] == tok[:, None], x, 0.0), 1)  # (BLOCK_M,)
        x = tl.where(col_ok[None, :], x, -1.0e30)  # (BLOCK_M, BLOCK_N)
        new_m = tl.maximum(m, tl.max(x, 1))  # (BLOCK_M,)
        delta = m - new_m  # (BLOCK_M,) ≤ 0, finite
        scale = tl.exp(delta)  # (BLOCK_M,)
        rel = x - new_m[:, None]  # (BLOCK_M, BLOCK_N) ≤ 0, finite
        e = tl.where(col_ok[None, :], tl.exp(rel), 0.0)  # (BLOCK_M, BLOCK_N)
        rel_e = rel * e  # (BLOCK_M, BLOCK_N)
        b = scale * (b + delta * a) + tl.sum(rel_e, 1)  # (BLOCK_M,)
        a = scale * a + tl.sum(e, 1)
        if WITH_ES:
            scale2 = scale * scale
            d = scale2 * (d + delta * c) + tl.sum(rel_e * e, 1)
            c = scale2 * c + tl.sum(e * e, 1)
        m = new_m
    field = tl.num_programs(1).to(tl.int64) * n_rows  # partial is (6, splits, N)
    out = partial_ptr + pid_s.to(tl.int64) * n_rows + rows  # (BLOCK_M,) pointers
    tl.store(out, m, mask=row_ok)
    tl.store(out + field, a, mask=row_ok)
    tl.store(out + 2 * field, b, mask=row_ok)
    tl.store(out + 3 * field, c, mask=row_ok)
    tl.store(out + 4 * field, d, mask=row_ok)
    tl.store(out + 5 * field, x_k, mask=row_ok)


@triton.jit
def _logit_grad_kernel(
    h_ptr, w_ptr, bias_ptr, tokens_ptr, coef_ptr, out_ptr,
    n_rows, n_cols, out_cols, dim, inv_t,
    stride_hn, stride_hd, stride_wv, stride_wd, stride_on,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # (BLOCK_M,)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_ok = rows < n_rows  # (BLOCK_M,)
    col_ok = cols < n_cols  # (BLOCK_N,)
    x = _logits_tile(  # (BLOCK_M, BLOCK_N)
        h_ptr, w_ptr, bias_ptr, rows, cols, row_ok, col_ok, dim, inv_t,
        stride_hn, stride_hd, stride_wv, stride_wd,
        HAS_BIAS, PRECISION, UPCAST, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    tok = tl.load(tokens_ptr + rows, mask=row_ok, other=-1)  # (BLOCK_M,)
    row_max = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)  # (BLOCK_M,) each of the four
    coef = tl.load(coef_ptr + n_rows + rows, mask=row_ok, other=0.0)
    g2s = tl.load(coef_ptr + 2 * n_rows + rows, mask=row_ok, other=0.0)
    g1t = tl.load(coef_ptr + 3 * n_rows + rows, mask=row_ok, other=0.0)
    rel = x - row_max[:, None]  # (BLOCK_M, BLOCK_N)
    grad = tl.exp(rel) * (coef[:, None] + g2s[:, None] * rel)  # (BLOCK_M, BLOCK_N)
    grad += tl.where(cols[None, :] == tok[:, None], g1t[:, None], 0.0)
    grad = tl.where(col_ok[None, :], grad, 0.0)  # columns n_cols ≤ c < out_cols: padding, 0
    # masked on out_cols (a multiple of 16 where the caller pads), not n_cols: a mask that is
    # constant over 8 columns lets the compiler write 16-byte vectors
    mask = row_ok[:, None] & (cols < out_cols)[None, :]  # (BLOCK_M, BLOCK_N)
    out = out_ptr + rows[:, None] * stride_on + cols[None, :]  # (BLOCK_M, BLOCK_N) pointers
    tl.store(out, grad.to(out_ptr.dtype.element_ty), mask=mask)


def _num_splits(row_blocks: int, tiles: int, device: torch.device) -> int:
    """Vocabulary splits so that (row blocks × splits) fills about two waves of the GPU: at most
    ``2 × SMs`` programs (rounding down, so a last wave is never a small tail)."""
    if device.type == "cuda" and not _interpreting():
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 8  # interpreter: exercise the split merge without many programs
    return max(1, min(tiles, target // row_blocks))


def matmul_power_sums(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    with_es: bool,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int = NUM_WARPS,
    num_stages: int | None = None,
    splits: int | None = None,
) -> tuple[Sums, Tensor]:
    """The merged power sums of ``x = (hidden @ Wᵀ + b) / T`` over the valid vocabulary of
    ``head``, and ``x_k``, without writing any logits.

    Args:
        hidden: ``(N, d)`` bf16 / fp16 / fp32 (any strides), the dtype of ``head.weight``.
        head: the lm_head; columns ``≥ head.valid_vocab`` get ``p = 0``.
        tokens: ``(N,)`` int64 ids in ``[0, valid_vocab)``.
        with_es: also the sums ``C, D`` of ``E_p[S]`` (else they are 0).
        block_m, block_n, block_k, num_warps: tile shape and warps (``None``: the Hopper
            defaults, 128 × 128 × 64, or 64 × 128 × 32 for float32 inputs); ``num_stages``
            ``None``: 3, or 2 for float32 inputs.
        splits: vocabulary splits (``None``: about two waves of SMs on CUDA, few under the
            interpreter); every split gets at least one tile.

    Returns:
        ``((row_max, A, B, C, D), x_k)``, float32 ``(N,)`` each, for ``power_sums.finalize``.
    """
    weight, bias, valid_vocab = head.weight, head.bias, head.valid_vocab  # (V, d), (V,)
    n_rows, dim = hidden.shape
    block_m, block_n, block_k = _tiles(hidden.dtype, block_m, block_n, block_k)
    row_blocks = triton.cdiv(n_rows, block_m)
    tiles = triton.cdiv(valid_vocab, block_n)
    if splits is None:
        splits = _num_splits(row_blocks, tiles, hidden.device)
    tiles_per_split = triton.cdiv(tiles, max(1, min(splits, tiles)))
    splits = triton.cdiv(tiles, tiles_per_split)  # every split non-empty
    partial = torch.empty(6, splits, n_rows, dtype=torch.float32, device=hidden.device)
    _power_sums_kernel[(row_blocks, splits)](
        hidden, weight, bias if bias is not None else hidden, tokens.contiguous(), partial,
        n_rows, valid_vocab, dim, tiles_per_split * block_n, head.inv_t,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        HAS_BIAS=bias is not None, WITH_ES=with_es, PRECISION=_precision(hidden.dtype),
        UPCAST=_upcast(hidden.dtype), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=num_warps, num_stages=_stages(num_stages, hidden.dtype),
    )  # fmt: skip
    sums = merge_splits(tuple(partial[:5]))  # type: ignore[arg-type]  # 5 × (N,)
    return sums, partial[5].sum(0)  # one split holds each row's token, the others add 0


def matmul_logit_grad(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    coefficients: Tensor,
    out: Tensor,
    *,
    start: int = 0,
    stop: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int = NUM_WARPS,
    num_stages: int | None = None,
) -> Tensor:
    """Write ``grad_z = e ⊙ (coef + g2s·rel) + g1t·[col = k]`` of the vocabulary columns
    ``[start, stop)`` of ``head`` into ``out`` and return it.

    Args:
        hidden: ``(r, d)``, the dtype of ``head.weight``.
        head: the lm_head; ``stop`` ``None``: its valid vocabulary's end. Below, ``V' = stop -
            start``.
        tokens: ``(r,)`` int64 ids in the full vocabulary (a row whose token lies outside the
            columns gets no ``g1t`` term).
        coefficients: ``(4, r)`` float32 contiguous: ``row_max, coef, g2s, g1t`` per row, with
            ``rel = x - row_max`` (:func:`~entropy_dynamics.kernels.logit_grad.grad_coefficients`).
        out: ``(r, W)`` float32 / bf16 / fp16, ``W ≥ V'``, unit column stride; columns
            ``≥ V'`` get 0. A ``W`` (and row stride) that is a multiple of 16 lets the
            kernel store 16-byte vectors: :func:`triton_matmul_block` pads ``V'`` so.
        block_m, block_n, block_k, num_warps, num_stages: as in :func:`matmul_power_sums`.
    """
    weight, bias = head.rows(start, stop)  # (V', d), (V',)
    if start:
        tokens = tokens - start  # (r,) ids relative to the first column
    n_rows, dim = hidden.shape
    block_m, block_n, block_k = _tiles(hidden.dtype, block_m, block_n, block_k)
    n_cols, out_cols = weight.shape[0], out.shape[1]
    assert out_cols >= n_cols and out.stride(1) == 1, "out must be (r, >= V') with unit stride"
    grid = (triton.cdiv(n_rows, block_m), triton.cdiv(out_cols, block_n))
    _logit_grad_kernel[grid](
        hidden, weight, bias if bias is not None else hidden, tokens.contiguous(),
        coefficients, out, n_rows, n_cols, out_cols, dim, head.inv_t,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), out.stride(0),
        HAS_BIAS=bias is not None, PRECISION=_precision(hidden.dtype),
        UPCAST=_upcast(hidden.dtype), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=num_warps, num_stages=_stages(num_stages, hidden.dtype),
    )  # fmt: skip
    return out


def triton_matmul_block(head: LMHead, h: Tensor, tokens: Tensor, with_es: bool, **blocks):
    """``(stats, grad_fn)`` of one block of the fused loss (``fused_loss.BlockFunction``).

    ``h`` ``(r, d)``, ``tokens`` ``(r,)``; the compute dtype is float32. ``stats`` is
    ``(log p_k, H, S_k, E_p[S], log A)``, float32 ``(r,)`` each; ``grad_fn(g1, g2, live=None)``
    returns ``grad_z`` in ``h``'s dtype, ``(r, V')`` over the valid vocabulary ``V'``, or of the
    rows ``live`` (indices) only. ``blocks``: tile keywords of :func:`matmul_power_sums` (tests).
    """
    assert h.dtype != torch.float64, "the Triton kernels accumulate in float32"
    sums, x_k = matmul_power_sums(h, head, tokens, with_es, **blocks)
    log_p_k, entropy, s_k, e_s, lse = finalize(sums, x_k)  # 5 × (r,)
    row_max = sums[0]  # (r,)
    block = (log_p_k, entropy, s_k, e_s, lse - row_max)
    blocks.pop("splits", None)

    def grad_fn(g1: Tensor, g2: Tensor, live: Tensor | None = None) -> Tensor:
        coef, g2s, g1t = grad_coefficients(block[4], entropy, g1, g2, head.inv_t)  # 3 × (r,)
        coefficients = torch.stack([row_max, coef, g2s, g1t]).float()  # (4, r)
        rows, row_tokens = h, tokens
        if live is not None:  # only the live rows' tiles are recomputed
            coefficients, rows, row_tokens = coefficients[:, live], h[live], tokens[live]
        vocab = head.valid_vocab
        width = triton.cdiv(vocab, 16) * 16  # aligned rows (Qwen: V' = 151,665 → 151,680)
        out = torch.empty(rows.shape[0], width, dtype=h.dtype, device=h.device)  # (r, width)
        matmul_logit_grad(rows, head, row_tokens, coefficients.contiguous(), out, **blocks)
        return out[:, :vocab]  # (r, V') view; cuBLAS takes the padded row stride as is

    return block, grad_fn
