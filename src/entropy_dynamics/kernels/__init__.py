"""Streaming kernels: per-token statistics straight from hidden states, in torch and Triton.

What lives here: the fused hidden→statistics pass that never forms ``[N, V]`` logits
(``streaming``: torch path, backend choice, custom autograd), its Triton kernels for CUDA
(``triton_stats``, imported only when used), the streamed power sums both paths share
(``power_sums``), the one logit-gradient formula every backward uses (``logit_grad``), and the
one-pass loss from hidden states whose gradient is formed during the forward (``fused_loss``, with
its Triton block kernels for CUDA in ``triton_loss``, imported only when used), and Triton matmul
kernels with the statistics in their epilogue, which never write logits (``triton_matmul``:
opt-in, ``backend="triton-matmul"``; imported only when used).

Kernels return plain tensors or tuples; :mod:`entropy_dynamics.stats` checks the temperature and
wraps them into ``TokenStats`` — that module is the public entry. Imports: torch (and triton)
only; nothing else of the package.
"""

from entropy_dynamics.kernels.fused_loss import BlockLoss, default_loss_row_chunk, fused_linear_loss
from entropy_dynamics.kernels.logit_grad import logit_grad_
from entropy_dynamics.kernels.streaming import (
    DEFAULT_ROW_CHUNK,
    DEFAULT_VOCAB_CHUNK,
    fused_token_stats,
    triton_usable,
)

__all__ = [
    "DEFAULT_ROW_CHUNK",
    "DEFAULT_VOCAB_CHUNK",
    "BlockLoss",
    "default_loss_row_chunk",
    "fused_linear_loss",
    "fused_token_stats",
    "logit_grad_",
    "triton_usable",
]
