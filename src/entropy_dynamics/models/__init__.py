"""The embedded models: tiny Qwen2s with a character-level tokenizer, pretrained on Countdown.

``default_model_path(task)`` is the shipped model directory of a task (``EMBEDDED_MODELS``):
``assets/countdown-tiny`` answers Countdown in one expression, ``assets/countdown-search-tiny``
answers ``countdown_search`` with a search trace. Each is an ordinary Hugging Face directory that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load offline; :mod:`entropy_dynamics.training.pretrain`
(``entropy-dynamics pretrain``, the command in each directory's README) reproduces it.

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
    "EMBEDDED_MODELS",
    "ModelSize",
    "build_model",
    "build_tokenizer",
    "count_parameters",
    "default_model_path",
    "qwen2_config",
    "save_tokenizer",
]

DEFAULT_MODEL_NAME = "countdown-tiny"

EMBEDDED_MODELS = {"countdown": DEFAULT_MODEL_NAME, "countdown_search": "countdown-search-tiny"}
"""The shipped model of each task that has one (package data under ``assets/``)."""


def default_model_path(task: str = "countdown") -> Path:
    """Directory of the shipped, pretrained model of ``task`` (package data); a task without
    one of its own (``math``) gets the Countdown model."""
    name = EMBEDDED_MODELS.get(task, DEFAULT_MODEL_NAME)
    return Path(__file__).resolve().parent / "assets" / name
