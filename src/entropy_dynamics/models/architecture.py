"""The embedded model's architecture: a tiny Qwen2 causal LM (tied embeddings, GQA, RoPE).

It is an ordinary ``transformers.Qwen2ForCausalLM``, so everything the library does with it, it
does identically with any Hugging Face causal LM; only the sizes are small enough for 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSize", "build_model", "count_parameters", "qwen2_config"]


@dataclass
class ModelSize:
    """Sizes of the tiny Qwen2 (defaults: the shipped ``countdown-tiny``, ≈ 0.8 M parameters)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Query heads (head dim = hidden_size / num_heads)."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention, as in Qwen2)."""
    intermediate_size: int = 384
    """Width of the SwiGLU MLP."""
    max_position_embeddings: int = 256
    """Longest prompt + response in tokens (characters)."""

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"model size: {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model size: hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model size: num_heads ({self.num_heads}) must be divisible by "
                f"num_kv_heads ({self.num_kv_heads})"
            )


def qwen2_config(size: ModelSize, tokenizer):
    """A ``Qwen2Config`` of ``size`` whose vocabulary and special ids are the tokenizer's."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        max_position_embeddings=size.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(size: ModelSize, tokenizer):
    """A randomly initialised ``Qwen2ForCausalLM`` (seed torch's RNG first for reproducibility).

    The generation config carries EOS and padding ids, so ``model.generate`` stops at ``<eos>``
    and left-pads with ``<pad>`` without extra arguments.
    """
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(qwen2_config(size, tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def count_parameters(model) -> int:
    """Distinct parameters (tied embedding counted once)."""
    return sum(p.numel() for p in model.parameters())
