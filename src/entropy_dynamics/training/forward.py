"""Teacher-forced token statistics of a causal LM on a rollout, fused from hidden states.

Every update needs ``log p_k`` (with gradient), ``H``, ``S_k`` and ``E_p[S]`` at each response
token. When the model exposes its ``lm_head`` (``get_output_embeddings()`` is a plain
``nn.Linear``), its decoder (``get_decoder()``), and its logits are exactly
``lm_head(decoder(x))`` — checked once numerically on a short probe, because some architectures
scale or soft-cap their logits after the head — the statistics come from
:func:`entropy_dynamics.stats.head_token_stats` and the ``(N, R, V)`` logits are never
formed (issue 7: at ``V = 151,936`` they are 2.5 GB of float32 per 4,096 tokens). Otherwise the
materialised logits go through :func:`entropy_dynamics.stats.token_stats`. Both give the same
values to float32 rounding.

The trainer works with *features*: hidden states on the fused path, logits otherwise;
:meth:`ResponseStats.logits` turns a few selected feature rows into logits (the dynamics metrics
need full logits at a bounded number of positions only). Features come from one teacher-forced
forward in which each distinct prompt of a group runs once
(:mod:`~entropy_dynamics.training.teacher_forcing`), where the model's cache allows it.

On the fused path the PPO-clip loss of an update is fused too (:meth:`ResponseStats.policy_loss`,
issue 16): the loss and its gradient to the hidden states and the ``lm_head`` are formed in the
forward pass, three matmuls and no saved logits
(:func:`entropy_dynamics.losses.fused.fused_policy_loss`).
"""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor, nn

from entropy_dynamics.kernels import LMHead
from entropy_dynamics.losses import PolicyLossConfig, PolicyLossOutput, fused_policy_loss
from entropy_dynamics.stats import TokenStats, head_token_stats, token_stats
from entropy_dynamics.training.rollout import Rollout
from entropy_dynamics.training.teacher_forcing import (
    check_shared_prompts,
    full_outputs,
    narrowed,
    shared_prompt_outputs,
)

__all__ = ["FusedMode", "ResponseStats", "dropout_of", "fusable_lm_head"]

FusedMode = Literal["auto", "always", "never"]

_PROBE_LENGTH = 8


def fusable_lm_head(model: nn.Module) -> tuple[nn.Linear | None, str]:
    """The model's ``lm_head`` if its logits are exactly ``lm_head(decoder(x))``, else why not.

    Returns:
        ``(head, "")`` when the fused path reproduces ``model(x).logits`` on a probe input, else
        ``(None, reason)``.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    get_decoder = getattr(model, "get_decoder", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        return None, f"get_output_embeddings() is {type(head).__name__}, not nn.Linear"
    try:
        decoder = get_decoder() if callable(get_decoder) else None
    except (AttributeError, NotImplementedError) as exc:
        return None, f"get_decoder() failed: {exc}"
    if decoder is None or decoder is model:
        return None, "the model exposes no separate decoder (get_decoder())"
    param = next(model.parameters())
    ids = (torch.arange(_PROBE_LENGTH, device=param.device) % head.out_features).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(input_ids=ids).logits.float()
            fused = head(decoder(input_ids=ids).last_hidden_state).float()
    except Exception as exc:  # any failure means: use the materialised path
        return None, f"probe forward failed: {type(exc).__name__}: {exc}"
    finally:
        model.train(was_training)
    if fused.shape != reference.shape:
        shapes = f"{tuple(fused.shape)} vs logits {tuple(reference.shape)}"
        return None, f"lm_head(decoder(x)) has shape {shapes}"
    tolerance = 1e-4 if param.dtype in (torch.float32, torch.float64) else 2e-2
    error = (fused - reference).abs().max().item()
    scale = 1.0 + reference.abs().max().item()
    if not error <= tolerance * scale:
        return None, (
            f"logits are not lm_head(decoder(x)) (max difference {error:.3g}): the architecture "
            "scales or soft-caps its logits"
        )
    return head, ""


def dropout_of(model: nn.Module) -> float:
    """The largest dropout probability ``model`` applies in train mode (its ``nn.Dropout``
    modules and the attention dropout of its config): where it is not 0, a teacher-forced
    forward in train mode is not the distribution that sampled (in eval mode)."""
    probabilities = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    config = getattr(model, "config", None)
    probabilities.append(float(getattr(config, "attention_dropout", 0.0) or 0.0))
    return max(probabilities)


class ResponseStats:
    """Token statistics of ``model`` on rollouts, through the fused path when it applies.

    Args:
        model: a Hugging Face causal LM.
        temperature: sampling temperature ``T`` of the statistics.
        mode: ``"auto"`` fuses when :func:`fusable_lm_head` allows it; ``"always"`` refuses a
            model it does not allow (with the reason); ``"never"`` materialises logits.
        valid_vocab: real tokens of a padded output layer
            (:func:`~entropy_dynamics.models.loading.valid_vocab_size`); later rows get ``p = 0``
            in every statistic and are cut from :meth:`logits`.
        shared_prompts: run each distinct prompt once per forward where the model allows it
            (:attr:`prompt_reason` says why not where it does not).
    """

    def __init__(
        self,
        model: nn.Module,
        temperature: float,
        mode: FusedMode = "auto",
        valid_vocab: int | None = None,
        shared_prompts: bool = True,
    ) -> None:
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"fused stats mode must be 'auto', 'always' or 'never', got {mode!r}")
        self.model = model
        self.temperature = temperature
        head, reason = (None, "fused_stats=never") if mode == "never" else fusable_lm_head(model)
        if mode == "always" and head is None:
            raise ValueError(
                f"fused_stats=always, but the fused path cannot serve this model: {reason}"
            )
        self.head = head
        self.reason = reason
        self.valid_vocab = valid_vocab
        self.prompt_reason = "off"
        if shared_prompts:
            self.prompt_reason = check_shared_prompts(self._run, model)

    @property
    def shares_prompts(self) -> bool:
        return self.prompt_reason == ""

    def _run(
        self, ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
        cache: object | None = None, use_cache: bool = False,
    ) -> tuple[Tensor, object]:  # fmt: skip
        """``(outputs, cache)``: the decoder's hidden states (fused) or the model's logits, and
        the key/value cache when one is passed in or asked for."""
        module = self.model.get_decoder() if self.fused else self.model
        inputs = {"input_ids": ids, "attention_mask": attention_mask, "position_ids": position_ids}
        if cache is not None or use_cache:
            inputs[self._cache_name] = cache
            inputs["use_cache"] = True
        else:
            inputs["use_cache"] = False
        out = module(**inputs)
        outputs = out.last_hidden_state if self.fused else out.logits
        return outputs, out.get(self._cache_name)

    @cached_property
    def _cache_name(self) -> str:
        """The cache's keyword: ``cache`` (transformers >= 5.25), ``past_key_values`` before."""
        module = self.model.get_decoder() if self.fused else self.model
        return "cache" if "cache" in inspect.signature(module.forward).parameters else (
            "past_key_values"
        )

    @property
    def fused(self) -> bool:
        return self.head is not None

    @property
    def lm_head(self) -> LMHead:
        """The fused path's lm_head: the model's current ``head`` weight and bias, ``T`` and the
        valid vocabulary, as the kernels take them (fused path only)."""
        return LMHead(self.head.weight, self.head.bias, self.temperature, self.valid_vocab)

    def features(self, rollout: Rollout, rows: Tensor | slice | None = None) -> Tensor:
        """``(n, R, d)`` hidden states (fused) or ``(n, R, V)`` logits, predicting each token;
        the forward runs up to the rows' longest response only (zeros after it)."""
        forward = shared_prompt_outputs if self.shares_prompts else full_outputs
        outputs = forward(self._run, *narrowed(rollout, rows))  # (n, r ≤ R, ·)
        width = rollout.response_ids.shape[1]
        if outputs.shape[1] < width:  # the rows' padding columns, never run: zeros
            outputs = nn.functional.pad(outputs, (0, 0, 0, width - outputs.shape[1]))
        return outputs if self.fused else self._cut(outputs)

    def logits(self, features: Tensor) -> Tensor:
        """Raw logits of a (small) set of feature rows: ``(..., V)`` (valid vocabulary only)."""
        return self._cut(self.head(features)) if self.fused else features

    def _cut(self, logits: Tensor) -> Tensor:
        return logits if self.valid_vocab is None else logits[..., : self.valid_vocab]

    def stats(self, features: Tensor, tokens: Tensor, entropy_grad: bool = False) -> TokenStats:
        """:class:`TokenStats` of ``softmax(logits / T)`` at ``tokens``, shapes ``tokens.shape``."""
        if not self.fused:
            return token_stats(features, tokens, self.temperature, entropy_grad=entropy_grad)
        return head_token_stats(features, self.lm_head, tokens, entropy_grad=entropy_grad)

    def fuses_loss(self, config: PolicyLossConfig) -> bool:
        """Whether :meth:`policy_loss` serves ``config``: the fused path and the ``ppo`` loss."""
        return self.fused and config.loss == "ppo"

    def policy_loss(
        self,
        config: PolicyLossConfig,
        rollout: Rollout,
        rows: Tensor | slice,
        old_logprobs: Tensor,
        advantages: Tensor,
        keep_mask: Tensor,
        scales: tuple[float | Tensor, float | Tensor] = (1.0, 1.0),
        features: Tensor | None = None,
    ) -> tuple[PolicyLossOutput, TokenStats]:
        """The ``ppo`` loss of ``config`` on the response tokens of ``rollout[rows]``, fused with
        the ``lm_head``: its gradient is formed in the forward pass
        (:func:`~entropy_dynamics.losses.fused.fused_policy_loss`).

        Args:
            old_logprobs, advantages, keep_mask: ``(N, R)`` over the whole rollout.
            scales: ``(pg_scale, entropy_scale)``, the micro-batch's shares of the two terms.
            features: ``(n, R, d)`` hidden states of ``rows`` already formed with gradient
                (:meth:`features`), else formed here.

        Returns:
            ``(output, stats)``: the loss and the detached ``(n, R)`` statistics of the current
            policy at the valid positions (0 on padding).
        """
        if not self.fuses_loss(config):
            raise ValueError(
                f"the fused loss serves loss 'ppo' on the fused path only; loss is "
                f"{config.loss!r}, fused path: {self.reason or 'yes'}"
            )
        return fused_policy_loss(
            config,
            self.features(rollout, rows) if features is None else features,
            self.lm_head,
            rollout.response_ids[rows],
            old_logprobs[rows],
            advantages[rows],
            rollout.response_mask[rows],
            keep_mask[rows],
            pg_scale=scales[0],
            entropy_scale=scales[1],
        )
