"""Closed-loop control and the dynamics monitor on verl's v1 driver
(``integrations/verl/control.py``, issue 27), through the patched trainer around the real FSDP
engine on CPU (the stand-in of ``verl_v1``):

- ``entropy_target``'s decisions equal our trainer's controller sequence replayed on the same
  batches (targets, integral state, ``κ``'s fit, keep-masks = the narrowed masks);
- a run resumed from ``global_step_2`` decides exactly as the uninterrupted run;
- the monitor equals a float64 recomputation from the model's logits before and after the update;
- ``adaptive_entropy``'s coefficient reaches verl's ``ppo_loss`` in the workers (the non-tensor
  flag ``ed_entropy_coeff`` of the actor update).
"""

from __future__ import annotations

import json
import types

import pytest
import torch

pytest.importorskip("verl")

from transformers import AutoModelForCausalLM
from verl_batch import B, C, small_batch
from verl_cpu import MODEL, actor_config, build_engine, flags, padded_batch
from verl_v1 import FakeTransferQueue, nested, run_step, trainer_module

from entropy_dynamics import theory
from entropy_dynamics.dynamics import QUADRANTS
from entropy_dynamics.integrations.control_loop import STATE_FILE, EngineControl
from entropy_dynamics.integrations.verl import STAT_KEYS, FilterSettings
from entropy_dynamics.integrations.verl.control import actor_extra_info, decide_step
from entropy_dynamics.integrations.verl.policy_losses import LOSS_TIME_ENV, patch_engine_workers
from entropy_dynamics.integrations.verl.trainer import patch_v1_trainer
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.methods import build_controller

CONTROL = {"target": 1.0, "schedule": "linear", "target_final": 0.8, "ki": 0.2, "smoothing": 0.2}
FILTER = {"band": 0.02, "gain": 1.0, "max_share": 0.3, "step_scale": 0.5}


@pytest.fixture(scope="module")
def engine():
    return build_engine(lr=1e-2, micro_batch=3)


def _pipeline(engine, tmp_path, node: dict, loss=None, resume_from=None, actor=None):
    """A patched stand-in trainer over the small batch, and ``step()``: one step of verl's loop
    on a fresh copy of the batch (verl samples a new one each step), returning its metrics and
    the narrowed mask."""
    from verl.workers.utils.losses import ppo_loss

    prompts, prompt_mask, responses, response_mask, advantages = small_batch()
    rollout = padded_batch(prompts, prompt_mask, responses, response_mask, advantages,
                           torch.zeros(B, C))  # fmt: skip
    flags(rollout, micro_batch_size_per_gpu=3)
    fresh = {
        "response_mask": nested(response_mask.long(), response_mask),
        "loss_mask": nested(response_mask.long(), response_mask),
        "response_advantages": nested(advantages.float(), response_mask),
    }
    tq = FakeTransferQueue(dict(fresh))

    def train_data():  # verl's update reads the narrowed masks and old log-probs from the queue
        store = {k: tq.store[k].to_padded_tensor(0) for k in ("response_mask", "old_log_probs")}
        data = padded_batch(prompts, prompt_mask, responses, response_mask, advantages,
                            store["old_log_probs"])  # fmt: skip
        data["response_mask"] = data["loss_mask"] = store["response_mask"].long()
        flags(data, micro_batch_size_per_gpu=3, calculate_entropy=True)
        return data

    module = trainer_module(engine, rollout, tq, train_data, loss or ppo_loss, actor_config(B, 3))
    patch_v1_trainer(module)
    trainer_config = {
        "algorithm": {"rollout_correction": None},
        "actor_rollout_ref": {
            "actor": {"calculate_entropy": True, **(actor or {})}, "rollout": {"temperature": 1.0}
        },
        "trainer": {"default_local_dir": str(tmp_path)},
        "entropy_dynamics": node,
    }
    if resume_from is not None:
        trainer_config["trainer"] |= {"resume_mode": "resume_path", "resume_from_path": resume_from}
    trainer = module.PPOTrainer(trainer_config)
    trainer._load_checkpoint()

    def step(save: bool = False) -> dict:
        tq.store.update(fresh)
        metrics = run_step(trainer, B, save=save)
        metrics["narrowed"] = tq.store["response_mask"].to_padded_tensor(0).bool()
        return metrics

    return trainer, tq, step, (prompts, prompt_mask, responses, response_mask)


class _Spy:
    """Records what each step's controller read (``EngineControl.decide``) and the entropy after
    the update its ``finish`` got, with the model's weights at both moments."""

    def __init__(self, monkeypatch, engine) -> None:
        self.steps: list[dict] = []
        decide, finish = EngineControl.decide, EngineControl.finish

        def record_decide(control, step, stats, advantages, mask):
            out = decide(control, step, stats, advantages, mask)
            self.steps.append({"step": step, "stats": stats, "advantages": advantages,
                               "mask": mask, "keep": out[1],
                               "before": _weights(engine)})  # fmt: skip
            return out

        def record_finish(control, entropy_after=None):
            if control.pending and self.steps:
                self.steps[-1] |= {"after_entropy": entropy_after, "after": _weights(engine)}
            return finish(control, entropy_after)

        monkeypatch.setattr(EngineControl, "decide", record_decide)
        monkeypatch.setattr(EngineControl, "finish", record_finish)


def _weights(engine) -> dict[str, torch.Tensor]:
    return {n: p.full_tensor().detach().clone() for n, p in engine.module.named_parameters()}


NODE = {"filter": "entropy_target", "filter_options": FILTER, "control": CONTROL,
        "monitor_every": 1}  # fmt: skip


def test_entropy_target_equals_our_trainers_controller_and_resumes_exactly(
    engine, tmp_path, monkeypatch
):
    spy = _Spy(monkeypatch, engine)
    trainer, tq, step, _ = _pipeline(engine, tmp_path, NODE)
    rows = [step(save=i == 1) for i in range(4)]
    assert [s["step"] for s in spy.steps] == [0, 1, 2, 3]  # verl's global_steps - 1
    # our trainer's sequence (training/trainer.py, learn): begin -> select_tokens -> end
    base = PolicyLossConfig(filter="entropy_target", filter_options=FILTER)
    controller = build_controller("entropy_target", CONTROL, base, steps=4)
    dropped, states = 0, []
    for row, seen in zip(rows, spy.steps, strict=True):
        stats, advantages, mask = seen["stats"], seen["advantages"], seen["mask"]
        config, control_metrics = controller.begin(seen["step"], stats, mask)
        keep, metrics = select_tokens(config, stats, advantages, mask)
        assert row["entropy_target/target"] == pytest.approx(config.filter_options["target"])
        assert torch.equal(row["narrowed"], keep & mask)  # both of verl's masks narrowed
        dropped += int((mask & ~keep).sum())
        monitor = {k: torch.tensor(v, dtype=torch.float64) for k, v in row.items()
                   if k.startswith("dynamics/")}  # fmt: skip
        assert "dynamics/delta_h_actual" in monitor
        controller.end({**control_metrics, **metrics, **monitor})
        states.append(dict(controller.state))
    assert trainer._entropy_dynamics_control.controller.state == controller.state
    assert actor_extra_info(trainer) == {}  # entropy_target leaves verl's entropy bonus alone
    assert dropped > 0 and controller.state["integral"] != 0 and controller.state["den"] > 0
    assert [r["entropy_target/target"] for r in rows] == pytest.approx([1.0, 0.95, 0.9, 0.85])
    saved = json.loads((tmp_path / "global_step_2" / STATE_FILE).read_text())
    assert saved["controller"] == states[1]  # after step 2's refit
    for key in ("entropy", *STAT_KEYS):  # the monitor's pass put verl's fields back
        assert tq.store[key].is_nested

    # resumed from global_step_2: fed the uninterrupted run's batches 3 and 4, it decides the same
    resumed, _, _, _ = _pipeline(engine, tmp_path / "resumed", NODE,
                                 resume_from=str(tmp_path / "global_step_2"))  # fmt: skip
    assert resumed.global_steps == 2
    settings = FilterSettings.from_config({"entropy_dynamics": NODE})
    for index in (2, 3):
        seen = spy.steps[index]
        resumed.global_steps = index + 1  # verl's loop counts from 1
        padded = {"old_log_probs": seen["stats"].logprobs, "ed_entropy": seen["stats"].entropy,
                  "ed_discriminator": seen["stats"].discriminator,
                  "ed_expected_discriminator": seen["stats"].expected_discriminator,
                  "advantages": seen["advantages"], "response_mask": seen["mask"]}  # fmt: skip
        keep, metrics = decide_step(resumed, settings, padded)
        assert float(metrics["entropy_target/target"]) == rows[index]["entropy_target/target"]
        assert torch.equal(keep, rows[index]["narrowed"])
        resumed._entropy_dynamics_control.finish(seen["after_entropy"])
        assert resumed._entropy_dynamics_control.controller.state == states[index]


def test_monitor_equals_a_float64_recomputation_from_logits(engine, tmp_path, monkeypatch):
    spy = _Spy(monkeypatch, engine)
    _, _, step, (prompts, prompt_mask, responses, response_mask) = _pipeline(
        engine, tmp_path, {"filter": "clip_b", "filter_options": {"mu": 0.5}, "monitor_every": 2}
    )
    rows = [step() for _ in range(2)]
    assert not any(k.startswith("dynamics/") for k in rows[0])  # every 2nd step only
    row, seen = rows[1], spy.steps[1]
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float64).eval()
    logits = {}
    for name in ("before", "after"):  # tied lm_head: it follows embed_tokens
        model.load_state_dict({k: v.double() for k, v in seen[name].items()}, strict=False)
        logits[name] = torch.zeros(B, C, model.config.vocab_size, dtype=torch.float64)
        for b in range(B):  # one unpadded sequence at a time
            ids = torch.cat([prompts[b][prompt_mask[b]], responses[b][response_mask[b]]])
            with torch.no_grad():
                z = model(ids.unsqueeze(0)).logits[0]  # (L, V)
            n_prompt, n = int(prompt_mask[b].sum()), int(response_mask[b].sum())
            logits[name][b, :n] = z[n_prompt - 1 : n_prompt - 1 + n]  # they predict the response
    mask = response_mask
    z0 = logits["before"]
    actual = (theory.entropy(logits["after"]) - theory.entropy(z0))[mask]
    deviation = theory.discriminator(z0, responses) - theory.expected_discriminator(z0)
    keep = seen["keep"][:, :C].double()
    predictor = (-keep * seen["advantages"][:, :C].double() * deviation)[mask]
    assert row["dynamics/delta_h_actual"] == pytest.approx(float(actual.mean()), abs=2e-6)
    assert abs(row["dynamics/delta_h_actual"]) > 1e-4  # the update moved the entropy
    correlation = torch.corrcoef(torch.stack([actual, predictor]))[0, 1]
    assert row["dynamics/thm33_correlation"] == pytest.approx(float(correlation), abs=1e-3)
    adv, dev = seen["advantages"][:, :C][mask], deviation[mask]
    for name, (a, d) in QUADRANTS.items():
        inside = (torch.sign(adv) == a) & (torch.sign(dev) == d)
        want = float((actual * inside).sum() / actual.numel())
        assert row[f"dynamics/quadrant/{name}"] == pytest.approx(want, abs=2e-6), name


def test_adaptive_entropy_sets_the_coefficient_verls_loss_uses(engine, tmp_path, monkeypatch):
    from verl.workers.utils.losses import ppo_loss

    seen = []

    def spy_loss(config, model_output, data, dp_group=None):
        seen.append(config.entropy_coeff)
        return ppo_loss(config, model_output, data, dp_group)

    workers = types.SimpleNamespace(ppo_loss=spy_loss)
    monkeypatch.delenv(LOSS_TIME_ENV, raising=False)
    patch_engine_workers(workers)  # what the plug-in does to verl.workers.engine_workers
    node = {"method": "adaptive_entropy", "control": {"target": 5.0, "delta": 0.01}}
    _, _, step, _ = _pipeline(engine, tmp_path, node, loss=workers.ppo_loss,
                              actor={"entropy_coeff": 0.05})  # fmt: skip
    rows = [step() for _ in range(3)]
    # TRL's order: the bonus of step t is the coefficient at the end of step t - 1 (none first),
    # starting from verl's entropy_coeff; H <= 5 nats throughout, so it grows by 0.01 a step
    assert [r["adaptive_entropy/coef"] for r in rows] == pytest.approx([0.0, 0.06, 0.07])
    per_step = len(seen) // 3
    assert [seen[i * per_step] for i in range(3)] == pytest.approx([0.0, 0.06, 0.07])
    assert all(r["narrowed"].sum() == rows[0]["narrowed"].sum() for r in rows)  # no filter
