"""Engine overhead, verl: the plug-in in verl's real FSDP2 engine over plain verl (CPU).

One GRPO update of verl's v1 trainer on the actor's side is the old-log-prob pass
(``infer_batch``, ``calculate_entropy`` as verl sets it) then ``train_batch`` with verl's
``ppo_loss`` (the rollout itself, which dominates a real step, is left out: it is the same with
and without the plug-in). Variants, interleaved (order rotated each round), on the same batch
and weights (learning rate 0: the optimizer still steps, the weights never move):

- ``plain``: verl alone;
- ``clip_b`` / ``clip_v``: the plug-in's path — the statistics added to the old-log-prob pass
  (``calculate_ed_stats``), the keep-mask on the whole batch (``decide_keep``), ``response_mask``
  and ``loss_mask`` narrowed, then the same ``train_batch``;
- ``loss_time_clip_b``: the legacy-trainer fallback — plain old-log-prob pass, ``train_batch``
  with :func:`loss_time_ppo_loss` (the statistics computed in the training forward).

Figures: ``step_time_ratio`` (old-log-prob pass + train_batch, variant over plain),
``infer_ratio`` and ``train_ratio`` separately — medians over rounds of per-round ratios of
median times. The embedded model (V = 258, d = 128) is tiny, so per-call fixed costs weigh more
than on a real model, where the statistics' pass over the logits is small next to the decoder.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))  # the test-only CPU platform
VARIANTS = ("plain", "clip_b", "clip_v", "loss_time_clip_b")
OPTIONS = {"clip_b": {"mu": 2.5}, "clip_v": {"mu": 8.5, "max_frac": 1e-4}}


def _batch(batch_size: int, prompt: int, response: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    prompt_mask = torch.arange(prompt) >= torch.randint(
        0, prompt // 2, (batch_size, 1), generator=gen
    )
    lengths = torch.randint(response // 2, response + 1, (batch_size, 1), generator=gen)
    response_mask = torch.arange(response) < lengths
    prompts = torch.randint(2, 40, (batch_size, prompt), generator=gen) * prompt_mask
    responses = torch.randint(2, 40, (batch_size, response), generator=gen) * response_mask
    advantages = torch.randn(batch_size, 1, generator=gen) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages


def _step(engine, tensors, variant: str, config, micro: int) -> tuple[float, float]:
    """(old-log-prob pass s, train_batch s) of one update in ``variant``."""
    import torch
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding
    from verl_cpu import flags, padded_batch

    from entropy_dynamics.integrations.verl import (
        STAT_KEYS,
        STATS_FLAG,
        FilterSettings,
        decide_keep,
        loss_time_ppo_loss,
    )

    prompts, prompt_mask, responses, response_mask, advantages = tensors
    batch_size, width = response_mask.shape
    rollout = padded_batch(
        prompts, prompt_mask, responses, response_mask, advantages, torch.zeros(batch_size, width)
    )
    flags(rollout, micro_batch_size_per_gpu=micro, calculate_entropy=True)
    start = time.perf_counter()
    if variant in OPTIONS:
        tu.assign_non_tensor(rollout, **{STATS_FLAG: True})
    with engine.eval_mode():
        output = engine.infer_batch(rollout, loss_function=None)["model_output"]
    padded = {k: no_padding_2_padding(v, rollout) for k, v in output.items()}
    train = padded_batch(
        prompts, prompt_mask, responses, response_mask, advantages, padded["log_probs"]
    )
    flags(train, micro_batch_size_per_gpu=micro)
    if variant in OPTIONS:
        stats = {
            "old_log_probs": padded["log_probs"],
            **{k: padded[k] for k in STAT_KEYS},
            "advantages": advantages.float(),
            "response_mask": response_mask,
        }
        keep, _ = decide_keep(FilterSettings(variant, OPTIONS[variant]).loss_config(), stats)
        train["response_mask"] = keep.long()
        train["loss_mask"] = keep.long()
    infer = time.perf_counter() - start
    loss = partial(ppo_loss, config=config)
    if variant == "loss_time_clip_b":
        loss = partial(
            loss_time_ppo_loss, config=config, settings=FilterSettings("clip_b", OPTIONS["clip_b"])
        )
    start = time.perf_counter()
    with engine.train_mode():
        engine.train_batch(train, loss_function=loss)
    return infer, time.perf_counter() - start


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="verl")
    parser.add_argument("--steps", type=int, default=5, help="timed updates per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--batch", type=int, default=32, help="sequences per update")
    parser.add_argument("--prompt", type=int, default=16, help="padded prompt width")
    parser.add_argument("--response", type=int, default=64, help="padded response width")
    parser.add_argument("--suite", choices=["filters", "control"], default="filters")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    name = "engine_overhead_verl" if args.suite == "filters" else "engine_overhead_control_verl"
    args.output = args.output or ROOT / f"benchmarks/results/{name}.json"
    import torch
    import verl
    from _measure import machine_info
    from verl_cpu import actor_config, build_engine

    torch.set_num_threads(args.threads)
    micro = 8
    engine = build_engine(lr=0.0, micro_batch=micro)
    config = actor_config(args.batch, micro)
    tensors = _batch(args.batch, args.prompt, args.response)
    if args.suite == "control":
        results = control_main(args, engine, config, tensors, micro)
        result = {
            "benchmark": "engine_overhead_control",
            "engine": "verl",
            "versions": {"verl": verl.__version__, "torch": torch.__version__},
            "machine": {**machine_info(), "note": "2 cores shared with a background study: read "
                        "the shares and ratios, not the absolute times"},
            "settings": {"batch": args.batch, "prompt": args.prompt, "response": args.response,
                         "micro_batch": micro, "steps": args.steps, "rounds": args.rounds,
                         "control": CONTROL, "learning_rate": 0.0},
            "targets": "controller_share <= 0.03; monitor every 10 steps <= 0.05",
            "results": results,
        }  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in results.items() if k != "raw"}, indent=1))
        return
    for variant in VARIANTS:  # warm-up
        _step(engine, tensors, variant, config, micro)
    rounds = []
    for index in range(args.rounds):
        order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
        times = {
            v: [_step(engine, tensors, v, config, micro) for _ in range(args.steps)] for v in order
        }
        rounds.append(
            {
                v: {"infer": [t[0] for t in ts], "train": [t[1] for t in ts]}
                for v, ts in times.items()
            }
        )
        plain = statistics.median(sum(t) for t in times["plain"])
        print(f"round {index}: plain median update {plain:.3f} s", flush=True)

    def ratio(variant: str, part: str) -> float:
        def median(r, v):
            if part == "step":
                return statistics.median(
                    a + b for a, b in zip(r[v]["infer"], r[v]["train"], strict=True)
                )
            return statistics.median(r[v][part])

        return statistics.median(median(r, variant) / median(r, "plain") for r in rounds)

    results = {
        v: {
            "step_time_ratio": ratio(v, "step"),
            "infer_ratio": ratio(v, "infer"),
            "train_ratio": ratio(v, "train"),
        }
        for v in VARIANTS
        if v != "plain"
    }
    result = {
        "benchmark": "engine_overhead",
        "engine": "verl",
        "versions": {"verl": verl.__version__, "torch": torch.__version__},
        "machine": machine_info(),
        "settings": {
            "model": "embedded countdown-tiny (V 258, d 128, 4 layers)",
            "engine": "FSDPEngineWithLMHead, fsdp2, one gloo process, float32, rmpad",
            "batch": args.batch,
            "prompt": args.prompt,
            "response": args.response,
            "micro_batch": micro,
            "steps": args.steps,
            "rounds": args.rounds,
            "filter_options": OPTIONS,
            "learning_rate": 0.0,
        },
        "target": "step_time_ratio <= 1.05 for clip_b and clip_v",
        "results": results,
        "raw": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(results, indent=1))


# ---------------------------------------------------------------------------------------------
# --suite control: entropy_target's controller and the dynamics monitor on the driver (issue 27)
# ---------------------------------------------------------------------------------------------

CONTROL_VARIANTS = ("clip_b", "controller", "controller_monitor10")
CONTROL = {"ki": 0.1}


def _control_step(engine, tensors, variant, config, micro, index, control) -> dict[str, float]:
    """Seconds of one update in ``variant``: ``step`` (old-log-prob pass with the statistics,
    the decision, ``train_batch`` and, on a monitored step, the monitor's pass), ``decide`` (the
    keep-mask: the controller and the filter) and ``monitor``."""
    import torch
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding
    from verl_cpu import flags, padded_batch

    from entropy_dynamics.integrations.verl import (
        STAT_KEYS,
        STATS_FLAG,
        FilterSettings,
        decide_keep,
    )
    from entropy_dynamics.integrations.verl.filtering import batch_stats

    prompts, prompt_mask, responses, response_mask, advantages = tensors
    batch_size, width = response_mask.shape

    def stats_pass():
        rollout = padded_batch(prompts, prompt_mask, responses, response_mask, advantages,
                               torch.zeros(batch_size, width))  # fmt: skip
        flags(rollout, micro_batch_size_per_gpu=micro, calculate_entropy=True)
        tu.assign_non_tensor(rollout, **{STATS_FLAG: True})
        with engine.eval_mode():
            output = engine.infer_batch(rollout, loss_function=None)["model_output"]
        return {k: no_padding_2_padding(v, rollout) for k, v in output.items()}

    times = {"decide": 0.0, "monitor": 0.0}
    start = time.perf_counter()
    padded = stats_pass()
    batch = {"old_log_probs": padded["log_probs"], **{k: padded[k] for k in STAT_KEYS},
             "advantages": advantages.float(), "response_mask": response_mask}  # fmt: skip
    tick = time.perf_counter()
    if variant == "clip_b":
        keep, _ = decide_keep(FilterSettings("clip_b", OPTIONS["clip_b"]).loss_config(), batch)
    else:
        stats, adv, mask = batch_stats(batch)
        _, keep, _ = control.decide(index, stats, adv, mask)
        keep = keep & mask
    times["decide"] = time.perf_counter() - tick
    train = padded_batch(prompts, prompt_mask, responses, response_mask, advantages,
                         padded["log_probs"])  # fmt: skip
    flags(train, micro_batch_size_per_gpu=micro)
    train["response_mask"] = train["loss_mask"] = keep.long()
    with engine.train_mode():
        engine.train_batch(train, loss_function=partial(ppo_loss, config=config))
    if variant != "clip_b":
        tick = time.perf_counter()
        after = stats_pass()["ed_entropy"] if control.pending_monitor else None
        control.finish(after)
        times["monitor"] = time.perf_counter() - tick
    times["step"] = time.perf_counter() - start
    return times


def control_main(args, engine, config, tensors, micro) -> dict:
    from entropy_dynamics.integrations.control_loop import EngineControl
    from entropy_dynamics.losses import PolicyLossConfig

    base = PolicyLossConfig(filter="entropy_target")
    total = args.steps * args.rounds + 1
    controls = {
        "controller": EngineControl("entropy_target", CONTROL, base, total),
        "controller_monitor10": EngineControl("entropy_target", CONTROL, base, total, 10),
        "clip_b": None,
    }
    counters = dict.fromkeys(CONTROL_VARIANTS, 0)

    def step(variant):
        out = _control_step(engine, tensors, variant, config, micro, counters[variant],
                             controls[variant])  # fmt: skip
        counters[variant] += 1
        return out

    for variant in CONTROL_VARIANTS:  # warm-up
        step(variant)
    rounds = []
    for index in range(args.rounds):
        shift = index % len(CONTROL_VARIANTS)
        order = CONTROL_VARIANTS[shift:] + CONTROL_VARIANTS[:shift]
        rounds.append({v: [step(v) for _ in range(args.steps)] for v in order})
        print(f"round {index} done", flush=True)

    def share(variant, part):
        return statistics.median(
            sum(t[part] for t in r[variant]) / sum(t["step"] for t in r[variant]) for r in rounds
        )

    def mean_ratio(variant, base_variant):
        return statistics.median(
            statistics.fmean(t["step"] for t in r[variant])
            / statistics.fmean(t["step"] for t in r[base_variant])
            for r in rounds
        )

    return {
        "controller_share": share("controller", "decide"),
        "monitor_share": share("controller_monitor10", "monitor"),
        "monitor_step_time_ratio": mean_ratio("controller_monitor10", "controller"),
        "controller_vs_clip_b_step_time_ratio": mean_ratio("controller", "clip_b"),
        "note": "controller_share counts the whole decision (controller + entropy_target filter); "
        "monitor every 10 steps: one more old-log-prob pass with the statistics",
        "raw": rounds,
    }
