"""The plug-in's ``GRPOTrainer`` subclass: statistics from the rollout policy's hidden states, the
filter's keep-mask decided on the whole generation batch and written into TRL's masks.

Where the hidden states come from, in this order of preference, and what the mask changes in
TRL's loss: the package's docstring (:mod:`entropy_dynamics.integrations.trl`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.integrations.trl.capture import (
    Capture,
    GenerationRecord,
    cat_stats,
    generation_hidden,
)
from entropy_dynamics.integrations.trl.config import EntropyGRPOConfig
from entropy_dynamics.integrations.trl.control import FinishBatch, TrlControl
from entropy_dynamics.stats import TokenStats, token_stats, token_stats_from_hidden

__all__ = ["EntropyGRPOTrainer"]

_MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
_UNSUPPORTED_SCALES = ("output_multiplier", "lm_head_multiplier", "logits_scaling")


class EntropyGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose generation batches carry the configured filter's keep-mask.

    Takes the arguments of ``GRPOTrainer``; ``args`` must be an :class:`EntropyGRPOConfig`. PEFT
    models, ZeRO-3 and FSDP2 (the ``lm_head`` weight is gathered as TRL's fused head gathers it),
    ``logit_scale`` and ``final_logit_softcapping`` (Gemma) are handled as in TRL's head; other
    logit multipliers are refused.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, EntropyGRPOConfig):
            raise TypeError(
                "EntropyGRPOTrainer needs args=EntropyGRPOConfig(..., entropy_filter='clip_b'), "
                f"got {type(config).__name__}"
            )
        super().__init__(*args, **kwargs)
        self.filter_config = config.filter_config()
        self.control = TrlControl(self)  # entropy_target's controller, the dynamics monitor
        if self.control.active:
            self.add_callback(FinishBatch(self.control))
        self._capture: Capture | None = None  # armed: the decoder hook computes statistics
        self._captured: Capture | None = None  # the last armed pass's
        self._arm_next_pass = False
        self._arm_generation = False  # record TRL's next `generate` (no old-log-prob pass)
        self._generation: GenerationRecord | None = None  # recording
        self._generations: list[GenerationRecord] = []  # recorded in this generation batch
        self.stats_source: str | None = None  # "trl_pass", "generation" or "extra_pass"
        causal_lm = self._causal_lm()
        text_config = causal_lm.config.get_text_config()
        for name in _UNSUPPORTED_SCALES:
            if getattr(text_config, name, None) not in (None, 1, 1.0):
                raise ValueError(
                    f"the model's config sets {name}={getattr(text_config, name)}: the plug-in's "
                    "statistics support logit_scale and final_logit_softcapping only"
                )
        scale = getattr(text_config, "logit_scale", None)
        self._logit_scale = 1.0 if scale is None else float(scale)
        self._softcap = getattr(text_config, "final_logit_softcapping", None)
        backbone = getattr(causal_lm, "base_model", None)
        if backbone is None or backbone is causal_lm:
            raise ValueError(
                f"{type(causal_lm).__name__} exposes no decoder as `base_model`: the plug-in needs "
                "the final hidden states of a causal LM"
            )
        self._hook = backbone.register_forward_hook(self._on_decoder_output, with_kwargs=True)

    # ------------------------------------------------------------------ the model's parts
    def _causal_lm(self) -> nn.Module:
        model = self.accelerator.unwrap_model(self.model)
        get_base = getattr(model, "get_base_model", None)  # PEFT
        return get_base() if callable(get_base) else model

    def _head_weights(self) -> tuple[Tensor, Tensor | None]:
        head = self._causal_lm().get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        if hasattr(weight, "full_tensor"):  # FSDP2 DTensor, as TRL's fused head
            weight = weight.full_tensor()
            bias = bias.full_tensor() if bias is not None else None
        return weight, bias

    def _gather_ctx(self, weight: Tensor, bias: Tensor | None):
        """ZeRO-3: all-gather the partitioned ``lm_head`` for a direct read, as TRL does."""
        try:
            from trl.trainer.utils import maybe_gather_lm_head_ctx
        except ImportError:
            return nullcontext()
        return maybe_gather_lm_head_ctx(weight, bias)

    # ------------------------------------------------------------------ statistics
    def head_stats(self, hidden: Tensor, tokens: Tensor) -> TokenStats:
        """Detached :class:`TokenStats` of ``softmax(lm_head(hidden) / T)`` at ``tokens``.

        Args:
            hidden: ``(b, C, d)`` final hidden states predicting each token.
            tokens: ``(b, C)`` token ids.
        """
        weight, bias = self._head_weights()
        with torch.no_grad(), self._gather_ctx(weight, bias):
            dtype = torch.float32 if self.args.cast_lm_head_to_fp32 else weight.dtype
            hidden, w = hidden.to(weight.device, dtype), weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            valid_vocab = self.args.entropy_valid_vocab
            if self._softcap is None:  # z·s = (h·s) Wᵀ + b·s: stays on the fused path
                if self._logit_scale != 1.0:
                    hidden = hidden * self._logit_scale
                    b = None if b is None else b * self._logit_scale
                return token_stats_from_hidden(
                    hidden, w, tokens, self.temperature, bias=b, valid_vocab=valid_vocab
                )
            parts = []  # soft-capping is not linear: logits of one sequence at a time
            w32, b32 = w.float(), None if b is None else b.float()
            for row in range(hidden.shape[0]):
                z = nn.functional.linear(hidden[row].float(), w32, b32) * self._logit_scale
                z = self._softcap * torch.tanh(z / self._softcap)
                z = z if valid_vocab is None else z[:, :valid_vocab]
                parts.append(token_stats(z.unsqueeze(0), tokens[row : row + 1], self.temperature))
            return cat_stats(parts)

    def _on_decoder_output(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        capture, generation = self._capture, self._generation
        if capture is None and generation is None:  # the training forward passes untouched
            return
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        if capture is None:
            generation.record(kwargs.get("input_ids", args[0] if args else None), hidden)
            return
        rows = slice(capture.offset, capture.offset + hidden.shape[0])
        capture.offset += hidden.shape[0]
        width = capture.width
        tokens = capture.input_ids[rows, -width:]  # (b, C)
        # position P - 1 + t predicts response token t (TRL's fused head shifts the same way)
        capture.parts.append(self.head_stats(hidden[:, -width - 1 : -1].detach(), tokens))

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           *args: Any, **kwargs: Any):  # fmt: skip
        if not self._arm_next_pass:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        self._arm_next_pass = False  # only the first pass (the policy's, before any ref pass)
        self._capture = Capture(input_ids, logits_to_keep)
        try:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        finally:
            self._captured, self._capture = self._capture, None

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *args, **kwargs):
        if not self._arm_generation or images is not None or multimodal_fields:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, *args, **kwargs
            )
        self._generation = GenerationRecord()
        try:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, *args, **kwargs
            )
        finally:
            self._generations.append(self._generation)
            self._generation = None

    def _generation_route(self) -> bool:
        """Whether TRL's sampling runs through transformers' ``generate``, one turn per batch,
        whose decoder forwards the hook can align token by token with the completions."""
        return not (
            self.use_vllm
            or getattr(self, "use_transformers_continuous_batching", False)  # paged
            or getattr(self, "tools", None)  # multi-turn: tool results are not sampled
            or getattr(self, "environment_factories", None) is not None
            or getattr(self, "rollout_func", None) is not None
            or getattr(self, "is_fsdp_enabled", False)
            or self.is_deepspeed_enabled
        )

    def generation_stats(self, output: dict[str, Any]) -> TokenStats | None:
        """``TokenStats`` ``(B, C)`` from the hidden states recorded during TRL's ``generate``,
        or ``None`` (then a teacher-forced pass is needed) unless the record is exactly aligned
        with ``output`` (:func:`~.capture.generation_hidden`)."""
        generations, self._generations = self._generations, []
        hidden = generation_hidden(generations, output)  # (B, C, d)
        return None if hidden is None else self.head_stats(hidden, output["completion_ids"])

    def _trl_runs_old_pass(self) -> bool:
        """Whether TRL's generation computes ``old_per_token_logps`` (its own condition); only an
        optimisation: the capture is used only if the output then carries them."""
        every = self.args.steps_per_generation * self.num_iterations
        vllm_is = self.use_vllm and getattr(self, "vllm_importance_sampling_correction", False)
        return self.args.gradient_accumulation_steps % every != 0 or vllm_is

    def rollout_stats(self, output: dict[str, Any]) -> TokenStats:
        """``TokenStats`` ``(B, C)`` of the current (rollout) policy on a generation batch, from
        one no-grad pass over it, in TRL's row chunks and autocast (the fallback when neither
        TRL's old-log-prob pass nor its ``generate`` gave the hidden states).

        Sharded models (FSDP, DeepSpeed) and multimodal batches go through TRL's own forward,
        which unshards what the decoder needs; otherwise the decoder alone runs (TRL's head
        would score every position for nothing).
        """
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        width = output["completion_ids"].shape[1]
        mode = "train" if self.model.training else "eval"
        batch_size = getattr(self.args, f"per_device_{mode}_batch_size")
        extra = {k: output[k] for k in _MULTIMODAL_KEYS if k in output}
        sharded = getattr(self, "is_fsdp_enabled", False) or self.is_deepspeed_enabled
        checkpointing = self.args.gradient_checkpointing_kwargs
        with torch.no_grad(), disable_gradient_checkpointing(self.model, checkpointing):
            if sharded or extra:
                self._arm_next_pass = True
                self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, width, batch_size=batch_size, **extra
                )
            else:
                self._captured = self._capture = Capture(ids, width)
                try:
                    decoder = self._causal_lm().base_model
                    for start in range(0, ids.shape[0], batch_size):
                        rows = slice(start, start + batch_size)
                        with self.accelerator.autocast():  # the hook computes the statistics
                            decoder(
                                input_ids=ids[rows], attention_mask=attention[rows], use_cache=False
                            )
                finally:
                    self._capture = None
        stats = self._take_captured(ids.shape[0])
        if stats is None:
            raise RuntimeError(
                "the statistics pass did not reach the decoder's forward hook (a model whose "
                "`base_model` is not the module its forward runs?); nothing was filtered"
            )
        return stats

    def _take_captured(self, rows: int) -> TokenStats | None:
        """The armed pass's statistics if it covered all ``rows``, else ``None``."""
        captured, self._captured = self._captured, None
        if captured is None or captured.offset != rows or not captured.parts:
            return None
        return cat_stats(captured.parts)

    # ------------------------------------------------------------------ the keep-mask
    def _generate_and_score_completions(self, inputs):
        self._captured, self._generations = None, []
        self._arm_next_pass = self._trl_runs_old_pass()
        self._arm_generation = not self._arm_next_pass and self._generation_route()
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._arm_next_pass, self._arm_generation, self._capture = False, False, None
            self._generation = None
        rows = output["completion_ids"].shape[0]
        stats = self._take_captured(rows) if "old_per_token_logps" in output else None
        self.stats_source = "trl_pass"
        if stats is None and self._generations:
            stats, self.stats_source = self.generation_stats(output), "generation"
        if stats is None:
            stats, self.stats_source = self.rollout_stats(output), "extra_pass"
        self._generations = []
        return self.apply_filter(output, stats)

    def _gather(self, tensor: Tensor) -> Tensor:
        """``(B, C)`` local rows → ``(P·B, C_max)``, right-padded with 0 across processes."""
        padded = self.accelerator.pad_across_processes(tensor, dim=1, pad_index=0)
        return self.accelerator.gather(padded)

    def apply_filter(self, output: dict[str, Any], stats: TokenStats) -> dict[str, Any]:
        """Decide the keep-mask on the whole generation batch and write it into ``output``.

        ``output["tool_mask"]`` becomes ``tool_mask · keep`` and ``num_items_in_batch`` is
        recounted over the kept tokens of every process; the metrics go to ``self._metrics``.

        Args:
            output: TRL's generation batch (``completion_mask`` ``(B, C)``, ``advantages``
                ``(B,)`` or ``(B, C)``, optional ``tool_mask``).
            stats: ``TokenStats`` ``(B, C)`` of the rollout policy at the completion tokens.
        """
        completion_mask = output["completion_mask"]
        tool_mask = output.get("tool_mask")
        mask = completion_mask if tool_mask is None else completion_mask * tool_mask  # (B, C)
        advantages = output["advantages"]
        if advantages.dim() == 1:
            advantages = broadcast_to_tokens(advantages, mask)  # (B, C)
        local_rows, width = mask.shape
        fields = [stats.logprobs, stats.entropy, stats.discriminator, stats.expected_discriminator]
        gathered = [self._gather(t.float()) for t in (*fields, advantages.float())]
        whole_mask = self._gather(mask.long()) != 0  # (P·B, C_max)
        whole = TokenStats(*gathered[:4])
        keep, metrics = self.control.decide(output, whole, gathered[4], whole_mask)
        metrics.update(whole.metrics(whole_mask))
        start = self.accelerator.process_index * local_rows
        local_keep = keep[start : start + local_rows, :width].to(completion_mask.dtype)
        base = torch.ones_like(completion_mask) if tool_mask is None else tool_mask
        output["tool_mask"] = base * local_keep
        kept = (completion_mask * output["tool_mask"]).sum()
        output["num_items_in_batch"] = self.accelerator.gather(kept).sum()
        mode = "train" if self.model.training else "eval"
        for key, value in metrics.items():
            self._metrics[mode][key].append(float(value))
        return output

    # ------------------------------------------------------------------ the controller's state
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """TRL's ``train``; resuming also restores the controller from the checkpoint."""
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)  # None: TRL's own error follows
        if path:
            self.control.engine, self.control.resume_from = None, str(path)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:  # beside trainer_state.json
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.control.save(os.path.join(self._get_output_dir(trial=trial), folder))
