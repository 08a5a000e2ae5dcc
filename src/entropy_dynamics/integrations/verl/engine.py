"""Our token statistics in verl's FSDP engine forward (``FSDPEngineWithLMHead``, verl 0.9).

verl's engine already forms the logits, divides them by the sampling temperature and computes
``log p_k`` and, when asked, ``H`` and ``Σ p²`` (``prepare_model_outputs``); ``E_p[S]`` needs
``Σ p² log p`` as well, which no verl flag gives. The wrapped ``prepare_model_outputs`` adds, when
the micro-batch carries the non-tensor flag ``calculate_ed_stats`` (set by the trainer, as verl's
own ``calculate_entropy``) or the loss function asks for them (the loss-time fallback):

- ``ed_entropy`` ``H``, ``ed_discriminator`` ``S_k = p_k (H + log p_k)`` and
  ``ed_expected_discriminator`` ``E_p[S]`` of ``softmax(z / T)`` at the next token,
  as jagged tensors over each whole sequence, exactly like verl's ``log_probs`` (so verl's own
  ``response_from_nested`` / ``no_padding_2_padding`` slice them);
- computed by :func:`entropy_dynamics.stats.token_stats` (row-chunked, float32, no gradient)
  from the logits verl formed, with padding removal on (packed rows, Ulysses-sharded and gathered
  as verl gathers ``log_probs``) and off (padded rows narrowed to each sequence).

verl's fused kernels (``actor_rollout_ref.model.use_fused_kernels=True``) never form the logits
and give no ``Σ p² log p``: asking for the statistics there is refused with what to change.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.stats import token_stats

__all__ = ["STATS_FLAG", "STAT_KEYS", "packed_stats", "patch_engine"]

STATS_FLAG = "calculate_ed_stats"
"""Non-tensor key of a verl micro-batch that asks the engine for :data:`STAT_KEYS`."""
STAT_KEYS = ("ed_entropy", "ed_discriminator", "ed_expected_discriminator")
"""Keys the engine adds to its model output: ``H``, ``S_k`` and ``E_p[S]`` per position."""


def packed_stats(logits: Tensor, labels: Tensor, temperature: Tensor) -> dict[str, Tensor]:
    """:data:`STAT_KEYS` of ``softmax(logits / T)`` at ``labels``, without gradient.

    Args:
        logits: ``(N, V)`` unscaled logits of N packed positions (any float dtype).
        labels: ``(N,)`` next-token ids.
        temperature: ``(N,)`` sampling temperature of each position's sequence (verl allows one
            per sample; the positions of each distinct value are computed together).

    Returns:
        ``{key: (N,) float32}``.
    """
    out = {key: logits.new_zeros(labels.shape, dtype=torch.float32) for key in STAT_KEYS}
    with torch.no_grad():
        for value in torch.unique(temperature):
            rows = temperature == value  # (N,)
            stats = token_stats(logits[rows], labels[rows].long(), float(value))
            out["ed_entropy"][rows] = stats.entropy.float()
            out["ed_discriminator"][rows] = stats.discriminator.float()
            out["ed_expected_discriminator"][rows] = stats.expected_discriminator.float()
    return out


def _non_tensor(micro_batch: Any, key: str, default: Any = False) -> Any:
    from verl.utils import tensordict_utils as tu

    return tu.get_non_tensor_data(data=micro_batch, key=key, default=default)


def wants_stats(micro_batch: Any, loss_function: Any) -> bool:
    """Whether this forward must add :data:`STAT_KEYS`."""
    target = getattr(loss_function, "func", loss_function)  # verl binds it with partial()
    return bool(_non_tensor(micro_batch, STATS_FLAG)) or bool(
        getattr(target, "needs_entropy_dynamics_stats", False)
    )


def _full(logits: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return logits.full_tensor() if isinstance(logits, DTensor) else logits


def refuse_fused_kernels(micro_batch: Any) -> None:
    """Raise, saying what to change, when the micro-batch runs verl's fused kernels."""
    if _non_tensor(micro_batch, "use_fused_kernels"):
        raise RuntimeError(
            "entropy_dynamics: the token statistics (S_k, E_p[S]) need the logits, and verl's "
            "fused kernels never form them. Set actor_rollout_ref.model.use_fused_kernels=False "
            "for a run with an entropy_dynamics filter (or remove the filter: "
            "entropy_dynamics.filter=none)."
        )


def engine_stats(
    engine: Any, output: Any, output_args: dict[str, Any], micro_batch: Any
) -> dict[str, Tensor]:
    """:data:`STAT_KEYS` as jagged ``(bsz, j)`` tensors over each sequence, from the engine's own
    forward output (the logits), its ``output_args`` and the micro-batch."""
    refuse_fused_kernels(micro_batch)
    use_remove_padding = _non_tensor(micro_batch, "use_remove_padding", True)
    input_ids = micro_batch["input_ids"]  # jagged (bsz, j)
    cu_seqlens = input_ids.offsets()
    if use_remove_padding:
        logits = _full(output.logits).squeeze(0)  # (nnz / sp + pad, V)
        labels = output_args["input_ids_rmpad_rolled"]  # (nnz / sp + pad,)
        stats = packed_stats(logits, labels, output_args["temperature_rmpad"])
        # gather the Ulysses shards and drop the packed padding, as verl does for log_probs
        stats = {
            k: engine._gather_and_unpad_packed(v, output_args["pad_size"]) for k, v in stats.items()
        }
    else:
        logits = _full(output.logits)  # (bsz, max_len, V), right-padded
        lengths = cu_seqlens.diff()  # (bsz,)
        rows = torch.arange(logits.shape[1], device=logits.device) < lengths.unsqueeze(1)
        temperature = output_args["temperature"].to(logits.device)  # (bsz,)
        per_row = temperature.unsqueeze(1).expand(-1, logits.shape[1])  # (bsz, max_len)
        stats = packed_stats(logits[rows], output_args["input_ids_rmpad_rolled"], per_row[rows])
    return {k: torch.nested.nested_tensor_from_jagged(v, cu_seqlens) for k, v in stats.items()}


def patch_engine(module: ModuleType) -> None:
    """Wrap ``module.FSDPEngineWithLMHead.prepare_model_outputs`` (``module`` is
    ``verl.workers.engine.fsdp.transformer_impl``); a no-op unless :func:`wants_stats`."""
    cls = module.FSDPEngineWithLMHead
    original = cls.prepare_model_outputs
    if getattr(original, "_entropy_dynamics", False):
        return

    @functools.wraps(original)
    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        asked = wants_stats(micro_batch, logits_processor_func)
        if asked:  # before verl reads the fused head's outputs
            refuse_fused_kernels(micro_batch)
        model_output = original(self, output, output_args, micro_batch, logits_processor_func)
        if asked:
            model_output.update(engine_stats(self, output, output_args, micro_batch))
        return model_output

    prepare_model_outputs._entropy_dynamics = True  # type: ignore[attr-defined]
    cls.prepare_model_outputs = prepare_model_outputs
