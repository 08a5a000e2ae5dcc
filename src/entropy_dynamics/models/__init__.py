"""The embedded model: a tiny Qwen2 with a character-level tokenizer, pretrained on Countdown.

``default_model_path()`` is the shipped model directory (``assets/countdown-tiny``), an ordinary
Hugging Face directory that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load offline;
:mod:`entropy_dynamics.training.pretrain` (``entropy-dynamics pretrain``) reproduces it.

What lives here: the architecture (``architecture``), the character tokenizer (``tokenizer``),
loading of local Hugging Face directories and GGUF files (``loading``) and the shipped assets.
Imports: the top-level mathematics at most; never ``tasks``, ``training``, ``study`` or ``cli``.
"""

from __future__ import annotations

from pathlib import Path

from entropy_dynamics.models.architecture import (
    ModelSize,
    build_model,
    count_parameters,
    qwen2_config,
)
from entropy_dynamics.models.tokenizer import build_tokenizer, save_tokenizer

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ModelSize",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "default_model_path",
    "qwen2_config",
    "save_tokenizer",
]

DEFAULT_MODEL_NAME = "countdown-tiny"


def default_model_path() -> Path:
    """Directory of the shipped, pretrained Countdown model (package data)."""
    return Path(__file__).resolve().parent / "assets" / DEFAULT_MODEL_NAME
