"""GRPO trainer for one machine, instrumented for entropy dynamics (arXiv 2602.03392).

Algorithmic choices, each one line (defaults in :mod:`entropy_dynamics.training.config`):

- rollout: ``B`` prompts × ``G`` samples from the current policy at temperature ``T`` (top-p 1);
- reward: outcome reward of the task (Countdown: 1 if the expression hits the target);
- KL: none (DAPO); ``algorithm.kl.coef > 0``: ``β · agg(KL_k)`` to the frozen initial model;
- advantage: GRPO group-relative ``A = (R - mean_group) / (std_group + 1e-6)``, broadcast to tokens;
- "old" policy: the rollout policy; its statistics are those recorded while sampling when the
  update is on-policy (one epoch of one mini-batch), else recomputed by a teacher-forced forward
  before any update (``rollout.statistics``);
- statistics: ``H``, ``S_k``, ``E_p[S]`` of the temperature-scaled rollout distribution, fused
  from the final hidden states and the ``lm_head`` (no ``(N, R, V)`` logits) when the model
  allows it (:mod:`entropy_dynamics.training.forward`), from materialised logits otherwise;
- update: ``K`` epochs × ``M`` mini-batches of the rollout batch, one optimizer step each, its
  gradient accumulated exactly over micro-batches (:mod:`~entropy_dynamics.training.update`);
- control: a closed-loop method's controller sets each step's loss config (``control``);
- loss: the configured method from :mod:`entropy_dynamics.losses` (PPO-clip surrogate, a token
  filter such as Clip_B / Clip_V, token-mean aggregation by default); on the fused path PPO-clip
  and its gradient come from one pass over the hidden states (``forward.policy_loss``, issue 16);
- optimizer: AdamW, grad clip 1.0; learning rate constant after an optional linear warm-up, or
  decaying (``optim.schedule``: linear, cosine);
- dynamics: entropy of the step's batch re-measured after the update (actual ΔH) next to the
  first-order prediction from the measured logit change and Theorem 3.3's prediction;
- forecast (``forecast.enabled``, beyond the paper): before each optimizer step, ``⟨∇θ H̄, Δθ⟩``
  of the batch's and a fixed probe set's mean entropy, with ``Δθ`` the step AdamW is about to
  take (:mod:`entropy_dynamics.training.forecast`);
- evaluation (``eval.every``): Avg@k / Pass@k on the first ``eval.problems`` of the task's
  *validation* split (the ``eval/*`` metrics: monitoring, never a result), on a random stream
  of its own; the test split is read by final evaluations only.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.advantages import broadcast_to_tokens, get_advantage_fn
from entropy_dynamics.aggregation import masked_mean
from entropy_dynamics.losses import select_tokens
from entropy_dynamics.methods import build_controller
from entropy_dynamics.training import checkpoint as ckpt
from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.cursor import DataCursor
from entropy_dynamics.training.evaluate import evaluate
from entropy_dynamics.training.forecast import (
    PROBE_FILE,
    EntropyForecast,
    Target,
    clip_coefficient,
    probe_rollout,
)
from entropy_dynamics.training.forward import dropout_of
from entropy_dynamics.training.guards import NonFiniteError, nonfinite_update
from entropy_dynamics.training.interrupts import StopRequests, TrainingInterrupted
from entropy_dynamics.training.metrics import MetricsWriter, to_floats
from entropy_dynamics.training.provenance import write_config
from entropy_dynamics.training.randomness import side_stream
from entropy_dynamics.training.reference import UNFUSED_NOTICE, start_reference
from entropy_dynamics.training.resume_from import claim
from entropy_dynamics.training.rollout import Rollout, generate
from entropy_dynamics.training.samples import SampleLog
from entropy_dynamics.training.setup import RunSetup
from entropy_dynamics.training.step_metrics import (
    dynamics_metrics,
    dynamics_positions,
    reward_metrics,
    rollout_metrics,
)
from entropy_dynamics.training.update import PreUpdate, UpdateBatch, accumulate_gradients, adamw

__all__ = ["Trainer", "masked_mean"]

Callback = Callable[[str, int, dict[str, float]], None]


class Trainer:
    """Runs :class:`TrainConfig` in ``run_dir``.

    A directory that already holds a run is refused unless ``resume`` (continue its last good
    checkpoint; the config must match it, :mod:`~entropy_dynamics.training.run_dir`) or
    ``overwrite`` (move the old run aside); ``resume_from`` continues a chosen checkpoint
    (:mod:`~entropy_dynamics.training.resume_from`); :attr:`notice` says what was done. A finished
    run's model is exported to ``run_dir/model/``.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        resume_from: str | Path | None = None,
    ):
        self.config = config
        self.run_dir = Path(run_dir)
        # the run's lock first: one process per run directory (released by close())
        self.lock, checkpoint, self.notice = claim(
            self.run_dir, to_dict(config), resume=resume, overwrite=overwrite, path=resume_from
        )
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.loss_config = config.algorithm.policy_loss()  # then each step's, from the controller
        self.controller = build_controller(
            config.algorithm.method, config.algorithm.control, self.loss_config, config.steps
        )
        self.advantage_fn = get_advantage_fn(config.algorithm.advantage)
        self.step, self.bad_updates = 0, 0  # bad: non-finite updates in a row
        # model, tokenizer, prompted task, vocabulary, statistics: after the seed, as always
        self.setup = setup = RunSetup.build(config, checkpoint)
        setup.check_context()
        self.model, self.tokenizer, self.task = setup.model, setup.tokenizer, setup.task
        self.train_problems, self.eval_problems = setup.train_problems, setup.eval_problems
        self.cursor = DataCursor(config.seed, len(self.train_problems))
        self.device = setup.device
        if config.model.gradient_checkpointing:  # activation_checkpointing in transformers 5
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()
        self.forward = setup.stats
        algorithm = config.algorithm
        self.reference = start_reference(setup, algorithm.kl)  # None: no KL penalty
        self.fused_loss = self.forward.fuses_loss(self.loss_config)  # not under a forecast
        if self.fused_loss and self.reference is not None:  # it has no log π_θ for the KL term
            self.fused_loss = False
            self.notice = "\n".join(filter(None, [self.notice, UNFUSED_NOTICE]))
        self.stats_from_sampling = (  # on-policy: the sampler's statistics are the old policy's
            config.rollout.statistics == "auto"
            and algorithm.updates_per_step == algorithm.mini_batches == 1
            and dropout_of(self.model) == 0
        )
        optimizer_steps = config.steps * algorithm.updates_per_step * algorithm.mini_batches
        self.optimizer, self.scheduler = adamw(self.model, config.optim, optimizer_steps)
        if checkpoint is not None:
            state = ckpt.load_checkpoint(checkpoint)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.cursor.load(state["data"])
            self.step = state["step"]
            self.controller.load_state_dict(state.get("controller", {}))
            ckpt.restore_rng_state(state["rng"])
            if self.reference is not None:  # the reference is the initial model, loaded again
                initial = config.model.resolved_path(config.task.name)
                self.reference.check(state.get("reference"), str(initial))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(config, self.run_dir)  # config.yaml, with provenance.json beside it
        self.samples = SampleLog(self.run_dir, config.logging.samples_every, config.logging.samples,
                                 self.tokenizer, self.step, config.tensorboard)  # fmt: skip
        self.forecaster: EntropyForecast | None = None
        self.probe: Target | None = None
        if config.forecast.enabled:
            self._start_forecast(resume=checkpoint is not None)

    def _start_forecast(self, resume: bool) -> None:
        """The forecaster and, with ``probe_prompts``, the run's fixed probe set."""
        cfg = self.config.forecast
        self.forecaster = EntropyForecast(
            self.forward, self.optimizer, second_order=cfg.second_order, groups=cfg.groups
        )
        if cfg.probe_prompts:
            probe = probe_rollout(self.setup, self.run_dir / PROBE_FILE, resume)
            self.probe = Target(probe, probe.response_mask)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        """One step: rollout of the next prompts, then :meth:`learn` from it."""
        cfg = self.config
        start = time.perf_counter()
        indices = self.cursor.take(cfg.rollout.prompts_per_step)
        problems = [self.train_problems[i] for i in indices]
        rollout = self.rollout(problems)
        rollout_time = time.perf_counter() - start
        metrics = self.learn(problems, rollout)
        elapsed = time.perf_counter() - start
        metrics["perf/step_time"], metrics["perf/rollout_time"] = elapsed, rollout_time
        metrics["perf/tokens_per_s"] = float(rollout.response_mask.sum()) / elapsed
        self.step += 1
        return metrics

    def rollout(self, problems: list) -> Rollout:
        """``G`` samples of each problem's prompt from the current policy."""
        cfg = self.config.rollout
        return generate(
            self.model,
            self.tokenizer,
            [self.task.prompt(p) for p in problems],
            num_samples=cfg.group_size,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            valid_vocab=self.setup.valid_vocab,
            batch_size=cfg.generation_batch_size,
        )

    def learn(self, problems: list, rollout: Rollout) -> dict[str, float]:
        """Rewards → advantages → rollout-policy statistics → filter → K×M updates → dynamics."""
        cfg = self.config
        start = time.perf_counter()
        mask = rollout.response_mask
        reward, metrics = reward_metrics(self.task, problems, rollout)
        seq_adv = self.advantage_fn(reward, rollout.prompt_index).to(self.device)
        advantages = broadcast_to_tokens(seq_adv, mask)  # (N, R)

        measure = cfg.dynamics and (self.step + 1) % cfg.dynamics_every == 0
        positions = dynamics_positions(mask, cfg.dynamics_max_tokens) if measure else None
        old, before, pre_update = self._rollout_policy(rollout, positions)
        metrics.update(rollout_metrics(rollout, old, advantages))
        metrics["stats/from_sampling"] = torch.tensor(float(pre_update is not None))
        prompts = [self.task.prompt(p) for p in problems]
        self.samples.write(self.step + 1, prompts, rollout, reward, seq_adv, old)  # when due
        self.loss_config, control_metrics = self.controller.begin(self.step, old, mask)
        metrics.update(control_metrics)
        # The filter sees the whole rollout batch (its batch statistics), as the reference code.
        keep, filter_metrics = select_tokens(self.loss_config, old, advantages, mask)  # (N, R)
        metrics.update(filter_metrics)
        ref_logprobs = None if self.reference is None else self.reference.logprobs(rollout)

        forecaster, forecast = self.forecaster, None
        if forecaster is not None and positions is not None:  # the forecast needs the dynamics
            forecast = forecaster.plan(rollout, positions, advantages, old.deviation, self.probe)
        n = mask.shape[0]
        batches = torch.arange(n).chunk(cfg.algorithm.mini_batches)  # M × (B,) row indices
        update_metrics: list[dict[str, Tensor]] = []
        forecasts: dict[str, Tensor] = {}
        for _ in range(cfg.algorithm.updates_per_step):
            for rows in batches:
                batch = UpdateBatch(rollout, old, advantages, keep, ref_logprobs)  # (N, R) each
                step_metrics, step_forecast = self._update(batch, rows, forecast, pre_update)
                update_metrics.append(step_metrics)
                for key, value in step_forecast.items():  # forecasts of the K×M steps add up
                    forecasts[key] = forecasts.get(key, 0.0) + value
        for key in update_metrics[0]:
            metrics[key] = torch.stack([m[key].float() for m in update_metrics]).mean()

        metrics["perf/update_time"] = time.perf_counter() - start
        current, seen = old.logprobs, mask  # (N, R) each
        if pre_update is not None:  # the rows the loss pass skipped were not run: not compared
            current, seen = pre_update.logprobs, mask & ~pre_update.skipped.to(mask.device)[:, None]
        metrics["rollout/logprob_mismatch"] = masked_mean(  # sampler vs teacher forcing, same θ
            (rollout.sampling_logprobs.to(current) - current).abs(), seen
        )
        if positions is not None:
            before = before if pre_update is None else pre_update.logits  # (n, V) before the step
            at = (rollout, positions, before, advantages, keep, cfg.rollout.temperature)
            metrics.update(dynamics_metrics(self.forward, *at, cfg.algorithm.micro_batch_tokens))
        if forecast is not None:
            delta_h = metrics["dynamics/delta_h_actual"]
            metrics.update(forecaster.step_metrics(forecast, forecasts, delta_h))
        self.controller.end(metrics)
        metrics["optim/lr"] = self.scheduler.get_last_lr()[0]
        return to_floats(metrics)

    def _rollout_policy(self, rollout: Rollout, positions):
        """``(old, before, pre_update)``: the rollout policy's ``(N, R)`` statistics; and either
        the ``(n, V)`` logits at the dynamics ``positions`` from the teacher-forced pass that
        gave them (``pre_update`` ``None``), or, statistics from the sampler, the
        :class:`~entropy_dynamics.training.update.PreUpdate` in which the loss pass keeps them
        (``before`` ``None``)."""
        sampled = rollout.sampling_stats() if self.stats_from_sampling else None
        if sampled is not None:
            return sampled, None, PreUpdate(rollout, positions)
        with torch.no_grad():
            old_features = self.forward.features(rollout)  # (N, R, d) hidden, or (N, R, V) logits
            old = self.forward.stats(old_features, rollout.response_ids)  # (N, R) each field
            before = None
            if positions is not None:  # formed now: the update also moves the lm_head
                before = self.forward.logits(old_features[positions])  # (n, V)
        return old, before, None

    def _update(self, batch: UpdateBatch, rows, forecast, pre_update: PreUpdate | None = None):
        """One optimizer step on ``rows`` (a ``(B,)`` index tensor), its gradient accumulated
        over micro-batches (:func:`~entropy_dynamics.training.update.accumulate_gradients`);
        returns ``(metrics, forecast of this step)``. ``pre_update`` keeps what the loss pass
        sees of the policy before the step."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        forecaster, groups = None, None
        if forecast is not None:
            forecaster, groups = self.forecaster, forecast["groups"]
            values = forecaster.begin(forecast["targets"])  # ∇θ H̄ at this step's θ
            forecast.setdefault("before", values)  # H̄ before the first update of the batch
        total, averaged = accumulate_gradients(
            self.forward,
            self.loss_config,
            batch,
            rows,
            cfg.algorithm.micro_batch_size,
            micro_batch_tokens=cfg.algorithm.micro_batch_tokens,
            fused=self.fused_loss,
            forecaster=forecaster,
            groups=groups,
            pre_update=pre_update,
            kl=cfg.algorithm.kl if self.reference is not None else None,
            skip_idle=cfg.algorithm.skip_idle_rows,
        )
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        predicted = {}
        bad = nonfinite_update(self.model, total, grad_norm)
        if bad is not None:  # never step into NaN weights: skip, count, stop when it persists
            self.optimizer.zero_grad(set_to_none=True)
            self._skip_update(bad)
        else:
            self.bad_updates = 0
            if forecaster is not None:  # after clipping, before the step: the step it will take
                predicted = forecaster.finish(clip_coefficient(grad_norm, cfg.optim.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
        skipped = torch.tensor(float(bad is not None))
        return {
            **averaged,
            "actor/loss": total,
            "actor/grad_norm": grad_norm,
            "actor/skipped_nonfinite": skipped,
        }, predicted

    def _skip_update(self, what: str) -> None:
        """Skip an update with a non-finite ``what``; after ``max_bad_steps`` in a row, checkpoint
        the (still finite) weights and stop with :class:`NonFiniteError`."""
        self.bad_updates += 1
        step, limit = self.step + 1, self.config.max_bad_steps
        warnings.warn(
            f"step {step}: non-finite {what}; update skipped ({self.bad_updates} in a row, "
            f"max_bad_steps={limit})",
            stacklevel=2,
        )
        if self.bad_updates >= limit:
            path = self.save()
            raise NonFiniteError(
                f"step {step}: non-finite {what} in {self.bad_updates} updates in a row "
                f"(max_bad_steps={limit}); stopped with the last good weights in {path}. Lower "
                "optim.lr or check the data and rewards, then resume"
            )

    # ------------------------------------------------------------------ loop
    def close(self) -> None:
        """Release the run directory's lock (safe to call twice; exiting the process does too)."""
        self.lock.release()
        self.samples.close()

    def evaluate(self) -> dict[str, float]:
        """Avg@k / Pass@k on the validation split (``eval/*``), on a stream of its own:
        training's draws are untouched."""
        cfg = self.config.eval
        with side_stream(self.config.seed, self.setup.device):
            result = evaluate(self.model, self.tokenizer, self.task, self.eval_problems, k=cfg.k,
                              temperature=cfg.temperature,
                              max_new_tokens=self.config.rollout.max_new_tokens)  # fmt: skip
        self.model.train()
        return result.to_metrics("eval")

    def save(self) -> Path:
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "data": self.cursor.state(),
            "controller": self.controller.state_dict(),
        }
        if self.reference is not None:  # the reference is not saved: it is the initial model
            state["reference"] = self.reference.fingerprint
        metrics_file, keep = self.run_dir / "metrics.jsonl", self.config.keep_checkpoints
        readable = ckpt.readable_state(self.step, to_dict(self.config), metrics_file)
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer, state,
                                    keep=keep, readable=readable)  # fmt: skip

    def train(self, callback: Callback | None = None) -> list[dict[str, float]]:
        """Run until ``config.steps``; call ``callback(event, step, metrics)`` after each step
        (``"step"``), before each evaluation (``"evaluating"``) and after the first (``"eval"``).

        Raises:
            TrainingInterrupted: SIGINT / SIGTERM arrived; the step in progress was finished
                and checkpointed (:mod:`~entropy_dynamics.training.interrupts`).
        """
        cfg = self.config
        history = []
        writer = MetricsWriter(self.run_dir, cfg.tensorboard, resume_step=self.step,
                               logging=cfg.logging, run_name=cfg.run_name,
                               run_config=to_dict(cfg))  # fmt: skip
        with writer, StopRequests() as stop:
            if self.step == 0 and cfg.eval.every > 0:
                if callback:  # an evaluation takes a while: said before it starts
                    callback("evaluating", 0, {})
                initial = self.evaluate()
                writer.write(0, initial)
                if callback:
                    callback("eval", 0, initial)
            while self.step < cfg.steps:
                metrics = self.train_step()
                last = self.step == cfg.steps
                if cfg.eval.every > 0 and (self.step % cfg.eval.every == 0 or last):
                    if callback:
                        callback("evaluating", self.step, {})
                    metrics.update(self.evaluate())
                writer.write(self.step, metrics)
                history.append(metrics)
                if callback:
                    callback("step", self.step, metrics)
                saved = self.save() if self.step % cfg.checkpoint_every == 0 or last else None
                if stop.requested and not last:
                    checkpoint = saved or self.save()
                    raise TrainingInterrupted(stop.requested, self.step, checkpoint)
        if self.step >= cfg.steps:  # finished: the model a user takes away (TRL's save_model)
            ckpt.export_model(self.run_dir, self.model, self.tokenizer)
        return history
