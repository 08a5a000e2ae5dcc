"""Memory-bounded per-token statistics: log p_k, H, S_k and E_p[S] in one pass over the logits.

The definitions are those of :mod:`entropy_dynamics.theory`; this module computes all four at once
for a batch of positions, chunked over rows so that at most one chunk of ``[N, V]`` exists in the
compute dtype (float32, or float64 for float64 input) at any time — in the forward pass and in the
backward pass, which recomputes each chunk instead of saving it (custom autograd; the logit
gradient is :func:`entropy_dynamics.kernels.logit_grad.logit_grad_`, shared with the fused path).

Gradients: ``logprobs`` is differentiable with respect to the logits; ``entropy`` is too when
``entropy_grad=True`` (for entropy bonuses); ``discriminator`` and ``expected_discriminator`` are
always detached — the filters use them as constants, as in the reference implementation.

Precision: bfloat16 / float16 logits are upcast chunk by chunk, so the statistics of the
distribution they define are exact to float32 rounding (relative error ~1e-6); the difference to
the statistics of the unrounded float32 logits is the rounding of the logits themselves. Each row
is centred on its max *before* the division by ``T``: ``z_i - z_max`` is exact for the entries
that carry the probability, whereas ``z / T`` and ``logsumexp`` at ``|z| / T ~ 1e5`` would round
to float32's spacing there (0.008), ~1e-3 nats of error in ``log p`` and ``H``.

Undefined rows: a row whose softmax does not exist (a NaN or ``+inf`` logit, every logit ``-inf``,
a half-precision lm_head that overflowed) is refused with a ``ValueError`` naming its position
(there ``log p_k`` comes out NaN, never merely ``-inf``). A sampled token whose logit is ``-inf``
is not an error (padded positions may hold any id): ``log p_k = -inf``, ``S_k = 0`` and its logit
gradient ``(e_k - p) / T`` is finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.kernels import Chunking, LMHead, fused_token_stats, logit_grad_
from entropy_dynamics.kernels.lm_head import compute_dtype
from entropy_dynamics.theory import check_temperature

__all__ = [
    "TokenStats",
    "default_chunk_size",
    "head_token_stats",
    "token_stats",
    "token_stats_from_hidden",
]

_CHUNK_BYTES = 1 << 26  # 64 MiB of float32 per chunk of [rows, V] by default


@dataclass(frozen=True)
class TokenStats:
    """Statistics of ``p = softmax(z / T)`` at the sampled tokens; all shapes ``(...)``.

    Attributes:
        logprobs: ``log p_k`` of the sampled token (differentiable).
        entropy: ``H`` (differentiable only if requested).
        discriminator: ``S_k = p_k (H + log p_k)`` (detached).
        expected_discriminator: ``E_{i~p}[S_i] = Σ_i p_i² (H + log p_i)`` (detached).
    """

    logprobs: Tensor
    entropy: Tensor
    discriminator: Tensor
    expected_discriminator: Tensor

    @property
    def deviation(self) -> Tensor:
        """``S_k - E_p[S]``: Theorem 3.3's driver of the entropy change (detached)."""
        return self.discriminator - self.expected_discriminator

    def metrics(self, mask: Tensor) -> dict[str, Tensor]:
        """Means over ``mask`` (``(...)``, bool) as 0-d tensors, the keys every engine logs:
        ``entropy/mean`` and ``discriminator/{mean, std, frac_positive, deviation_mean}``
        (std: population, over the masked tokens)."""
        s = self.discriminator
        s_mean = masked_mean(s, mask)
        return {
            "entropy/mean": masked_mean(self.entropy, mask),
            "discriminator/mean": s_mean,
            "discriminator/std": masked_mean((s - s_mean) ** 2, mask).sqrt(),
            "discriminator/frac_positive": masked_mean((s > 0).float(), mask),
            "discriminator/deviation_mean": masked_mean(self.deviation, mask),
        }

    def detach(self) -> TokenStats:
        return TokenStats(
            self.logprobs.detach(),
            self.entropy.detach(),
            self.discriminator,
            self.expected_discriminator,
        )


def _check_defined(log_p_k: Tensor, entropy: Tensor, logits: str, causes: str) -> None:
    """Refuse rows without a softmax. Of a distribution, ``H`` is finite and ``log p_k`` at worst
    ``-inf`` (``p_k = 0``); an undefined normaliser makes ``log p_k`` NaN. Shapes ``(...)``."""
    defined = ~torch.isnan(log_p_k) & torch.isfinite(entropy)
    if not bool(defined.all()):
        position = tuple(int(i) for i in (~defined).nonzero()[0])
        raise ValueError(f"{logits} at position {position} define no softmax: {causes}")


def default_chunk_size(vocab_size: int) -> int:
    """Rows per chunk so that one float32 ``[rows, V]`` block is about 64 MiB."""
    return max(1, _CHUNK_BYTES // (4 * max(vocab_size, 1)))


def _centred(logits: Tensor, z_max: Tensor, temperature: float) -> Tensor:
    """``(z - z_max) / T`` ``(n, V)`` in the dtype of ``z_max`` ``(n,)`` (type promotion upcasts
    half logits in the same pass): centred first, ``|z| / T`` is never formed."""
    return torch.sub(logits, z_max.unsqueeze(-1)).div_(temperature)


def _chunk_forward(
    logits: Tensor, tokens: Tensor, temperature: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Statistics of one chunk of rows. ``logits`` ``(n, V)``, ``tokens`` ``(n,)``.

    Returns ``(log p_k, H, S_k, E_p[S], z_max, logsumexp((z - z_max) / T))``, each ``(n,)``.
    """
    z_max = logits.amax(-1).to(dtype)  # (n,)
    scaled = _centred(logits, z_max, temperature)  # (n, V) ≤ 0, with a 0 at the max
    e = scaled.exp()  # (n, V): no overflow, so no logsumexp (whose own max pass is redundant)
    total = e.sum(-1)  # (n,) in [1, V]
    lse = total.log()  # (n,)
    log_p = scaled.sub_(lse.unsqueeze(-1))  # (n, V)
    p = e.div_(total.unsqueeze(-1))
    p_log_p = torch.where(p > 0, p * log_p, torch.zeros_like(p))  # limit 0 at p = 0
    h = -p_log_p.sum(-1)  # (n,)
    log_p_k = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (n,)
    p_k = log_p_k.exp()
    s_k = torch.where(p_k > 0, p_k * (h + log_p_k), torch.zeros_like(p_k))
    # E_p[S] = H Σ p² + Σ p² log p  (theory.expected_discriminator)
    e_s = h * (p * p).sum(-1) + (p * p_log_p).sum(-1)
    return log_p_k, h, s_k, e_s, z_max, lse


class _ChunkedTokenStats(torch.autograd.Function):
    """Forward over row chunks; backward recomputes each chunk's softmax from the saved logits."""

    @staticmethod
    def forward(ctx, logits, tokens, temperature, chunk_size, dtype):  # type: ignore[override]
        outs = [torch.empty(logits.shape[0], dtype=dtype, device=logits.device) for _ in range(6)]
        for start in range(0, logits.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            for out, value in zip(
                outs, _chunk_forward(logits[rows], tokens[rows], temperature, dtype), strict=True
            ):
                out[rows] = value
        log_p_k, h, s_k, e_s, z_max, lse = outs
        ctx.save_for_backward(logits, tokens, z_max, lse, h)
        ctx.temperature, ctx.chunk_size, ctx.dtype = temperature, chunk_size, dtype
        ctx.mark_non_differentiable(s_k, e_s)
        ctx.set_materialize_grads(False)  # an unused H (no entropy bonus) costs nothing
        return log_p_k, h, s_k, e_s

    @staticmethod
    def backward(ctx, grad_log_p_k, grad_h, _grad_s, _grad_e):  # type: ignore[override]
        logits, tokens, z_max, lse, h = ctx.saved_tensors
        temperature, chunk_size, dtype = ctx.temperature, ctx.chunk_size, ctx.dtype
        if grad_log_p_k is None and grad_h is None:
            return None, None, None, None, None
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            log_p = _centred(logits[rows], z_max[rows], temperature)  # (n, V)
            log_p.sub_(lse[rows].unsqueeze(-1))
            g1 = None if grad_log_p_k is None else grad_log_p_k[rows].to(dtype)
            g2 = None if grad_h is None else grad_h[rows].to(dtype)
            grad = logit_grad_(log_p, h[rows], g1, g2, tokens[rows], 1.0 / temperature)
            grad_logits[rows] = grad.to(logits.dtype)
        return grad_logits, None, None, None, None


def token_stats(
    logits: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    entropy_grad: bool = False,
) -> TokenStats:
    """Compute :class:`TokenStats` of ``softmax(logits / T)`` at the sampled ``tokens``.

    Args:
        logits: ``(..., V)`` logits, any float dtype; ``-inf`` entries (padded vocabulary) are
            entries with ``p = 0`` and are handled exactly.
        tokens: ``(...)`` integer ids of the sampled tokens, each in ``[0, V)``.
        temperature: sampling temperature ``T``, finite and ``>= theory.MIN_TEMPERATURE`` (1e-5);
            all statistics are of the scaled distribution.
        chunk_size: rows per chunk; ``None`` picks :func:`default_chunk_size` of ``V``.
        entropy_grad: make ``entropy`` differentiable (needed for an entropy bonus).

    Returns:
        :class:`TokenStats` with fields of shape ``(...)`` in float32 (float64 for float64 input).
    """
    check_temperature(temperature)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"tokens must have the shape of logits without the vocabulary dimension: "
            f"logits {tuple(logits.shape)} needs tokens {tuple(logits.shape[:-1])}, "
            f"got {tuple(tokens.shape)}"
        )
    vocab = logits.shape[-1]
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(
            f"token ids must lie in [0, {vocab}) (the logits' vocabulary), "
            f"got ids in [{int(tokens.min())}, {int(tokens.max())}]"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(vocab)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = compute_dtype(logits.dtype)
    batch_shape = tokens.shape
    flat_logits = logits.reshape(-1, vocab)  # (N, V)
    flat_tokens = tokens.reshape(-1).long()  # (N,)
    log_p_k, h, s_k, e_s = _ChunkedTokenStats.apply(
        flat_logits, flat_tokens, float(temperature), int(chunk_size), dtype
    )
    log_p_k, h, s_k, e_s = (x.reshape(batch_shape) for x in (log_p_k, h, s_k, e_s))
    _check_defined(
        log_p_k,
        h,
        "logits",
        "a NaN or +inf entry, or every entry -inf (mask a padded vocabulary "
        "with -inf, never a whole row)",
    )
    return TokenStats(log_p_k, h if entropy_grad else h.detach(), s_k, e_s)


def token_stats_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
    *,
    bias: Tensor | None = None,
    vocab_chunk: int | None = None,
    row_chunk: int | None = None,
    entropy_grad: bool = False,
    valid_vocab: int | None = None,
    backend: str = "auto",
) -> TokenStats:
    """:class:`TokenStats` of ``softmax((hidden @ weightᵀ + bias) / T)``, never forming ``[N, V]``.

    Same values as ``token_stats(hidden @ weight.T + bias, tokens, temperature)``, computed in
    one streaming pass over vocabulary chunks (online max with the four power sums that give
    ``H`` and ``E_p[S]``; derivation in :mod:`entropy_dynamics.kernels.power_sums`), with a custom
    backward that recomputes each chunk (:mod:`entropy_dynamics.kernels.streaming`). The
    arguments make one :class:`~entropy_dynamics.kernels.LMHead` and one
    :class:`~entropy_dynamics.kernels.Chunking`; :func:`head_token_stats` takes those directly.

    Args:
        hidden: ``(..., d)`` final hidden states (bf16 / fp16 / fp32 / fp64).
        weight: ``(V, d)`` lm_head weight, same dtype and device as ``hidden``.
        tokens: ``(...)`` sampled token ids in ``[0, valid_vocab)``.
        temperature: sampling temperature ``T``, finite and ``>= theory.MIN_TEMPERATURE``.
        bias: optional ``(V,)`` finite lm_head bias.
        vocab_chunk: vocabulary rows per block (``None``: 4096).
        row_chunk: positions per block (``None``: 1024); the forward holds about two float32
            ``[row_chunk, vocab_chunk]`` blocks (32 MiB by default); the Triton forward tiles on
            its own, its backward uses these blocks too.
        entropy_grad: make ``entropy`` differentiable (entropy bonus).
        valid_vocab: rows of ``weight`` that are real tokens (Qwen pads 151,665 to 151,936);
            later rows get ``p = 0``.
        backend: ``"auto"`` (the Triton kernel on CUDA when triton is importable, else torch),
            ``"torch"``, ``"triton"`` or ``"triton-matmul"`` (opt-in: the forward of
            :mod:`entropy_dynamics.kernels.triton_matmul`, the backward of ``"triton"``).

    Returns:
        :class:`TokenStats` with fields of shape ``(...)`` in float32 (float64 for float64
        input); ``logprobs`` (and ``entropy`` if requested) carry gradients to ``hidden``,
        ``weight`` and ``bias``.
    """
    head = LMHead(weight, bias, temperature, valid_vocab)
    chunking = Chunking(vocab_chunk, row_chunk, backend)
    return head_token_stats(hidden, head, tokens, chunking, entropy_grad=entropy_grad)


def head_token_stats(
    hidden: Tensor,
    head: LMHead,
    tokens: Tensor,
    chunking: Chunking | None = None,
    *,
    entropy_grad: bool = False,
) -> TokenStats:
    """:func:`token_stats_from_hidden` with its parameters as objects: ``head`` (weight, bias,
    temperature, valid vocabulary) and ``chunking`` (block sizes and backend; ``None``: every
    default). ``hidden`` ``(..., d)``, ``tokens`` ``(...)``; returns as documented there."""
    log_p_k, entropy, discriminator, expected_s = fused_token_stats(hidden, head, tokens, chunking)
    _check_defined(
        log_p_k,
        entropy,
        "logits hidden @ weightᵀ + bias",
        "a NaN or inf entry (NaN in hidden or "
        "weight, or a float16 / bfloat16 lm_head that overflowed)",
    )
    return TokenStats(
        logprobs=log_p_k,
        entropy=entropy if entropy_grad else entropy.detach(),
        discriminator=discriminator,
        expected_discriminator=expected_s,
    )
