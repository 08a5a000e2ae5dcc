"""How the fused kernels walk positions and vocabulary, and which kernel runs: one object.

:class:`Chunking` holds the block sizes (``vocab_chunk`` vocabulary rows, ``row_chunk``
positions) and the backend name, validated once; each path fills in its own defaults and the
backend that runs on the tensors at hand with :meth:`Chunking.resolve`.

Backends (:func:`resolve_backend`): ``"torch"``; ``"triton"`` (the choice of ``"auto"`` where
triton and CUDA are there: :mod:`.triton_stats` for the statistics, :mod:`.triton_loss` for the
fused loss's block work); ``"triton-matmul"``, opt-in: :mod:`.triton_matmul`'s kernels with the
statistics in the matmul's epilogue.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "DEFAULT_ROW_CHUNK",
    "DEFAULT_VOCAB_CHUNK",
    "Chunking",
    "resolve_backend",
    "triton_usable",
]

DEFAULT_VOCAB_CHUNK = 4096
DEFAULT_ROW_CHUNK = 1024
BACKENDS = ("auto", "torch", "triton", "triton-matmul")


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


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        names = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"backend must be one of {names}, got {backend!r}")


def resolve_backend(backend: str, hidden: Tensor) -> str:
    """The kernel that runs for ``backend`` on ``hidden``: ``"torch"``, ``"triton"``
    (:mod:`.triton_stats`, what ``"auto"`` picks where triton and CUDA are there and the input is
    not float64) or ``"triton-matmul"`` (opt-in, never picked by ``"auto"``: the forward of
    :mod:`.triton_matmul`, the backward of ``"triton"``). A Triton backend named where it cannot
    run (no CUDA and no ``TRITON_INTERPRET=1``, or float64) is refused."""
    _check_backend(backend)
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


@dataclass(frozen=True)
class Chunking:
    """Block sizes and backend of a fused pass.

    Attributes:
        vocab_chunk: vocabulary rows per block of the statistics' streaming pass (``None``:
            :data:`DEFAULT_VOCAB_CHUNK`); the fused loss spans the whole vocabulary per block.
        row_chunk: positions per block (``None``: the path's default, :data:`DEFAULT_ROW_CHUNK`
            for the statistics, ``fused_loss.default_loss_row_chunk`` for the loss).
        backend: one of :data:`BACKENDS` (:func:`resolve_backend`).
    """

    vocab_chunk: int | None = None
    row_chunk: int | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("vocab_chunk", "row_chunk"):
            value = getattr(self, name)
            if value is not None:
                if value < 1:
                    raise ValueError(f"{name} must be >= 1, got {value}")
                object.__setattr__(self, name, int(value))
        _check_backend(self.backend)

    def resolve(
        self, hidden: Tensor, row_chunk: int, vocab_chunk: int = DEFAULT_VOCAB_CHUNK
    ) -> Chunking:
        """This chunking with the given defaults filled in and the backend that runs on
        ``hidden`` (:func:`resolve_backend`): every field concrete."""
        return dataclasses.replace(
            self,
            vocab_chunk=vocab_chunk if self.vocab_chunk is None else self.vocab_chunk,
            row_chunk=row_chunk if self.row_chunk is None else self.row_chunk,
            backend=resolve_backend(self.backend, hidden),
        )
