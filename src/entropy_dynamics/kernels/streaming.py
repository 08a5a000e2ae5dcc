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

Backends (:func:`resolve_backend`): ``"torch"``; ``"triton"`` (:mod:`.triton_stats`, the choice of
``"auto"`` on CUDA); ``"triton-matmul"``, opt-in: the forward of :mod:`.triton_matmul` (Hopper
tile defaults, splits sized to the GPU; unmeasured until a GPU run), the backward of ``"triton"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor

from entropy_dynamics.kernels.logit_grad import logit_grad_
from entropy_dynamics.kernels.power_sums import Sums, finalize, rebase

__all__ = [
    "DEFAULT_ROW_CHUNK",
    "DEFAULT_VOCAB_CHUNK",
    "fused_token_stats",
    "triton_usable",
]

DEFAULT_VOCAB_CHUNK = 4096
DEFAULT_ROW_CHUNK = 1024


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _block_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, inv_t: float, dtype: torch.dtype
) -> Tensor:
    """``(hidden @ weightᵀ + bias) / T`` as a fresh ``(n, v)`` tensor in the compute ``dtype``."""
    if hidden.dtype == dtype:  # float32 / float64: scale inside the GEMM, no extra pass
        if bias is None:
            out = hidden @ weight.T
            return out if inv_t == 1.0 else out.mul_(inv_t)
        return torch.addmm(bias, hidden, weight.T, beta=inv_t, alpha=inv_t)
    z = hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T)
    out = z.to(dtype)  # half-precision logits as the lm_head produces them, upcast per block
    return out if inv_t == 1.0 else out.mul_(inv_t)


def _block_sums(x: Tensor, new_max: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(A, B, C, D)`` of one block ``x`` ``(n, v)`` relative to ``new_max``; clobbers ``x``."""
    rel = x.sub_(new_max.unsqueeze(-1))  # (n, v) ≤ 0
    e = rel.exp()  # the only other block-sized tensor
    a = e.sum(-1)
    b = rel.mul_(e).sum(-1)  # rel := (x - m) e^{x - m}, in place
    d = rel.mul_(e).sum(-1)  # rel := (x - m) e^{2(x - m)}
    return a, b, e.square_().sum(-1), d


def _pick(x: Tensor, tokens: Tensor, start: int, x_k: Tensor) -> Tensor:
    """``x_k`` updated with ``x[row, token - start]`` for rows whose token lies in this block."""
    inside = (tokens >= start) & (tokens < start + x.shape[-1])
    column = (tokens - start).clamp_(0, x.shape[-1] - 1).unsqueeze(-1)
    return torch.where(inside, x.gather(-1, column).squeeze(-1), x_k)


def _forward_torch(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    inv_t: float,
    vocab: int,
    vocab_chunk: int,
    row_chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Streaming forward; ``hidden`` ``(N, d)``, ``weight`` ``(V, d)``, ``tokens`` ``(N,)``."""
    n = hidden.shape[0]
    dtype = _compute_dtype(hidden.dtype)
    state: list[Sums | None] = [None] * ((n + row_chunk - 1) // row_chunk)
    x_k = torch.zeros(n, dtype=dtype, device=hidden.device)
    for v0 in range(0, vocab, vocab_chunk):
        v1 = min(v0 + vocab_chunk, vocab)
        w = weight[v0:v1]  # (v, d)
        b = None if bias is None else bias[v0:v1]
        for i, r0 in enumerate(range(0, n, row_chunk)):
            rows = slice(r0, r0 + row_chunk)
            x = _block_logits(hidden[rows], w, b, inv_t, dtype)  # (r, v)
            x_k[rows] = _pick(x, tokens[rows], v0, x_k[rows])
            block_max = x.amax(-1)  # (r,); amax: no argmax, several times cheaper than max
            prev = state[i]
            new_max = block_max if prev is None else torch.maximum(prev[0], block_max)
            sums = _block_sums(x, new_max)
            if prev is not None:
                sums = tuple(s + p for s, p in zip(sums, rebase(prev, new_max), strict=True))
            state[i] = (new_max, *sums)
            del x
    merged = tuple(torch.cat(parts) for parts in zip(*state, strict=True))
    return finalize(merged, x_k)  # type: ignore[arg-type]


GradTile = Callable[[slice, int, int], Tensor]


def _torch_grad_tile(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tokens: Tensor,
    lse: Tensor,
    entropy: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
    inv_t: float,
) -> GradTile:
    """``grad_z`` of one ``[rows, v0:v1]`` block (compute dtype), recomputing its logits
    (:func:`~entropy_dynamics.kernels.logit_grad.logit_grad_`)."""
    dtype = lse.dtype

    def tile(rows: slice, v0: int, v1: int) -> Tensor:
        b = None if bias is None else bias[v0:v1]
        log_p = _block_logits(hidden[rows], weight[v0:v1], b, inv_t, dtype)  # (r, v)
        log_p.sub_(lse[rows].unsqueeze(-1))
        g_logprob = None if g1 is None else g1[rows]
        g_entropy = None if g2 is None else g2[rows]
        return logit_grad_(log_p, entropy[rows], g_logprob, g_entropy, tokens[rows], inv_t, v0)

    return tile


def _backward_loop(
    tile: GradTile,
    hidden: Tensor,
    weight: Tensor,
    vocab: int,
    vocab_chunk: int,
    row_chunk: int,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Accumulate ``grad_hidden``, ``grad_W``, ``grad_b`` from the ``grad_z`` tiles."""
    need_h, need_w, need_b = needs
    dtype = _compute_dtype(hidden.dtype)
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
                acc_b += grad.sum(0, dtype=dtype)
            if grad.dtype == hidden.dtype:  # float32 / float64: accumulate inside the GEMM
                if grad_h is not None:
                    grad_h[rows].addmm_(grad, w)  # (r, v) x (v, d) -> (r, d)
                if acc_w is not None:
                    acc_w.addmm_(grad.T, hidden[rows])  # (v, r) x (r, d) -> (v, d)
                del grad  # free the tile before the next one is formed: two blocks at most
                continue
            grad = grad.to(hidden.dtype)  # half: matmuls in the input dtype, sums in float32
            if grad_h is not None:
                grad_h[rows] += grad @ w
            if acc_w is not None:
                acc_w += grad.T @ hidden[rows]
            del grad
        if grad_w is not None:
            grad_w[v0:v1] = acc_w
        if grad_b is not None:
            grad_b[v0:v1] = acc_b
    return None if grad_h is None else grad_h.to(hidden.dtype), grad_w, grad_b


class _FusedTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, hidden, weight, bias, tokens, temperature, vocab, vocab_chunk, row_chunk, kind
    ):
        inv_t = 1.0 / temperature
        if kind == "triton-matmul":
            from entropy_dynamics.kernels import triton_matmul

            sums, x_k = triton_matmul.matmul_power_sums(
                hidden, weight, bias, tokens, inv_t, vocab, with_es=True
            )
            outs = finalize(sums, x_k)
        elif kind == "triton":
            from entropy_dynamics.kernels import triton_stats

            outs = triton_stats.forward(hidden, weight, bias, tokens, inv_t, vocab)
        else:
            outs = _forward_torch(
                hidden, weight, bias, tokens, inv_t, vocab, vocab_chunk, row_chunk
            )
        log_p_k, entropy, discriminator, expected_s, lse = outs
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, entropy)
        ctx.config = (inv_t, vocab, vocab_chunk, row_chunk, kind)
        ctx.mark_non_differentiable(discriminator, expected_s)
        ctx.set_materialize_grads(False)
        return log_p_k, entropy, discriminator, expected_s

    @staticmethod
    def backward(ctx, g1, g2, _g_s, _g_e):  # type: ignore[override]
        hidden, weight, bias, tokens, lse, entropy = ctx.saved_tensors
        inv_t, vocab, vocab_chunk, row_chunk, kind = ctx.config
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        if (g1 is None and g2 is None) or not any(needs):
            return (None,) * 9
        g1 = None if g1 is None else g1.to(lse.dtype)
        g2 = None if g2 is None else g2.to(lse.dtype)
        args = (hidden, weight, bias, tokens, lse, entropy, g1, g2, inv_t)
        if kind != "torch":  # "triton-matmul" too: only its forward differs
            from entropy_dynamics.kernels import triton_stats

            tile = triton_stats.grad_tile(*args)
        else:
            tile = _torch_grad_tile(*args)
        grads = _backward_loop(tile, hidden, weight, vocab, vocab_chunk, row_chunk, needs)
        return (*grads, None, None, None, None, None, None)


def triton_usable(device: torch.device, interpreter: bool = False) -> bool:
    """Whether the Triton kernel can run on ``device``: CUDA + triton (or, with ``interpreter``,
    any device under ``TRITON_INTERPRET=1``, Triton's CPU interpreter used by the tests)."""
    interpret = interpreter and os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type != "cuda" and not interpret:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("auto", "torch", "triton", "triton-matmul")


def resolve_backend(backend: str, hidden: Tensor) -> str:
    """The kernel that runs for ``backend`` on ``hidden``: ``"torch"``, ``"triton"``
    (:mod:`.triton_stats`, what ``"auto"`` picks where triton and CUDA are there and the input is
    not float64) or ``"triton-matmul"`` (opt-in, never picked by ``"auto"``: the forward of
    :mod:`.triton_matmul`, the backward of ``"triton"``). A Triton backend named where it cannot
    run (no CUDA and no ``TRITON_INTERPRET=1``, or float64) is refused."""
    if backend not in BACKENDS:
        names = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"backend must be one of {names}, got {backend!r}")
    usable = triton_usable(hidden.device, interpreter=backend != "auto")
    usable = usable and hidden.dtype != torch.float64
    if backend == "auto":
        return "triton" if usable else "torch"
    if backend != "torch" and not usable:
        raise ValueError(
            f"backend={backend!r} needs the triton package and a CUDA tensor (or "
            "TRITON_INTERPRET=1 for the CPU interpreter), and does not take float64; use "
            "backend='torch'"
        )
    return backend


def _check_inputs(hidden, weight, tokens, bias, vocab_chunk, row_chunk, valid_vocab) -> int:
    """Validate the arguments of :func:`fused_token_stats` (the temperature is the caller's to
    check); return the number of vocabulary rows to use."""
    if not hidden.is_floating_point():
        raise TypeError(f"hidden must be a floating-point tensor, got {hidden.dtype}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must be the lm_head weight of shape (V, d) with d = hidden.shape[-1] = "
            f"{hidden.shape[-1]}, got {tuple(weight.shape)}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(
            f"weight and hidden must share dtype and device, got weight {weight.dtype} on "
            f"{weight.device} and hidden {hidden.dtype} on {hidden.device}"
        )
    vocab = weight.shape[0]
    if bias is not None:
        if bias.shape != (vocab,) or bias.dtype != weight.dtype:
            raise ValueError(
                f"bias must have shape ({vocab},) and dtype {weight.dtype}, "
                f"got {tuple(bias.shape)} {bias.dtype}"
            )
        if not torch.isfinite(bias).all():
            raise ValueError("bias must be finite; mask a padded vocabulary with valid_vocab")
    if hidden.shape[:-1] != tokens.shape:
        raise ValueError(
            f"tokens must have the shape of hidden without its last dimension: hidden "
            f"{tuple(hidden.shape)} needs tokens {tuple(hidden.shape[:-1])}, "
            f"got {tuple(tokens.shape)}"
        )
    if tokens.is_floating_point() or tokens.is_complex():
        raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
    if valid_vocab is None:
        valid_vocab = vocab
    if not 1 <= valid_vocab <= vocab:
        raise ValueError(
            f"valid_vocab must lie in [1, {vocab}] (rows of weight), got {valid_vocab}"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= valid_vocab):
        raise ValueError(
            f"token ids must lie in [0, {valid_vocab}) (valid_vocab), "
            f"got ids in [{int(tokens.min())}, {int(tokens.max())}]"
        )
    for name, value in (("vocab_chunk", vocab_chunk), ("row_chunk", row_chunk)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return valid_vocab


def fused_token_stats(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
    *,
    bias: Tensor | None = None,
    vocab_chunk: int | None = None,
    row_chunk: int | None = None,
    valid_vocab: int | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S])`` of ``softmax((hidden @ weightᵀ + bias) / T)``, streamed.

    The kernel behind :func:`entropy_dynamics.stats.token_stats_from_hidden`, which checks the
    temperature and wraps the result in ``TokenStats``; arguments as documented there.

    Returns:
        Four tensors of the shape of ``tokens``, float32 (float64 for float64 input);
        ``log p_k`` and ``H`` carry gradients to ``hidden``, ``weight`` and ``bias``,
        ``S_k`` and ``E_p[S]`` are not differentiable.
    """
    vocab_chunk = DEFAULT_VOCAB_CHUNK if vocab_chunk is None else vocab_chunk
    row_chunk = DEFAULT_ROW_CHUNK if row_chunk is None else row_chunk
    vocab = _check_inputs(hidden, weight, tokens, bias, vocab_chunk, row_chunk, valid_vocab)
    kind = resolve_backend(backend, hidden)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    flat_tokens = tokens.reshape(-1).long()  # (N,)
    outs = _FusedTokenStats.apply(
        flat_hidden,
        weight,
        bias,
        flat_tokens,
        float(temperature),
        vocab,
        int(vocab_chunk),
        int(row_chunk),
        kind,
    )
    return tuple(x.reshape(tokens.shape) for x in outs)  # type: ignore[return-value]
