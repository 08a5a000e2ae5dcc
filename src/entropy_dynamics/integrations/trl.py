"""TRL's ``GRPOTrainer`` with the token filters (Clip_B, Clip_V, ... by name) of arXiv 2602.03392.

TRL has no hook for custom losses and, from 1.15 on, never forms logits: its fused LM head returns
``log p_k`` and ``H`` but not ``Σ p² log p``, so ``E_p[S]`` cannot be built from what it returns.
This subclass therefore changes *what TRL trains on*, not how it computes the loss:

- statistics: a forward hook on the decoder (``base_model``, the module TRL's fused head calls)
  captures the rollout policy's final hidden states; ``TokenStats`` (``log p_k``, ``H``, ``S_k``,
  ``E_p[S]`` of ``softmax(z / T)``) come from them and the ``lm_head`` through
  :func:`entropy_dynamics.stats.token_stats_from_hidden` (no logits). The hidden states are, in
  this order of preference: those of TRL's own old-log-prob pass when TRL runs one (vLLM
  importance sampling, ``num_iterations > 1``, misaligned generation steps); else those of TRL's
  sampling itself, when it runs transformers' ``generate`` in one turn (no vLLM, paged
  generation, tools, environments, ``rollout_func``, FSDP or DeepSpeed) — the prefill's last
  position predicts completion token 0, each decode step the next — used only if the recorded
  forwards were fed exactly the prompt and the completion tokens (:meth:`generation_stats`);
  else one extra no-grad pass through TRL's forward. Step time over plain TRL's without a pass of
  TRL's own, on CPU (``benchmarks/results/engine_overhead_trl.json``; 2 cores, learning rate 0
  so that every variant samples the same completions, medians of 7 interleaved rounds): x1.03
  Clip_B, x1.00 Clip_V with the statistics from ``generate`` (the plug-in's own work ~2 % of a
  step), x1.18 with the extra pass;
- keep-mask: decided once per generation batch, on the batch gathered from every process (so the
  filter's moments, and Clip_V's cap, are those of the whole batch), by
  :func:`entropy_dynamics.losses.select_tokens` with the configured filter — the call our trainer
  makes;
- dropped tokens leave the loss *and* its denominators: the mask is multiplied into TRL's
  ``tool_mask`` and ``num_items_in_batch`` is recounted, so every ``loss_type`` normalises over
  the kept tokens, as :mod:`entropy_dynamics.losses` does. Everything else (clipping, ``beta``,
  ``scale_rewards``, ``top_entropy_quantile``, the entropy bonus and its adaptive mode, vLLM
  importance sampling) is TRL's unchanged; they see the kept tokens only;
- metrics: ``entropy/mean``, ``discriminator/*`` (the keys of our trainer) and the filter's own
  (``clip_b/*``, ``clip_v/*``, ...) go through TRL's ``_metrics``, hence ``log_history`` and
  every ``report_to`` backend.

Aggregation: TRL's ``loss_type`` maps onto :data:`entropy_dynamics.aggregation.AGG_MODES` as
:func:`trl_aggregation` says. Tested against our trainer's loss path on TRL 1.16 (CPU).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.filters import available_filters
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.stats import TokenStats, token_stats, token_stats_from_hidden

__all__ = ["EntropyGRPOConfig", "EntropyGRPOTrainer", "trl_aggregation"]

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


@dataclass
class EntropyGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the token filter; every TRL option keeps its meaning and default."""

    entropy_filter: str = field(
        default="none",
        metadata={
            "help": "Token filter by name (entropy_dynamics.filters): "
            f"{', '.join(available_filters())}. Clip_B / Clip_V: arXiv 2602.03392."
        },
    )
    entropy_filter_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword options of the filter, a dict or a JSON string, e.g. "
            '\'{"mu": 2.5}\' for clip_b, \'{"mu": 8.5, "max_frac": 1e-4}\' for clip_v; unset '
            "options keep the filter's documented defaults."
        },
    )
    entropy_valid_vocab: int | None = field(
        default=None,
        metadata={
            "help": "Rows of the lm_head that are real tokens (Qwen2.5 pads 151,665 to 151,936); "
            "later rows get p = 0 in the statistics. None: every row, as TRL's log-probs."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.entropy_filter_options, str):
            try:
                self.entropy_filter_options = json.loads(self.entropy_filter_options)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"entropy_filter_options must be a JSON object such as '{{\"mu\": 2.5}}', "
                    f"got {self.entropy_filter_options!r} ({exc})"
                ) from exc
        if not isinstance(self.entropy_filter_options, dict | None):
            raise ValueError(
                "entropy_filter_options must be a dict or a JSON object string, got "
                f"{type(self.entropy_filter_options).__name__}"
            )
        self.filter_config()  # an unknown filter or option fails here, not at the first step

    def filter_config(self) -> PolicyLossConfig:
        """The :class:`PolicyLossConfig` whose ``filter`` the plug-in runs (validated)."""
        return PolicyLossConfig(
            filter=self.entropy_filter, filter_options=dict(self.entropy_filter_options or {})
        )


def trl_aggregation(
    loss_type: str, batch_size: int, max_completion_length: int
) -> tuple[str, float | None]:
    """The ``(agg_mode, loss_agg_norm)`` of :class:`PolicyLossConfig` that TRL's ``loss_type``
    computes on one batch of ``batch_size`` sequences (no gradient accumulation, one process).

    - ``dapo`` (TRL's default), ``bnpo`` → ``token-mean`` (``dapo`` over the generation batch,
      gathered across processes; ``bnpo`` over each micro-batch);
    - ``grpo`` → ``seq-mean-token-mean``; equal as long as every sequence keeps a token (TRL
      still counts a sequence whose tokens were all dropped, with loss 0, in its mean);
    - ``dr_grpo`` → ``seq-mean-token-sum-norm`` with the constant ``B · max_completion_length``.
    """
    if loss_type in ("dapo", "bnpo"):
        return "token-mean", None
    if loss_type == "grpo":
        return "seq-mean-token-mean", None
    if loss_type == "dr_grpo":
        return "seq-mean-token-sum-norm", float(batch_size * max_completion_length)
    raise ValueError(
        f"loss_type {loss_type!r} has no aggregation mode of ours (it changes the per-token "
        "loss itself); mapped: dapo, bnpo, grpo, dr_grpo"
    )


@torch.no_grad()
def _cat(parts: list[TokenStats]) -> TokenStats:
    """Row chunks of ``TokenStats`` ``(b_i, C)`` → one ``(Σ b_i, C)``."""
    names = ("logprobs", "entropy", "discriminator", "expected_discriminator")
    return TokenStats(*(torch.cat([getattr(p, name) for p in parts]) for name in names))


class _Capture:
    """What the decoder hook needs while armed: the ids of the pass and the response width."""

    def __init__(self, input_ids: Tensor, response_width: int) -> None:
        self.input_ids, self.width, self.offset = input_ids, response_width, 0
        self.parts: list[TokenStats] = []


class _Generation:
    """What the decoder hook records during one ``generate`` call: the ids each forward was fed
    and the final hidden state of its last position, the one that predicts the next token."""

    def __init__(self) -> None:
        self.prompt: Tensor | None = None  # (B, P): the prefill's ids
        self.fed: list[Tensor] = []  # (B,) per decode step: the completion token it was fed
        self.hidden: list[Tensor] = []  # (B, d) per forward: predicts completion token t
        self.aligned = True

    def record(self, input_ids: Tensor | None, hidden: Tensor) -> None:
        rows = None if self.prompt is None else self.prompt.shape[0]
        if input_ids is None or (rows is not None and input_ids.shape[0] != rows):
            self.aligned = False  # inputs_embeds, beams, ...: no token-by-token alignment
        if not self.aligned:
            return
        if self.prompt is None:
            self.prompt = input_ids.detach().clone()
        else:  # one new token per step (or the whole sequence, without a KV cache)
            self.fed.append(input_ids[:, -1].detach().clone())
        self.hidden.append(hidden[:, -1].detach().clone())


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
        self._capture: _Capture | None = None  # armed: the decoder hook computes statistics
        self._captured: _Capture | None = None  # the last armed pass's
        self._arm_next_pass = False
        self._arm_generation = False  # record TRL's next `generate` (no old-log-prob pass)
        self._generation: _Generation | None = None  # recording
        self._generations: list[_Generation] = []  # recorded in this generation batch
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
            return _cat(parts)

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
        self._capture = _Capture(input_ids, logits_to_keep)
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
        self._generation = _Generation()
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
        or ``None`` (then a teacher-forced pass is needed) unless the record is exactly aligned:
        one ``generate`` call, its prefill fed ``output["prompt_ids"]`` and its decode steps
        fed the completion tokens of ``output`` at every valid position."""
        generations, self._generations = self._generations, []
        if len(generations) != 1 or not generations[0].aligned or not generations[0].hidden:
            return None
        record = generations[0]
        prompt_ids, tokens = output["prompt_ids"], output["completion_ids"]
        # TRL may left-pad the prompts it returns wider than it fed them (1.12 with
        # pad_to_multiple_of): extra columns on the left must be padding, the rest equal
        extra = prompt_ids.shape[1] - record.prompt.shape[1]
        if (
            extra < 0
            or record.prompt.shape[0] != prompt_ids.shape[0]
            or output["prompt_mask"][:, :extra].any()
            or not torch.equal(record.prompt.to(prompt_ids.device), prompt_ids[:, extra:])
        ):
            return None
        steps, width = len(record.hidden), tokens.shape[1]
        valid = output["completion_mask"].bool()
        if valid[:, steps:].any():  # a valid token no forward predicted
            return None
        if record.fed:  # decode step t was fed completion token t - 1
            fed = torch.stack(record.fed, dim=1).to(tokens.device)[:, :width]
            check = valid[:, : fed.shape[1]]
            if not torch.equal(fed[check], tokens[:, : fed.shape[1]][check]):
                return None
        hidden = torch.stack(record.hidden, dim=1)[:, :width]  # (B, min(steps, C), d)
        if hidden.shape[1] < width:  # TRL's pad_to_multiple_of: padding, dropped by the mask
            hidden = nn.functional.pad(hidden, (0, 0, 0, width - hidden.shape[1]))
        return self.head_stats(hidden, tokens)

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
                self._captured = self._capture = _Capture(ids, width)
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
        return _cat(captured.parts)

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
        keep, metrics = select_tokens(self.filter_config, whole, gathered[4], whole_mask)
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
