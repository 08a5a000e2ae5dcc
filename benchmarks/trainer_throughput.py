"""Trainer throughput: ours vs TRL's GRPOTrainer, and Clip_B / Clip_V overhead over plain GRPO.

Tokens/s: same embedded model, Countdown task, prompts per step, group size, response length and
learning rate for both trainers; no KL term, one optimizer step per rollout batch, CPU. Tokens/s
counts response tokens (sampled and trained on) per second of wall time over the timed steps,
after one untimed warm-up step.

Filter overhead: different methods sample different rollouts after their first update, so their
step times differ by the data, not by the filter. The overhead is therefore measured on identical
data: one fixed rollout batch, learned from (rewards, statistics, filter, update) starting from
the same weights and optimizer state each time, methods interleaved, ``--repeats`` times; the
overhead is the difference of the median learn times over the median full step (rollout + learn)
of plain GRPO. Writes JSON (default ``benchmarks/results/trainer_throughput.json``).

Where a step goes (``phases_s``, median seconds per step, exclusive: a phase entered inside
another pauses it): ours — rollout, rewards, statistics (the teacher-forced pass when the update
is not on-policy), forward + loss, backward, optimizer (clip + AdamW), dynamics; TRL — rollout +
rewards (its ``_generate_and_score_completions``), forward + loss (``compute_loss``), backward,
optimizer. ``other`` is the rest of the step.

Fused loss (issue 16): the learn time with the fused policy loss (the default on the fused
statistics path) over the unfused one (statistics + registered loss, the path before), measured
the same way: one fixed rollout, both variants interleaved from the same weights.

    python benchmarks/trainer_throughput.py --steps 10 --prompts 16 --group 8 --repeats 15
    python benchmarks/trainer_throughput.py --steps 30 --rounds 5 --parts throughput
    python benchmarks/trainer_throughput.py --parts fused_loss --output OUT.json
    python benchmarks/trainer_throughput.py --task countdown_search --parts throughput --skip-trl

``--rounds N`` measures the throughput part N times, ours then TRL's each round; the ratio is
the median of the rounds' ratios (``ratios.ours_vs_trl_tokens_per_s``, with its range): a shared
machine's speed drifts by ±10 % over minutes, which moves both trainers of one round alike.

``--task`` takes a task with its settings (``train --task``): ``countdown_search`` samples search
traces from its embedded model up to its 512-token cap. ``peak_rss_mb`` is the process's peak
resident memory after the part (it only grows: read it per part, in the order run).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _interleaved import interleaved_learn_times
from _phases import Phases

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.losses import select_tokens
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.step_metrics import reward_metrics
from entropy_dynamics.training.trainer import Trainer

METHODS = ("grpo", "clip_b", "clip_v")
PARTS = ("overhead", "throughput", "fused_loss")


def _config(method: str, args: argparse.Namespace):
    return load_config(
        None,
        [
            f"algorithm.method={method}",
            f"steps={args.steps + 1}",
            f"seed={args.seed}",
            f"rollout.prompts_per_step={args.prompts}",
            f"rollout.group_size={args.group}",
            f"optim.lr={args.lr}",
            "eval.every=0",
            f"dynamics={str(args.dynamics).lower()}",
            "tensorboard=false",
            f"checkpoint_every={10**6}",
            f"rollout.max_new_tokens={args.max_new_tokens}",  # main(): the task's unless given
            *args.set,
        ],
        task=args.task,
    )


def _optimizer_phases() -> list[tuple[object, str, str]]:
    return [
        (torch.Tensor, "backward", "backward"),
        (torch.optim.AdamW, "step", "optimizer"),
        (torch.nn.utils, "clip_grad_norm_", "optimizer"),
    ]


def _ours(method: str, args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    from entropy_dynamics.training import trainer as trainer_module

    trainer = Trainer(_config(method, args), run_dir)
    trainer.train_step()  # warm-up, untimed
    phases = Phases()
    targets = [
        (trainer, "rollout", "rollout"),
        (trainer_module, "reward_metrics", "rewards"),
        (trainer, "_rollout_policy", "statistics"),
        (trainer_module, "accumulate_gradients", "forward + loss"),
        (trainer_module, "dynamics_metrics", "dynamics"),
        *_optimizer_phases(),
    ]
    tokens, update_time, start = 0.0, 0.0, time.perf_counter()
    with phases.patched(targets):
        for _ in range(args.steps):
            phases.begin_step()
            metrics = trainer.train_step()
            phases.end_step()
            tokens += metrics["perf/tokens_per_s"] * metrics["perf/step_time"]
            update_time += metrics["perf/step_time"] - metrics["perf/rollout_time"]
    elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": tokens / elapsed,
        "step_time_s": elapsed / args.steps,
        "update_time_s": update_time / args.steps,
        "response_tokens": tokens,
        "statistics_from_sampling": metrics["stats/from_sampling"],
        "phases_s": phases.medians(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if platform.system() == "Darwin" else 2**10)


def _filter_overhead(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    trainer = Trainer(_config("grpo", args), run_dir)
    losses = {m: _config(m, args).algorithm.policy_loss() for m in METHODS}
    problems = [trainer.train_problems[i] for i in trainer.cursor.take(args.prompts)]

    def use(method: str):
        def switch() -> None:
            trainer.loss_config = losses[method]

        return switch

    variants = {method: use(method) for method in METHODS}
    rollout_times, learn_times, rollout = interleaved_learn_times(
        trainer, problems, variants, args.repeats, args.seed
    )
    rollout_s = statistics.median(rollout_times)
    learn_s = {m: statistics.median(t) for m, t in learn_times.items()}
    step_s = rollout_s + learn_s["grpo"]
    filter_s = _filter_times(trainer, problems, rollout, losses, args.repeats * 20)
    return {
        "rollout_s": rollout_s,
        "learn_s": learn_s,
        "learn_s_all": learn_times,
        "filter_s": filter_s,
        "response_tokens": float(rollout.response_mask.sum()),
        "step_overhead": {m: (learn_s[m] - learn_s["grpo"]) / step_s for m in METHODS[1:]},
        "learn_overhead": {m: learn_s[m] / learn_s["grpo"] - 1.0 for m in METHODS[1:]},
        "filter_step_fraction": {m: (filter_s[m] - filter_s["grpo"]) / step_s for m in METHODS[1:]},
    }


def _fused_loss_gain(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    """Learn time with the fused policy loss over the unfused one, on identical data."""
    trainer = Trainer(_config("grpo", args), run_dir)
    if not trainer.fused_loss:
        return {"skipped": f"the fused path is off: {trainer.forward.reason}"}
    problems = [trainer.train_problems[i] for i in trainer.cursor.take(args.prompts)]

    def use(fused: bool):
        def switch() -> None:
            trainer.fused_loss = fused

        return switch

    variants = {"fused": use(True), "unfused": use(False)}
    rollout_times, learn_times, rollout = interleaved_learn_times(
        trainer, problems, variants, args.repeats, args.seed
    )
    learn_s = {name: statistics.median(times) for name, times in learn_times.items()}
    head = trainer.forward.head
    return {
        "lm_head": {"vocab": head.out_features, "hidden": head.in_features},
        "rollout_s": statistics.median(rollout_times),
        "learn_s": learn_s,
        "learn_s_all": learn_times,
        "response_tokens": float(rollout.response_mask.sum()),
        "fused_over_unfused_learn": learn_s["fused"] / learn_s["unfused"],
    }


def _filter_times(trainer, problems, rollout, losses, repeats: int) -> dict[str, float]:
    """Median time of the token selection alone (the only work Clip_B / Clip_V add to GRPO:
    ``S_k`` and ``E_p[S]`` come out of the same statistics pass for every method)."""
    mask = rollout.response_mask
    reward, _ = reward_metrics(trainer.task, problems, rollout)
    advantages = broadcast_to_tokens(trainer.advantage_fn(reward, rollout.prompt_index), mask)
    with torch.no_grad():
        old = trainer.forward.stats(trainer.forward.features(rollout), rollout.response_ids)
    times = {}
    for method, loss in losses.items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            select_tokens(loss, old, advantages, mask)
            samples.append(time.perf_counter() - start)
        times[method] = statistics.median(samples)
    return times


def _trl(args: argparse.Namespace, out_dir: Path) -> dict[str, float] | dict[str, str]:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as exc:
        return {"skipped": f"trl not importable: {exc}"}
    from entropy_dynamics.models import default_model_path
    from entropy_dynamics.models.loading import load_model_and_tokenizer
    from entropy_dynamics.tasks import build_task
    from entropy_dynamics.training.config import TaskConfig

    task = build_task(TaskConfig())
    problems = task.train_problems()
    by_prompt = {task.prompt(p): p for p in problems}
    dataset = Dataset.from_dict({"prompt": list(by_prompt)})
    counted = {"tokens": 0}

    def reward(prompts, completions, completion_ids=None, **_):
        if completion_ids is not None:
            counted["tokens"] += sum(len(ids) for ids in completion_ids)
        return [
            task.score(by_prompt[p], c).reward for p, c in zip(prompts, completions, strict=True)
        ]

    phases = Phases()

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_step_begin(self, *_, **__):
            self._start, self._tokens = time.perf_counter(), counted["tokens"]
            phases.begin_step()

        def on_step_end(self, *_, **__):
            phases.end_step()
            self.times.append(time.perf_counter() - self._start)
            self.tokens.append(counted["tokens"] - self._tokens)

    model, tokenizer = load_model_and_tokenizer(default_model_path(), "float32", "cpu")
    config = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        beta=0.0,
        num_iterations=1,
        learning_rate=args.lr,
        max_steps=args.steps + 1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        seed=args.seed,
        shuffle_dataset=True,
        disable_tqdm=True,
    )
    timer = Timer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    targets = [
        (GRPOTrainer, "_generate_and_score_completions", "rollout + rewards"),
        (GRPOTrainer, "compute_loss", "forward + loss"),
        *_optimizer_phases(),
    ]
    with phases.patched(targets):
        trainer.train()
    times, tokens = timer.times[1:], timer.tokens[1:]  # drop the warm-up step
    return {
        "tokens_per_s": sum(tokens) / sum(times),
        "step_time_s": sum(times) / len(times),
        "response_tokens": float(sum(tokens)),
        "phases_s": phases.medians(skip=1),
    }


def _round(args: argparse.Namespace, out: Path) -> dict[str, object]:
    """One round of the throughput part: ours, then TRL's, and the ratio of their tokens/s."""
    ours = _ours("grpo", args, out / "grpo")
    trl = {"skipped": "--skip-trl"} if args.skip_trl else _trl(args, out / "trl")
    done = {"ours": ours, "trl": trl}
    if "tokens_per_s" in trl:
        done["ratio"] = ours["tokens_per_s"] / trl["tokens_per_s"]
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 1 warm-up)")
    parser.add_argument("--repeats", type=int, default=15, help="learn repeats per method")
    parser.add_argument(
        "--rounds", type=int, default=1, help="throughput: ours then TRL's, this many times"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--task", default="countdown", help="a task with its settings (--task)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="default: the task's (24 for countdown)"
    )
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dynamics", action="store_true", help="include our ΔH measurement")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override of ours"
    )
    parser.add_argument(
        "--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results/trainer_throughput.json"
    )
    args = parser.parse_args()
    if args.task != "countdown" and not args.skip_trl and "throughput" in args.parts:
        parser.error("--task: TRL's side is measured on countdown only; add --skip-trl")
    if args.max_new_tokens is None:  # the task's own cap (TRL samples as far)
        args.max_new_tokens = load_config(None, [], task=args.task).rollout.max_new_tokens
    results: dict[str, object] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
    }
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "fused_loss" in args.parts:
            results["fused_loss"] = fused = _fused_loss_gain(args, Path(tmp) / "fused")
            if "fused_over_unfused_learn" in fused:
                ratios["fused_loss_over_unfused_learn"] = fused["fused_over_unfused_learn"]
        if "overhead" in args.parts:
            results["filter_overhead"] = overhead = _filter_overhead(args, Path(tmp) / "overhead")
            ratios |= (
                {f"{m}_step_overhead": overhead["step_overhead"][m] for m in METHODS[1:]}
                | {f"{m}_learn_overhead": overhead["learn_overhead"][m] for m in METHODS[1:]}
                | {
                    f"{m}_filter_step_fraction": overhead["filter_step_fraction"][m]
                    for m in METHODS[1:]
                }
            )
        if "throughput" in args.parts:
            rounds = [_round(args, Path(tmp) / f"round{i}") for i in range(args.rounds)]
            results["ours"], results["trl"] = rounds[-1]["ours"], rounds[-1]["trl"]
            if args.rounds > 1:
                results["rounds"] = rounds
            per_round = [r["ratio"] for r in rounds if "ratio" in r]
            if per_round:  # the median over rounds: the machine's drift moves both within one
                ratios["ours_vs_trl_tokens_per_s"] = statistics.median(per_round)
                ratios["ours_vs_trl_tokens_per_s_range"] = [min(per_round), max(per_round)]
    results["ratios"] = ratios
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["ratios"], indent=2))


if __name__ == "__main__":
    main()
