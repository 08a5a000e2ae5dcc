"""Engine overhead: TRL's GRPOTrainer with the plug-in (none, clip_b, clip_v) over plain TRL.

Same embedded model, Countdown prompts, seed and settings (``configs/trl/clip_b.yaml``: 8
completions per prompt, 8 per device and micro-step, 2 accumulation steps, 24 new tokens), CPU.
Runs are interleaved (plain, none, clip_b, clip_v, order rotated each round), each ``--steps``
optimizer steps after two untimed warm-up steps. Per optimizer step the wall and process-CPU time
of TRL's ``training_step`` (generation, scoring, the plug-in's pass, loss, backward) are summed
over the accumulation window, and the plug-in's own work (``rollout_stats`` + ``apply_filter``)
is timed inside the same steps. One torch thread by default: on a shared machine (2 cores,
other jobs) a second spinning thread makes wall and CPU times swing by 10x between identical steps.

Two settings (``SETTINGS``): ``aligned``, where TRL makes no old-log-prob pass and the plug-in
takes the hidden states recorded during TRL's own ``generate`` (before: one extra no-grad pass
over the generation batch, still the fallback), and ``trl_old_pass``, where TRL makes that pass
itself (always with vLLM) and the plug-in reuses it. Each run records which source the plug-in's
statistics came from (``stats_sources``). Two overhead figures each, both medians over rounds of
per-round ratios:

- ``step_time_ratio``: median step time with the plug-in over plain TRL's. By default the
  learning rate is 0 (``--learning-rate``), so the weights never move and every variant samples
  the same completions: the ratio is the plug-in's cost alone, filters included. With a learning
  rate the filtered runs sample other completions after their first update and the ratio also
  carries that difference (``per_token_ratio`` normalises by tokens);
- ``plugin_share``: the plug-in's own time over the step time, measured in the same steps.

``clip_b_extra_pass`` is ``clip_b`` with the generation-time route switched off, the fallback
(and the plug-in before it) as a baseline in the same run; in ``trl_old_pass`` it is ``clip_b``
(TRL's own pass comes first).

    python benchmarks/engine_overhead.py --steps 10 --rounds 3   # needs the trl extra

``--suite control`` measures ``entropy_target``'s controller and the dynamics monitor instead
(:mod:`_engine_overhead_control`; result ``engine_overhead_control_trl.json``)::

    python benchmarks/engine_overhead.py --suite control --steps 20 --rounds 3

``--engine verl`` measures the verl plug-in in verl's FSDP2 engine instead
(:mod:`_engine_overhead_verl`; needs the verl extra, e.g. ``.venvs/verl/bin/python``)::

    .venvs/verl/bin/python benchmarks/engine_overhead.py --engine verl --steps 5 --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "plain": None,
    "none": "none",
    "clip_b": "clip_b",
    "clip_v": "clip_v",
    "clip_b_extra_pass": "clip_b",  # the generation-time route off: the extra-pass fallback
}
WARM_UP = 2  # untimed optimizer steps at the start of each run (one generation in either setting)
OPTIONS = {"none": {}, "clip_b": {"mu": 2.5}, "clip_v": {"mu": 8.5, "max_frac": 1e-4}}


def _example():
    spec = importlib.util.spec_from_file_location("trl_grpo_example", ROOT / "examples/trl_grpo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _timed(obj, name: str, sink: list[tuple[float, float]]) -> None:
    """Replace ``obj.name`` by a wrapper appending ``(wall s, process-CPU s)`` of each call."""
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = inner(*args, **kwargs)
        sink.append((time.perf_counter() - wall, time.process_time() - cpu))
        return out

    setattr(obj, name, wrapper)


class _PluginClock:
    """Wall seconds of the plug-in's own work per generation batch: its statistics from the
    hidden states recorded during ``generate`` (``generation_stats``), its own pass
    (``rollout_stats``) or, when it reuses TRL's pass, its statistics in the hook
    (``head_stats``), plus ``apply_filter``. (The hook's copies of one hidden row per decode
    step, inside ``generate``, are not counted here; the step-time ratio carries them.)"""

    def __init__(self, trainer) -> None:
        self.per_generation: list[float] = []
        self.depth = 0
        for name in ("generation_stats", "rollout_stats", "head_stats", "apply_filter"):
            self._wrap(trainer, name)

    def _wrap(self, trainer, name: str) -> None:
        inner = getattr(trainer, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            self.depth += 1
            try:
                return inner(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:  # head_stats inside the others is counted once
                    self.per_generation[-1] += time.perf_counter() - start

        setattr(trainer, name, wrapper)


SETTINGS = {
    # TRL makes no old-log-prob pass (generation aligned with the optimizer step): the plug-in
    # takes the hidden states recorded during TRL's generate (fallback: one extra no-grad pass)
    "aligned": [],
    # TRL recomputes old log-probs itself (as always with vLLM, or num_iterations > 1, or here a
    # generation batch spanning 2 optimizer steps): the plug-in reuses that pass
    "trl_old_pass": ["--steps_per_generation", "4"],
}


def run(
    example, variant: str, setting: str, steps: int, out_dir: Path, learning_rate: float
) -> dict[str, list[float]]:
    from trl import GRPOTrainer, TrlParser

    from entropy_dynamics.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer

    filter_name = VARIANTS[variant] or "none"
    parser = TrlParser((EntropyGRPOConfig, example.ScriptArguments))
    argv = ["--config", str(ROOT / "configs/trl/clip_b.yaml"), "--output_dir", str(out_dir)]
    argv += ["--max_steps", str(steps + WARM_UP), "--entropy_filter", filter_name, "--seed", "0"]
    argv += ["--entropy_filter_options", json.dumps(OPTIONS.get(filter_name, {}))]
    argv += ["--learning_rate", str(learning_rate), *SETTINGS[setting]]
    args, script = parser.parse_args_and_config(args=argv)
    trainer_class = GRPOTrainer if VARIANTS[variant] is None else EntropyGRPOTrainer
    trainer = example.build_trainer(args, script, trainer_class)
    if variant == "clip_b_extra_pass":
        trainer._generation_route = lambda: False
    micro, tokens, sources = [], [], []
    _timed(trainer, "training_step", micro)
    clock = _PluginClock(trainer) if trainer_class is EntropyGRPOTrainer else None
    generate = trainer._generate_and_score_completions

    def count(inputs):
        if clock is not None:
            clock.per_generation.append(0.0)
        output = generate(inputs)
        tokens.append(float(output["completion_mask"].sum()))
        sources.append(getattr(trainer, "stats_source", None) or "plain")
        return output

    trainer._generate_and_score_completions = count
    trainer.train()
    window = args.gradient_accumulation_steps  # micro-steps per optimizer step
    step_wall = [sum(w for w, _ in micro[i : i + window]) for i in range(0, len(micro), window)]
    step_cpu = [sum(c for _, c in micro[i : i + window]) for i in range(0, len(micro), window)]
    warm_gens = round(WARM_UP * len(tokens) / len(step_wall))  # the warm-up steps' generations
    return {
        "step_wall": step_wall[WARM_UP:],
        "step_cpu": step_cpu[WARM_UP:],
        "tokens": tokens[warm_gens:],
        "plugin_wall": clock.per_generation[warm_gens:] if clock else [],
        "stats_sources": sorted(set(sources)),
    }


def summarise(rounds: list[dict[str, dict[str, list[float]]]]) -> dict:
    return {
        setting: _summarise({v: [r[f"{setting}/{v}"] for r in rounds] for v in VARIANTS})
        for setting in SETTINGS
    }


def _summarise(runs_of: dict[str, list[dict[str, list[float]]]]) -> dict:
    """Medians per variant and ratios against plain TRL; ``runs_of[variant][round]``."""
    med = statistics.median
    out: dict = {"per_variant": {}, "ratios_vs_plain": {}}
    rounds = [{v: runs_of[v][i] for v in runs_of} for i in range(len(runs_of["plain"]))]
    for variant in VARIANTS:
        runs = runs_of[variant]
        out["per_variant"][variant] = {
            "median_step_wall_s": med([med(r["step_wall"]) for r in runs]),
            "median_step_cpu_s": med([med(r["step_cpu"]) for r in runs]),
            "median_tokens_per_generation": med([med(r["tokens"]) for r in runs]),
            "stats_sources": sorted({s for r in runs for s in r.get("stats_sources", [])}),
        }
    for variant in VARIANTS:
        if variant == "plain":
            continue
        wall, cpu, per_token, share = [], [], [], []
        for r in rounds:
            mine, base = r[variant], r["plain"]
            wall.append(med(mine["step_wall"]) / med(base["step_wall"]))
            cpu.append(med(mine["step_cpu"]) / med(base["step_cpu"]))
            per_token.append(
                (sum(mine["step_wall"]) / sum(mine["tokens"]))
                / (sum(base["step_wall"]) / sum(base["tokens"]))
            )
            share.append(sum(mine["plugin_wall"]) / sum(mine["step_wall"]))
        out["ratios_vs_plain"][variant] = {
            "step_time_ratio": med(wall),
            "step_cpu_ratio": med(cpu),
            "per_token_ratio": med(per_token),
            "plugin_share": med(share),
            "step_time_ratio_per_round": wall,
        }
    return out


def main() -> None:
    if "--engine" in sys.argv and sys.argv[sys.argv.index("--engine") + 1] == "verl":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _engine_overhead_verl import main as verl_main

        verl_main(sys.argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["trl", "verl"], default="trl")
    parser.add_argument(
        "--suite",
        choices=["filters", "control"],
        default="filters",
        help="filters: the plug-in's filters over plain TRL; control: entropy_target's "
        "controller and the dynamics monitor",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared, loaded machine spinning threads inflate times)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.0,
        help="0 (default): the weights never move, so every variant samples the same completions "
        "and the step-time ratio is the plug-in's cost alone (TRL still runs its whole step: "
        "forward, loss, backward, optimizer); the config's 1e-4 lets trajectories part",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.suite == "control":
        import torch
        from _engine_overhead_control import main as control_main

        torch.set_num_threads(args.threads)
        output = args.output or ROOT / "benchmarks/results/engine_overhead_control_trl.json"
        control_main(_example(), args.steps, args.rounds, args.learning_rate, output)
        return
    args.output = args.output or ROOT / "benchmarks/results/engine_overhead_trl.json"
    import torch
    import trl
    from _measure import machine_info

    torch.set_num_threads(args.threads)
    example = _example()
    rounds = []
    order = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            rotated = order[index % len(order) :] + order[: index % len(order)]
            results = {}
            for variant in rotated:
                for setting in SETTINGS:
                    key = f"{setting}/{variant}"
                    results[key] = run(
                        example, variant, setting, args.steps, Path(tmp) / key, args.learning_rate
                    )
                    median = statistics.median(results[key]["step_wall"])
                    print(f"round {index}: {key} median step {median:.3f} s", flush=True)
            rounds.append(results)
    result = {
        "benchmark": "engine_overhead",
        "engine": "trl",
        "versions": {"trl": trl.__version__, "torch": torch.__version__},
        "machine": {
            **machine_info(),
            "note": "2-core machine; process-CPU ratios and medians over interleaved rounds are "
            "the robust figures",
        },
        "settings": {
            "config": "configs/trl/clip_b.yaml",
            "steps": args.steps,
            "rounds": args.rounds,
            "learning_rate": args.learning_rate,
            "filter_options": OPTIONS,
            "settings": SETTINGS,
        },
        "target": "step_time_ratio <= 1.05 for clip_b and clip_v",
        "results": summarise(rounds),
        "raw": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["results"], indent=1))


if __name__ == "__main__":
    main()
