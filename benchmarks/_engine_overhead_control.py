"""Engine overhead, closed-loop control (issue 27): ``entropy_target``'s controller and the dynamics
monitor in TRL's ``GRPOTrainer`` (CPU, the embedded model, ``configs/trl/entropy_target.yaml``).

Variants, interleaved (order rotated each round), same seed and data, learning rate 0 by default
(every variant samples the same completions):

- ``clip_b``: a filter without a controller (the plug-in's path, for scale);
- ``controller``: ``entropy_target`` with its controller (``ki``, the integral term), no monitor;
- ``controller_monitor10``: the same with ``entropy_dynamics_monitor_every=10``.

Figures, medians over rounds:

- ``controller_share``: time in the controller's ``begin`` + ``end`` over the step time (the
  controller itself; target ≤ 3 %), and ``decide_share``: the whole decision
  (``EngineControl.decide``: the controller and the entropy_target filter) over the step time;
- ``monitor_share``: time in the monitor (its no-grad pass and metrics, every 10th step) over the
  step time, and ``monitor_step_time_ratio``: median-free mean step time with the monitor over
  without (target ≤ 5 %; a mean, since the monitor runs on one step in ten).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "clip_b": ("clip_b", {"mu": 2.5}, 0),
    "controller": ("entropy_target", {}, 0),
    "controller_monitor10": ("entropy_target", {}, 10),
}
CONTROL = {"ki": 0.1}
WARM_UP = 2


def _add_time(sink: dict, key: str, obj, name: str) -> None:
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sink[key] = sink.get(key, 0.0) + time.perf_counter() - start

    setattr(obj, name, wrapper)


def run(example, variant: str, steps: int, out_dir: Path, learning_rate: float) -> dict:
    from trl import TrlParser

    from entropy_dynamics.integrations.control_loop import EngineControl
    from entropy_dynamics.integrations.trl import EntropyGRPOConfig

    name, options, every = VARIANTS[variant]
    parser = TrlParser((EntropyGRPOConfig, example.ScriptArguments))
    argv = ["--config", str(ROOT / "configs/trl/entropy_target.yaml"), "--output_dir", str(out_dir)]
    argv += ["--max_steps", str(steps + WARM_UP), "--entropy_filter", name, "--seed", "0"]
    argv += ["--entropy_filter_options", json.dumps(options)]
    argv += ["--entropy_control", json.dumps(CONTROL if name == "entropy_target" else {})]
    argv += ["--entropy_dynamics_monitor_every", str(every), "--learning_rate", str(learning_rate)]
    args, script = parser.parse_args_and_config(args=argv)
    trainer = example.build_trainer(args, script)
    step_times: list[float] = []
    phases: list[dict] = []
    current: dict = {}
    original_decide, original_finish = EngineControl.decide, EngineControl.finish

    def decide(control, *a, **k):  # the controller's begin/end timed inside, once per engine
        if not getattr(control, "_timed", False):
            _add_time(current, "controller", control.controller, "begin")
            _add_time(current, "controller", control.controller, "end")
            control._timed = True
        start = time.perf_counter()
        try:
            return original_decide(control, *a, **k)
        finally:
            current["decide"] = current.get("decide", 0.0) + time.perf_counter() - start

    EngineControl.decide = decide
    _add_time(current, "finish", trainer.control, "finish")
    inner_step = trainer.training_step
    window = args.gradient_accumulation_steps
    micro = []

    def training_step(*a, **k):
        start = time.perf_counter()
        out = inner_step(*a, **k)
        micro.append(time.perf_counter() - start)
        return out

    trainer.training_step = training_step

    from transformers import TrainerCallback

    class StepClock(TrainerCallback):  # TRL's micro-steps plus what runs after the optimizer step
        def on_step_end(self, args, state, control, **kwargs):
            phases.append(dict(current))
            step_times.append(sum(micro[-window:]) + current.get("finish", 0.0))
            current.clear()

    clock = StepClock()
    trainer.add_callback(clock)  # after FinishBatch: the monitor's time is in this step
    try:
        trainer.train()
    finally:
        EngineControl.decide, EngineControl.finish = original_decide, original_finish
    timed = slice(WARM_UP, None)
    return {"step_wall": step_times[timed], "phases": phases[timed]}


def summarise(rounds: list[dict]) -> dict:
    med = statistics.median
    out: dict = {"per_variant": {}, "figures": {}}
    for variant in VARIANTS:
        runs = [r[variant] for r in rounds]
        out["per_variant"][variant] = {
            "median_step_wall_s": med([med(r["step_wall"]) for r in runs]),
            "mean_step_wall_s": med([statistics.fmean(r["step_wall"]) for r in runs]),
        }

    def share(variant: str, key: str) -> float:
        return med([
            sum(p.get(key, 0.0) for p in r[variant]["phases"]) / sum(r[variant]["step_wall"])
            for r in rounds
        ])  # fmt: skip

    monitor_ratio = [
        statistics.fmean(r["controller_monitor10"]["step_wall"])
        / statistics.fmean(r["controller"]["step_wall"])
        for r in rounds
    ]
    out["figures"] = {
        "controller_share": share("controller", "controller"),
        "decide_share": share("controller", "decide"),
        "monitor_share": share("controller_monitor10", "finish"),
        "monitor_step_time_ratio": med(monitor_ratio),
        "monitor_step_time_ratio_per_round": monitor_ratio,
        "controller_vs_clip_b_step_time_ratio": med(
            [med(r["controller"]["step_wall"]) / med(r["clip_b"]["step_wall"]) for r in rounds]
        ),
    }
    return out


def main(example, steps: int, rounds_count: int, learning_rate: float, output: Path) -> dict:
    import torch
    import trl
    from _measure import machine_info

    rounds = []
    order = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(rounds_count):
            rotated = order[index % len(order) :] + order[: index % len(order)]
            results = {}
            for variant in rotated:
                results[variant] = run(
                    example, variant, steps, Path(tmp) / f"{index}-{variant}", learning_rate
                )
                median = statistics.median(results[variant]["step_wall"])
                print(f"round {index}: {variant} median step {median:.3f} s", flush=True)
            rounds.append(results)
    result = {
        "benchmark": "engine_overhead_control",
        "engine": "trl",
        "versions": {"trl": trl.__version__, "torch": torch.__version__},
        "machine": {
            **machine_info(),
            "note": "2 cores shared with a background study: read the shares and ratios, not the "
            "absolute times",
        },
        "settings": {
            "config": "configs/trl/entropy_target.yaml",
            "control": CONTROL,
            "steps": steps,
            "rounds": rounds_count,
            "learning_rate": learning_rate,
        },
        "targets": "controller_share <= 0.03; monitor every 10 steps: monitor_share <= 0.05",
        "results": summarise(rounds),
        "raw": rounds,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["results"], indent=1))
    return result
