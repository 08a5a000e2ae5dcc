"""kernels.chunking: block sizes and backend as one object, validated once, resolved per call."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.kernels.chunking import (
    DEFAULT_VOCAB_CHUNK,
    Chunking,
    resolve_backend,
)


def test_refuses_bad_sizes_and_backends() -> None:
    for name in ("vocab_chunk", "row_chunk"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
            Chunking(**{name: 0})
    with pytest.raises(ValueError, match="backend must be one of"):
        Chunking(backend="cuda")


def test_resolve_fills_the_path_defaults_and_the_backend(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden = torch.zeros(2, 4)
    resolved = Chunking().resolve(hidden, row_chunk=16)
    assert resolved == Chunking(DEFAULT_VOCAB_CHUNK, 16, "torch")  # "auto" on CPU: torch
    assert Chunking(7, 3).resolve(hidden, row_chunk=16) == Chunking(7, 3, "torch")
    assert resolve_backend("auto", hidden) == "torch"
    with pytest.raises(ValueError, match="backend='torch'"):
        Chunking(backend="triton").resolve(hidden, row_chunk=16)
