"""Streaming kernels: per-token statistics straight from hidden states, in torch and Triton.

What lives here: the parameter objects every kernel takes — the lm_head (``lm_head.LMHead``:
weight, bias, temperature, valid vocabulary, validated once; the temperature rule) and the block
sizes with the backend (``chunking.Chunking``, with the backend choice); the fused
hidden→statistics pass that never forms ``[N, V]`` logits (``streaming``: torch path, custom
autograd), its Triton kernels for CUDA (``triton_stats``, imported only when used), the streamed
power sums both paths share (``power_sums``), the one logit-gradient formula every backward uses
(``logit_grad``), and the one-pass loss from hidden states whose gradient is formed during the
forward (``fused_loss``; its per-backend block work in ``loss_blocks``, with the Triton block
kernels for CUDA in ``triton_loss``, imported only when used), and Triton matmul kernels with the
statistics in their epilogue, which never write logits (``triton_matmul``: opt-in,
``backend="triton-matmul"``; imported only when used).

Kernels return plain tensors or tuples; :mod:`entropy_dynamics.stats` wraps them into
``TokenStats`` — that module is the public entry. Imports: torch (and triton) only; nothing else
of the package.
"""

from entropy_dynamics.kernels.chunking import (
    DEFAULT_ROW_CHUNK,
    DEFAULT_VOCAB_CHUNK,
    Chunking,
    triton_usable,
)
from entropy_dynamics.kernels.fused_loss import BlockLoss, default_loss_row_chunk, fused_linear_loss
from entropy_dynamics.kernels.lm_head import LMHead
from entropy_dynamics.kernels.logit_grad import logit_grad_
from entropy_dynamics.kernels.streaming import fused_token_stats

__all__ = [
    "DEFAULT_ROW_CHUNK",
    "DEFAULT_VOCAB_CHUNK",
    "BlockLoss",
    "Chunking",
    "LMHead",
    "default_loss_row_chunk",
    "fused_linear_loss",
    "fused_token_stats",
    "logit_grad_",
    "triton_usable",
]
