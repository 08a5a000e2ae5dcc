"""Load a local Hugging Face causal LM directory (the embedded model or any other) for training."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

__all__ = ["load_model_and_tokenizer", "resolve_device", "resolve_dtype", "valid_vocab_size"]

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


def load_model_and_tokenizer(
    path: str | Path, dtype: str = "float32", device: str = "auto", tokenizer: str | Path = ""
):
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from local files, offline.

    Args:
        path: a Hugging Face model directory (``config.json`` + safetensors) or a ``.gguf`` file
            (transformers' ``gguf_file`` loading: the weights are dequantised to ``dtype``).
        dtype: ``auto`` / ``float32`` / ``bfloat16`` / ``float16``.
        device: ``auto`` / ``cpu`` / ``cuda``.
        tokenizer: optional tokenizer directory (default: the model's own; a GGUF file carries
            its tokenizer).

    Returns ``(model, tokenizer)`` with the model on the resolved device, in train mode, and the
    tokenizer's pad token set (to EOS when the tokenizer has none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    gguf = path.suffix.lower() == ".gguf"
    if gguf and not path.is_file():
        raise FileNotFoundError(f"model.path: GGUF file {path} does not exist")
    if not gguf and not (path.is_dir() and (path / "config.json").is_file()):
        raise FileNotFoundError(
            f"model.path: {path} is not a Hugging Face model directory (no config.json) nor a "
            ".gguf file; give a local directory saved with save_pretrained or a GGUF file"
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = path.parent if gguf else path
    model_kwargs = {"gguf_file": path.name} if gguf else {}
    tokenizer_kwargs = dict(model_kwargs)
    if gguf:
        try:  # transformers >= 5 can keep GGUF blocks packed: unpack, to train dense weights
            from transformers import GgufConfig

            model_kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older transformers always dequantise
            pass
    if tokenizer:
        tokenizer_obj = AutoTokenizer.from_pretrained(Path(tokenizer), local_files_only=True)
    else:
        tokenizer_obj = AutoTokenizer.from_pretrained(
            source, local_files_only=True, **tokenizer_kwargs
        )
    if tokenizer_obj.pad_token_id is None:
        if tokenizer_obj.eos_token_id is None:
            raise ValueError(f"model.path: the tokenizer of {path} has neither pad nor eos token")
        tokenizer_obj.pad_token = tokenizer_obj.eos_token
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, local_files_only=True, **model_kwargs
        )
    except ImportError as exc:  # gguf package missing
        raise ValueError(f"model.path: cannot read {path}: {exc}") from None
    except pickle.UnpicklingError:  # transformers loads .bin weights with weights_only=True
        files = ", ".join(p.name for p in sorted(source.glob("*.bin"))) or "a weights file"
        raise ValueError(
            f"model.path: refused {path}: {files} would run code when loaded (a pickle that "
            "holds more than tensors), so it was not loaded; use safetensors weights "
            "(model.safetensors) from a source you trust"
        ) from None
    rows = _output_rows(model)
    used = {"pad": tokenizer_obj.pad_token_id, "eos": tokenizer_obj.eos_token_id}
    beyond = [f"{k} id {i}" for k, i in used.items() if i is not None and i >= rows]
    if tokenizer_obj.vocab_size > rows or beyond:  # added tokens never produced may lie past it
        where = f"model.tokenizer ({tokenizer})" if tokenizer else f"the tokenizer of {path}"
        size = ", ".join(beyond) or f"a vocabulary of {tokenizer_obj.vocab_size} tokens"
        raise ValueError(
            f"{where} has {size}, but the model's output layer has {rows} rows: its ids would "
            "index past the model's vocabulary; use the tokenizer the model was trained with"
        )
    model.to(torch_device)
    model.train()
    return model, tokenizer_obj


def _output_rows(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return getattr(head, "out_features", None) or model.config.vocab_size


def valid_vocab_size(model, tokenizer) -> int | None:
    """Rows of the output layer that are real tokens, when the layer is padded; else ``None``.

    Qwen2.5 pads its 151,665-token vocabulary to a 151,936-row ``lm_head``; the padded rows are
    never tokens, so sampling and every statistic (``H``, ``S_k``, ``E_p[S]``) exclude them.
    """
    rows = _output_rows(model)
    size = len(tokenizer)
    return size if size < rows else None
