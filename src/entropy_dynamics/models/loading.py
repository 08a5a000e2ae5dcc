"""Load a local Hugging Face causal LM directory (the embedded model or any other) for training."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["load_model_and_tokenizer", "resolve_device", "resolve_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("model.device: 'cuda' requested but no CUDA device is available; use cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` → bfloat16 on CUDA (if supported), float32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(
            f"model.dtype: unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}"
        ) from None


def load_model_and_tokenizer(path: str | Path, dtype: str = "float32", device: str = "auto"):
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local directory, offline.

    Returns ``(model, tokenizer)`` with the model on the resolved device, in train mode, and the
    tokenizer's pad token set (to EOS when the tokenizer has none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path: {path} is not a Hugging Face model directory (no config.json); "
            "give a local directory saved with save_pretrained"
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"model.path: the tokenizer in {path} has neither pad nor eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
    model.to(torch_device)
    model.train()
    return model, tokenizer
