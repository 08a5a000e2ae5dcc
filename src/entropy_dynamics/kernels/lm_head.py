"""The lm_head as every fused kernel takes it: one parameter object, validated once.

:class:`LMHead` holds what defines ``p = softmax((h Wᵀ + b) / T)`` over the first ``valid_vocab``
rows of ``W``: the weight ``(V, d)``, the optional bias ``(V,)``, the temperature ``T`` and the
valid vocabulary (a lm_head padded beyond the tokenizer, Qwen: 151,936 rows for 151,665 tokens,
has rows ``≥ valid_vocab`` that are not tokens; they get ``p = 0``). Its construction checks what
the head is (shapes, dtypes, devices, ``T``, the ``valid_vocab`` range); :meth:`LMHead.check`
checks the data of one call (the hidden states and tokens it is applied to, a finite bias).
:meth:`LMHead.logits` forms a block of scaled logits, the first matmul of every torch path.

The temperature rule lives here, at the bottom of the package, so the kernels and
:mod:`entropy_dynamics.theory` (which re-exports it) hold every input to the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MIN_TEMPERATURE", "LMHead", "check_temperature", "compute_dtype"]

MIN_TEMPERATURE = 1e-5
"""Smallest temperature with a distribution to analyse: below it samplers decode greedily (vLLM's
``_SAMPLING_EPS = 1e-5``, ``vllm/v1/sample/sampler.py``), so ``softmax(z / T)`` is one-hot."""


def check_temperature(temperature: float) -> None:
    """Refuse temperatures outside ``[MIN_TEMPERATURE, ∞)`` (NaN and ``inf`` included: ``z / inf``
    turns a ``-inf`` logit into NaN)."""
    if not MIN_TEMPERATURE <= temperature < math.inf:
        raise ValueError(
            f"temperature must be a finite number >= {MIN_TEMPERATURE} (below it sampling is "
            f"greedy and softmax(z / T) one-hot), got {temperature}"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels accumulate in for inputs of ``dtype``: float64 for float64, else
    float32 (bf16 / fp16 / fp32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class LMHead:
    """The lm_head ``z = h Wᵀ + b`` sampled at temperature ``T`` over its valid vocabulary.

    Attributes:
        weight: ``(V, d)`` lm_head weight (floating point).
        bias: optional ``(V,)`` bias, of the weight's dtype and device (finite: checked per call
            by :meth:`check`, being data).
        temperature: ``T``, finite and ``>= MIN_TEMPERATURE``; stored as a float.
        valid_vocab: rows of ``weight`` that are tokens, in ``[1, V]``; ``None`` is taken as
            ``V`` (the stored value is always an int).
    """

    weight: Tensor
    bias: Tensor | None = None
    temperature: float = 1.0
    valid_vocab: int | None = None

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        object.__setattr__(self, "temperature", float(self.temperature))
        weight, bias = self.weight, self.bias
        if weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(
                f"weight must be the lm_head weight of shape (V, d), floating point, got "
                f"{weight.dtype} {tuple(weight.shape)}"
            )
        vocab = weight.shape[0]
        if bias is not None and (bias.shape != (vocab,) or bias.dtype != weight.dtype
                                 or bias.device != weight.device):  # fmt: skip
            raise ValueError(
                f"bias must have shape ({vocab},) and dtype {weight.dtype} on {weight.device}, "
                f"got {tuple(bias.shape)} {bias.dtype} on {bias.device}"
            )
        valid_vocab = vocab if self.valid_vocab is None else self.valid_vocab
        if not 1 <= valid_vocab <= vocab:
            raise ValueError(
                f"valid_vocab must lie in [1, {vocab}] (rows of weight), got {valid_vocab}"
            )
        object.__setattr__(self, "valid_vocab", int(valid_vocab))

    @property
    def inv_t(self) -> float:
        """``1 / T``."""
        return 1.0 / self.temperature

    def check(self, hidden: Tensor, tokens: Tensor) -> None:
        """Refuse ``hidden`` ``(..., d)`` and ``tokens`` ``(...)`` this head cannot take: another
        dtype, device or width ``d``, tokens of another shape, not integer or outside
        ``[0, valid_vocab)``; and a non-finite bias (it would hide a padded vocabulary)."""
        weight, bias = self.weight, self.bias
        if not hidden.is_floating_point():
            raise TypeError(f"hidden must be a floating-point tensor, got {hidden.dtype}")
        if weight.shape[1] != hidden.shape[-1]:
            raise ValueError(
                f"weight must be the lm_head weight of shape (V, d) with d = hidden.shape[-1] = "
                f"{hidden.shape[-1]}, got {tuple(weight.shape)}"
            )
        if weight.dtype != hidden.dtype or weight.device != hidden.device:
            raise ValueError(
                f"weight and hidden must share dtype and device, got weight {weight.dtype} on "
                f"{weight.device} and hidden {hidden.dtype} on {hidden.device}"
            )
        if bias is not None and not torch.isfinite(bias).all():
            raise ValueError("bias must be finite; mask a padded vocabulary with valid_vocab")
        if hidden.shape[:-1] != tokens.shape:
            raise ValueError(
                f"tokens must have the shape of hidden without its last dimension: hidden "
                f"{tuple(hidden.shape)} needs tokens {tuple(hidden.shape[:-1])}, "
                f"got {tuple(tokens.shape)}"
            )
        if tokens.is_floating_point() or tokens.is_complex():
            raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.valid_vocab):
            raise ValueError(
                f"token ids must lie in [0, {self.valid_vocab}) (valid_vocab), "
                f"got ids in [{int(tokens.min())}, {int(tokens.max())}]"
            )

    def rows(self, start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor | None]:
        """``(weight[start:stop], bias[start:stop])`` (views), vocabulary rows ``[start, stop)``;
        ``stop`` ``None``: the valid vocabulary's end."""
        cut = slice(start, self.valid_vocab if stop is None else stop)
        return self.weight[cut], None if self.bias is None else self.bias[cut]

    def logits(
        self, hidden: Tensor, dtype: torch.dtype, start: int = 0, stop: int | None = None
    ) -> Tensor:
        """``(hidden @ W[start:stop]ᵀ + b[start:stop]) / T`` as a fresh ``(n, stop - start)``
        tensor in the compute ``dtype``; ``hidden`` ``(n, d)``; ``stop`` as in :meth:`rows`."""
        weight, bias = self.rows(start, stop)  # (v, d), (v,)
        inv_t = self.inv_t
        if hidden.dtype == dtype:  # float32 / float64: scale inside the GEMM, no extra pass
            if bias is None:
                out = hidden @ weight.T  # (n, d) x (d, v) -> (n, v)
                return out if inv_t == 1.0 else out.mul_(inv_t)
            return torch.addmm(bias, hidden, weight.T, beta=inv_t, alpha=inv_t)
        z = hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T)  # (n, v)
        out = z.to(dtype)  # half-precision logits as the lm_head produces them, upcast per block
        return out if inv_t == 1.0 else out.mul_(inv_t)
