"""TRL's ``GRPOTrainer`` with the token filters (Clip_B, Clip_V, ... by name) of arXiv 2602.03392.

What lives here: the options (``config``: :class:`EntropyGRPOConfig`, the filter on top of
``GRPOConfig``, and :func:`trl_aggregation`, TRL's ``loss_type`` as our aggregation mode), the
statistics the decoder hook records and their alignment with the completions (``capture``),
``entropy_target``'s controller and the dynamics monitor per generation batch (``control``), and
the trainer subclass (``trainer``: :class:`EntropyGRPOTrainer`). This package re-exports the
public names; it needs the ``trl`` extra.

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
  forwards were fed exactly the prompt and the completion tokens
  (:func:`~.capture.generation_hidden`); else one extra no-grad pass through TRL's forward.
  Step time over plain TRL's without a pass of TRL's own, on CPU
  (``benchmarks/results/engine_overhead_trl.json``; 2 cores, learning rate 0 so that every
  variant samples the same completions, medians of 7 interleaved rounds): x1.03 Clip_B, x1.00
  Clip_V with the statistics from ``generate`` (the plug-in's own work ~2 % of a step), x1.18 with
  the extra pass;
- keep-mask: decided once per generation batch, on the batch gathered from every process (so the
  filter's moments, and Clip_V's cap, are those of the whole batch), by
  :func:`entropy_dynamics.losses.select_tokens` with the configured filter — the call our trainer
  makes;
- dropped tokens leave the loss *and* its denominators: the mask is multiplied into TRL's
  ``tool_mask`` and ``num_items_in_batch`` is recounted, so every ``loss_type`` normalises over
  the kept tokens, as :mod:`entropy_dynamics.losses` does. Everything else (clipping, ``beta``,
  ``scale_rewards``, ``top_entropy_quantile``, the entropy bonus and its adaptive mode, vLLM
  importance sampling) is TRL's unchanged; they see the kept tokens only;
- closed loop: with ``entropy_filter="entropy_target"`` the controller our trainer uses sets the
  filter's target, ``κ`` and integral term for each generation batch (``entropy_control``); with
  ``entropy_dynamics_monitor_every=N`` the batch's actual entropy change is measured after its
  last optimizer step; the controller's state goes into each ``checkpoint-N`` (:mod:`.control`);
- metrics: ``entropy/mean``, ``discriminator/*`` (the keys of our trainer) and the filter's own
  (``clip_b/*``, ``clip_v/*``, ...) go through TRL's ``_metrics``, hence ``log_history`` and
  every ``report_to`` backend.

Aggregation: TRL's ``loss_type`` maps onto :data:`entropy_dynamics.aggregation.AGG_MODES` as
:func:`trl_aggregation` says. Tested against our trainer's loss path on TRL 1.16 (CPU).

Imports: the top-level mathematics (``advantages``, ``stats``), ``filters``, ``losses``, and
``trl``.
"""

from entropy_dynamics.integrations.trl.config import EntropyGRPOConfig, trl_aggregation
from entropy_dynamics.integrations.trl.trainer import EntropyGRPOTrainer

__all__ = ["EntropyGRPOConfig", "EntropyGRPOTrainer", "trl_aggregation"]
