"""entropy_target's controller and the dynamics monitor in TRL's ``GRPOTrainer``
(``integrations/trl/control.py``, issue 27), on CPU with the embedded model and Countdown:

- the plug-in's decisions equal our trainer's controller sequence (``begin`` → ``select_tokens``
  → ``end`` with the measured ΔH) replayed on the same batches: targets, integral state, ``κ``,
  keep-masks;
- a run resumed from ``checkpoint-2`` decides exactly as the uninterrupted run; the state file
  sits beside ``trainer_state.json``;
- the monitor's ΔH, quadrants and correlation equal a float64 recomputation from the model's
  logits before and after the step.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from test_trl_trainer import _example
from trl import TrlParser

from entropy_dynamics import theory
from entropy_dynamics.integrations.control_loop import STATE_FILE
from entropy_dynamics.integrations.trl import EntropyGRPOConfig
from entropy_dynamics.losses import PolicyLossConfig, select_tokens
from entropy_dynamics.methods import build_controller

ROOT = Path(__file__).resolve().parents[2]
CONTROL = {
    "target": 0.5, "schedule": "linear", "target_final": 0.3, "schedule_steps": 4,
    "smoothing": 0.3, "ki": 0.2, "integral_limit": 0.2,
}  # fmt: skip
FILTER = {"band": 0.02, "gain": 1.0, "max_share": 0.2, "step_scale": 0.5}




def _trainer(output_dir: Path, *flags: str):
    example = _example()
    parser = TrlParser((EntropyGRPOConfig, example.ScriptArguments))
    argv = ["--config", str(ROOT / "configs" / "trl" / "entropy_target.yaml")]
    argv += ["--output_dir", str(output_dir), "--num_prompts", "32"]
    argv += [
        "--entropy_control",
        json.dumps(CONTROL),
        "--entropy_filter_options",
        json.dumps(FILTER),
    ]
    argv += ["--per_device_train_batch_size", "4", "--num_generations", "4", "--max_steps", "4"]
    args, script = parser.parse_args_and_config(args=[*argv, *flags])
    return example.build_trainer(args, script)


class _Tape:
    """Records each generation batch's inputs to the controller and its decisions."""

    def __init__(self, trainer) -> None:
        self.batches: list[dict] = []
        control = trainer.control
        decide, finish = control.decide, control.finish

        def record_decide(output, stats, advantages, mask):
            keep, metrics = decide(output, stats, advantages, mask)
            engine = control.engine
            self.batches.append({
                "step": control.step(), "stats": stats, "advantages": advantages, "mask": mask,
                "keep": keep, "target": control.config.filter_options["target"],
                "state": copy.deepcopy(engine.controller.state), "monitor": None,
                "weights": _weights(trainer),
                "output": {k: output[k].clone() for k in ("prompt_ids", "prompt_mask",
                                                          "completion_ids", "completion_mask")},
            })  # fmt: skip
            return keep, metrics

        def record_finish():
            pending = control.engine is not None and control.engine.pending
            finish()
            if pending and not control.engine.pending:  # closed now: the monitor's values
                rows = trainer._metrics["train"]
                self.batches[-1]["monitor"] = {
                    k: v[-1] for k, v in rows.items() if "dynamics/" in k
                }
                self.batches[-1]["after_weights"] = _weights(trainer)
                self.batches[-1]["ended"] = copy.deepcopy(control.engine.controller.state)

        control.decide, control.finish = record_decide, record_finish


def _weights(trainer) -> dict[str, torch.Tensor]:
    model = trainer._causal_lm()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_decisions_equal_our_trainers_controller_on_the_same_batches(tmp_path):
    trainer = _trainer(tmp_path)
    tape = _Tape(trainer)
    trainer.train()
    assert [b["step"] for b in tape.batches] == [0, 1, 2, 3]  # one decision per optimizer step
    # our trainer's sequence (training/trainer.py, learn): begin -> select_tokens -> end
    base = PolicyLossConfig(filter="entropy_target", filter_options=FILTER)
    controller = build_controller("entropy_target", CONTROL, base, steps=4)
    dropped = 0
    for batch in tape.batches:
        config, control_metrics = controller.begin(batch["step"], batch["stats"], batch["mask"])
        keep, metrics = select_tokens(config, batch["stats"], batch["advantages"], batch["mask"])
        assert config.filter_options["target"] == batch["target"]
        assert torch.equal(keep, batch["keep"])
        assert controller.state == batch["state"]  # initial, smoothed, scale, num, den, integral
        dropped += int((batch["mask"] & ~keep).sum())
        measured = {k: torch.tensor(v, dtype=torch.float64) for k, v in batch["monitor"].items()}
        controller.end({**control_metrics, **metrics, **measured})
    assert controller.state == trainer.control.engine.controller.state
    assert dropped > 0 and controller.state["integral"] != 0.0
    assert controller.state["den"] > 0  # κ's fit read the monitor's measured ΔH
    assert [b["target"] for b in tape.batches] == pytest.approx([0.5, 0.45, 0.4, 0.35])


def test_a_resumed_run_decides_as_the_uninterrupted_one(tmp_path):
    save = ("--save_strategy", "steps", "--save_steps", "2")
    whole = _trainer(tmp_path / "whole", *save)
    whole_tape = _Tape(whole)
    whole.train()
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").exists()
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert saved["controller"] == whole_tape.batches[1]["ended"]  # after step 2's κ refit

    resumed = _trainer(tmp_path / "whole", *save)
    resumed_tape = _Tape(resumed)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert [b["step"] for b in resumed_tape.batches] == [2, 3]
    for got, want in zip(resumed_tape.batches, whole_tape.batches[2:], strict=True):
        assert got["target"] == want["target"]
        assert got["state"] == want["state"]
        assert torch.equal(got["keep"], want["keep"])
    assert resumed.control.engine.controller.state == whole.control.engine.controller.state


def test_monitor_equals_a_float64_recomputation_from_logits(tmp_path):
    trainer = _trainer(tmp_path, "--max_steps", "2")
    tape = _Tape(trainer)
    trainer.train()
    assert any(b["advantages"].any() for b in tape.batches)
    trained = trainer._causal_lm()
    model = type(trained)(trained.config).double().eval()  # a fresh one: TRL patched forward
    for batch in tape.batches:
        output = batch["output"]
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], 1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], 1)
        width, tokens = output["completion_ids"].shape[1], output["completion_ids"]
        logits = {}
        for name in ("weights", "after_weights"):
            model.load_state_dict({k: v.double() for k, v in batch[name].items()})
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=attention)
            logits[name] = out.logits[:, -width - 1 : -1]  # position P - 1 + t predicts t
        mask, temperature, z0 = batch["mask"], trainer.temperature, logits["weights"]
        h0 = theory.entropy(z0, temperature)
        h1 = theory.entropy(logits["after_weights"], temperature)
        deviation = theory.discriminator(z0, tokens, temperature)
        deviation = deviation - theory.expected_discriminator(z0, temperature)
        actual = (h1 - h0)[mask]
        predictor = (-batch["keep"].double() * batch["advantages"].double() * deviation)[mask]
        monitor = batch["monitor"]
        assert monitor["dynamics/delta_h_actual"] == pytest.approx(float(actual.mean()), abs=2e-6)
        correlation = torch.corrcoef(torch.stack([actual, predictor]))[0, 1]
        correlation = torch.nan_to_num(correlation, nan=0.0)  # all advantages 0: no predictor
        assert monitor["dynamics/thm33_correlation"] == pytest.approx(float(correlation), abs=1e-3)
        adv = batch["advantages"][mask]
        for name, (a, d) in {"pos_adv_pos_dev": (1, 1), "neg_adv_neg_dev": (-1, -1)}.items():
            inside = (torch.sign(adv) == a) & (torch.sign(deviation[mask]) == d)
            want = float((actual * inside).sum() / actual.numel())
            assert monitor[f"dynamics/quadrant/{name}"] == pytest.approx(want, abs=2e-6)
