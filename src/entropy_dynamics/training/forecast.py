"""The trainer's forecast of each optimizer step's entropy change, computed before the step.

Beyond the paper: Theorem 3.3 is a per-position law in logit space, blind to the parameters that
positions share. Here the forecast lives in parameter space (:mod:`entropy_dynamics.dynamics`):
before ``optimizer.step()`` the exact step ``Δθ`` is read off the optimizer
(:func:`~entropy_dynamics.dynamics.optimizer_update`) and dotted with ``∇θ H̄`` of two mean
entropies, each a fixed function of the parameters:

- ``batch``: the mean token entropy at the step's dynamics positions (the first
  ``dynamics_max_tokens`` response tokens, teacher-forced on the step's own samples) — the
  quantity ``dynamics/delta_h_actual`` measures after the step;
- ``probe``: the mean token entropy on a fixed probe set — validation prompts with one response
  each, sampled once from the initial policy and kept in the run directory (``probe.safetensors``)
  so that a resumed run forecasts the same quantity.

Costs per optimizer step: one forward + backward of each target; with ``second_order`` two more
of each (the gradients at ``θ ± hΔθ``, :func:`~entropy_dynamics.dynamics.second_order_forecast`);
with ``groups`` four extra backward passes of the loss graph and four parameter-sized buffers (the
gradient of each token group). No random numbers are drawn and the parameters are restored bit for
bit, so a run with the forecast trains exactly as one without.

Token groups (``groups``): the loss gradient is ``g = Σ_t a_t ∇θ log p_t`` (+ an entropy bonus),
``a_t = ∂L/∂ log p_t``; group ``G`` (advantage sign × sign of ``S_k - E_p[S]`` of the rollout
policy) owns ``g_G = Σ_{t∈G} a_t ∇θ log p_t``. With the optimizer's state after this gradient held
fixed, ``Δθ`` is linear in ``g`` (``gain``), so group ``G`` moves ``H̄`` by
``κ ⟨gain ⊙ ∇θ H̄, g_G⟩`` (``κ`` the gradient-clipping factor) — through every position it shares
parameters with, not only its own. ``other`` is the rest of the forecast: momentum, weight decay
and any entropy bonus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from entropy_dynamics.dynamics import (
    QUADRANTS,
    forecast_change,
    optimizer_update,
    quadrant_masks,
    second_order_forecast,
)
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.randomness import side_stream
from entropy_dynamics.training.rollout import Rollout, generate
from entropy_dynamics.training.setup import RunSetup

__all__ = [
    "PROBE_FILE",
    "EntropyForecast",
    "Target",
    "clip_coefficient",
    "forecast_metrics",
    "load_probe",
    "probe_rollout",
    "save_probe",
]

PROBE_FILE = "probe.safetensors"
_PROBE_FIELDS = ("input_ids", "attention_mask", "response_ids", "response_mask")


@dataclass
class Target:
    """A mean entropy ``H̄(θ)``: the mean of ``H`` over ``mask`` positions of ``rollout``."""

    rollout: Rollout
    mask: Tensor
    """``(N, R)`` bool: the positions averaged."""


class EntropyForecast:
    """Forecasts of the next optimizer step for named :class:`Target` s (module docstring).

    Args:
        stats: the trainer's :class:`~entropy_dynamics.training.forward.ResponseStats`.
        optimizer: the trainer's optimizer (SGD, Adam or AdamW).
        second_order: also forecast to second order along the step.
        groups: also split the forecast by token group.
        h: relative offset of the central difference of the second-order term.
    """

    def __init__(
        self,
        stats: ResponseStats,
        optimizer: torch.optim.Optimizer,
        *,
        second_order: bool = False,
        groups: bool = False,
        h: float = 0.5,
    ) -> None:
        self.stats = stats
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.second_order = second_order
        self.groups = groups
        self.h = h
        self._targets: dict[str, Target] = {}
        self._gradients: dict[str, list[Tensor | None]] = {}
        self._group_gradients: dict[str, list[Tensor | None]] = {}

    # ------------------------------------------------------------------ mean entropies
    def mean_entropy(self, target: Target, grad: bool = False):
        """``(H̄, ∇θ H̄ or None)`` at the current parameters; ``H̄`` a 0-d float64 tensor."""
        rows = target.mask.any(-1).nonzero().squeeze(-1)
        count = target.mask.sum().clamp(min=1)
        with torch.set_grad_enabled(grad):
            features = self.stats.features(target.rollout, rows)
            tokens = target.rollout.response_ids[rows]
            entropy = self.stats.stats(features, tokens, entropy_grad=grad).entropy  # (n, R)
            value = (entropy.double() * target.mask[rows]).sum() / count
        if not grad:
            return value.detach().cpu(), None
        gradients = torch.autograd.grad(value, self.params, allow_unused=True)
        return value.detach().cpu(), list(gradients)

    # ------------------------------------------------------------------ one optimizer step
    def begin(self, targets: dict[str, Target]) -> dict[str, Tensor]:
        """Gradients of every target at the current parameters; returns their values."""
        self._targets = targets
        self._group_gradients = {}
        values = {}
        for name, target in targets.items():
            values[name], self._gradients[name] = self.mean_entropy(target, grad=True)
        return values

    def add_group_gradients(
        self, loss: Tensor, logprobs: Tensor, group_masks: dict[str, Tensor]
    ) -> None:
        """Accumulate each token group's share of ``∇θ loss`` (call before ``loss.backward()``).

        Args:
            loss: the scalar that is about to be backpropagated.
            logprobs: ``(b, R)`` the ``log p_t`` it was computed from (part of its graph).
            group_masks: group name → ``(b, R)`` bool, the group's tokens.
        """
        if not self.groups:
            return
        (weights,) = torch.autograd.grad(loss, logprobs, retain_graph=True)  # a_t = ∂L/∂log p_t
        weights = weights.detach()
        for name, mask in group_masks.items():
            share = (weights * mask * logprobs).sum()
            if not share.requires_grad:
                continue
            grads = torch.autograd.grad(share, self.params, retain_graph=True, allow_unused=True)
            acc = self._group_gradients.setdefault(name, [None] * len(self.params))
            for i, g in enumerate(grads):
                if g is not None:
                    acc[i] = g.detach() if acc[i] is None else acc[i] + g

    def finish(self, clip_coef: float) -> dict[str, Tensor]:
        """Forecast metrics of the step the optimizer is about to take (after gradient clipping,
        before ``optimizer.step()``), keyed ``<target>/first_order`` etc."""
        updates, gains = optimizer_update(self.optimizer)
        out: dict[str, Tensor] = {}
        for name, gradients in self._gradients.items():
            first = forecast_change(gradients, updates)
            out[f"{name}/first_order"] = first
            if self.second_order:
                slopes = [self._slope_at(name, s * self.h, updates) for s in (1, -1)]
                second, curvature = second_order_forecast(first, *slopes, self.h)
                out[f"{name}/second_order"], out[f"{name}/curvature"] = second, curvature
            if self._group_gradients:
                preconditioned = [
                    None if g is None or k is None else g * k
                    for g, k in zip(gradients, gains, strict=True)
                ]
                explained = torch.zeros((), dtype=torch.float64)
                for group in QUADRANTS:
                    part = clip_coef * forecast_change(
                        preconditioned, self._group_gradients.get(group, [None] * len(updates))
                    )
                    out[f"{name}/group/{group}"] = part
                    explained = explained + part
                out[f"{name}/group/other"] = first - explained
        self._gradients, self._group_gradients = {}, {}
        return out

    # ------------------------------------------------------------------ the trainer's step
    def plan(
        self,
        rollout: Rollout,
        positions: tuple[Tensor, Tensor],
        advantages: Tensor,
        deviation: Tensor,
        probe: Target | None = None,
    ) -> dict | None:
        """Targets and token groups of one training step's forecast: the mean entropy at the
        step's dynamics ``positions`` (``batch``) and the ``probe`` set's; ``None`` when there
        is no position. ``advantages``, ``deviation``: ``(N, R)``, they set the groups."""
        if positions[0].numel() == 0:
            return None
        batch_mask = torch.zeros_like(rollout.response_mask)  # (N, R)
        batch_mask[positions] = True
        targets = {"batch": Target(rollout, batch_mask)}
        if probe is not None:
            targets["probe"] = probe
        groups = quadrant_masks(advantages, deviation) if self.groups else {}
        return {"targets": targets, "groups": groups}

    def step_metrics(self, plan: dict, forecasts: dict[str, Tensor], delta_h: Tensor) -> dict:
        """:func:`forecast_metrics` of a step's summed ``forecasts`` against the measured change:
        ``delta_h`` of the batch, and the probe's measured now (the step's updates are done)."""
        actual = {"batch": delta_h}
        if "probe" in plan.get("before", {}):
            after, _ = self.mean_entropy(plan["targets"]["probe"])
            actual["probe"] = after - plan["before"]["probe"]
        return forecast_metrics(forecasts, actual)

    @torch.no_grad()
    def _slope_at(self, name: str, s: float, updates: list[Tensor | None]) -> Tensor:
        """``⟨∇H̄(θ + sΔθ), Δθ⟩``; the parameters are restored exactly afterwards."""
        saved = [p.detach().clone() for p in self.params]
        try:
            for param, update in zip(self.params, updates, strict=True):
                if update is not None:
                    param.add_(update.to(param.dtype), alpha=s)
            _, gradients = self.mean_entropy(self._targets[name], grad=True)
        finally:
            for param, original in zip(self.params, saved, strict=True):
                param.copy_(original)
        return forecast_change(gradients, updates)


def forecast_metrics(forecasts: dict[str, Tensor], actual: dict[str, Tensor]) -> dict:
    """Trainer metrics from :meth:`EntropyForecast.finish` (summed over a step's updates) and the
    measured changes ``{"batch": ΔH, "probe": ΔH}``: ``dynamics/forecast``,
    ``dynamics/forecast_probe`` (+ ``_second_order``, ``_curvature``, ``_group/<g>``), their
    ``_error`` against the measured change, and ``dynamics/delta_h_probe_actual``."""
    names = {"batch": "dynamics/forecast", "probe": "dynamics/forecast_probe"}
    out = {}
    for key, value in forecasts.items():
        target, _, kind = key.partition("/")
        out[names[target] + ("" if kind == "first_order" else "_" + kind)] = value
    if "probe" in actual:
        out["dynamics/delta_h_probe_actual"] = actual["probe"]
    for target, change in actual.items():
        for order in ("", "_second_order"):
            if names[target] + order in out:
                out[names[target] + order + "_error"] = out[names[target] + order] - change
    return out


def clip_coefficient(total_norm: Tensor, max_norm: float) -> float:
    """The factor ``torch.nn.utils.clip_grad_norm_`` scaled the gradients by."""
    return min(1.0, max_norm / (float(total_norm) + 1e-6))


# ---------------------------------------------------------------------------------------------
# The probe set: fixed sequences, kept with the run
# ---------------------------------------------------------------------------------------------


def probe_rollout(setup: RunSetup, path: Path, resume: bool) -> Rollout:
    """A run's fixed probe set: read back from ``path`` when resuming, else one response to each
    of the first ``forecast.probe_prompts`` prompts of the validation split, sampled from the
    setup's current policy on an RNG stream of its own (the run's random numbers are not
    touched) and saved to ``path`` (:data:`PROBE_FILE`)."""
    if resume and path.is_file():
        return load_probe(path, setup.device)
    cfg = setup.config
    problems = setup.validation_problems[: cfg.forecast.probe_prompts]
    prompts = [setup.task.prompt(p) for p in problems]
    with side_stream(cfg.seed + 7919, setup.device):
        probe = generate(
            setup.model,
            setup.tokenizer,
            prompts,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            valid_vocab=setup.valid_vocab,
            batch_size=cfg.rollout.generation_batch_size,
        )
    save_probe(probe, path)
    return probe


def save_probe(rollout: Rollout, path: str | Path) -> None:
    """Write the tensors that replay ``rollout`` (teacher forcing) to ``path`` (safetensors)."""
    from safetensors.torch import save_file

    tensors = {k: getattr(rollout, k).contiguous().cpu() for k in _PROBE_FIELDS}
    save_file(tensors, str(path), metadata={"prompt_length": str(rollout.prompt_length)})


def load_probe(path: str | Path, device: torch.device | str = "cpu") -> Rollout:
    """Read a probe written by :func:`save_probe` as a :class:`Rollout` (no completions)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        missing = [k for k in _PROBE_FIELDS if k not in f.keys()]  # noqa: SIM118
        if missing:
            raise ValueError(f"{path}: not a probe file (missing {', '.join(missing)})")
        tensors = {k: f.get_tensor(k) for k in _PROBE_FIELDS}
        prompt_length = int(f.metadata()["prompt_length"])
    n, length = tensors["response_ids"].shape
    zeros = torch.zeros(n, length, device=tensors["response_ids"].device)
    return Rollout(
        input_ids=tensors["input_ids"],
        attention_mask=tensors["attention_mask"],
        response_ids=tensors["response_ids"],
        response_mask=tensors["response_mask"].bool(),
        sampling_logprobs=zeros,
        sampling_entropy=zeros,
        prompt_index=torch.arange(n, device=zeros.device),
        completions=[""] * n,
        prompt_length=prompt_length,
        truncated=torch.zeros(n, dtype=torch.bool, device=zeros.device),
    )
