"""GPU check of the engines' closed loop (issue 27): ``entropy_target``'s controller and the
dynamics monitor on CUDA tensors at a real shape, against the same calls on CPU.

One generation batch at the policy-loss benchmark's shape (``N`` response tokens of a
``d``-wide model over a ``V``-token vocabulary, bf16 weights): the statistics come from hidden
states through the fused path (``token_stats_from_hidden``, no logits), then three steps of
:class:`~entropy_dynamics.integrations.control_loop.EngineControl` (``entropy_target``, ``ki``,
monitor every step, the "after" entropies from a slightly moved ``lm_head``) run on CUDA and, on
copies of the same tensors, on CPU. Checked: identical targets, controller states and keep-masks;
monitor values within 1e-6. Timed: the decision (controller + filter) and the monitor's metrics
against the statistics pass (the engines' step is far longer than that pass, so a share of it
bounds the share of a step).

    python benchmarks/gpu/check_controller.py --out benchmarks/results/gpu/check_controller.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _steps import run_steps

from entropy_dynamics.integrations.control_loop import EngineControl
from entropy_dynamics.losses import PolicyLossConfig
from entropy_dynamics.stats import TokenStats, token_stats_from_hidden

CONTROL = {"target": 5.0, "ki": 0.1, "smoothing": 0.3}  # below the random model's H: drops
BASE = PolicyLossConfig(filter="entropy_target", filter_options={"max_share": 0.2, "gain": 1.0})


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn):
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def _close(a: dict, b: dict) -> bool:
    """Controller states equal up to the last bits of a float64 sum on another device."""
    return a.keys() == b.keys() and all(
        x == y or (None not in (x, y) and abs(x - y) <= 1e-9 * max(1.0, abs(y)))
        for x, y in ((a[k], b[k]) for k in a)
    )


def _run(device, tensors, steps: int):
    """Targets, states, keep-masks and monitor metrics of ``steps`` batches on ``device``."""
    control = EngineControl("entropy_target", CONTROL, BASE, steps=steps, monitor_every=1)
    trace = []
    for stats, after, advantages, mask in tensors:
        stats = TokenStats(*(t.to(device) for t in stats))
        config, keep, _ = control.decide(len(trace), stats, advantages.to(device), mask.to(device))
        monitor = control.finish(after.to(device))
        trace.append({
            "target": config.filter_options["target"], "keep": keep.cpu(),
            "state": dict(control.controller.state),
            "monitor": {k: float(v) for k, v in monitor.items()},
        })  # fmt: skip
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/gpu/check_controller.json")
    )
    parser.add_argument("--device", default="cuda", help="cuda; cpu: a smoke test of the script")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    device = args.device
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    report: dict = {"check": "controller", "device": name, "rows": []}
    gen = torch.Generator(device=device).manual_seed(0)
    b, t, d, v = args.rows, args.width, args.hidden, args.vocab
    weight = (torch.randn(v, d, device=device, generator=gen) / d**0.5).bfloat16()
    tensors, timings = [], {"stats_s": [], "decide_s": [], "monitor_s": []}

    def build():
        for _ in range(args.steps):
            hidden = torch.randn(b, t, d, device=device, generator=gen).bfloat16()
            tokens = torch.randint(0, v, (b, t), device=device, generator=gen)
            stats, seconds = _timed(
                lambda h=hidden, k=tokens: token_stats_from_hidden(h, weight, k, 1.0)
            )
            timings["stats_s"].append(seconds)
            moved = weight + 1e-3 * torch.randn_like(weight)  # the update, roughly
            after = token_stats_from_hidden(hidden, moved, tokens, 1.0).entropy
            lengths = torch.randint(t // 2, t + 1, (b, 1), device=device, generator=gen)
            mask = torch.arange(t, device=device) < lengths  # (b, t)
            advantages = torch.randn(b, 1, device=device, generator=gen).expand(b, t).contiguous()
            fields = (stats.logprobs, stats.entropy, stats.discriminator,
                      stats.expected_discriminator)  # fmt: skip
            tensors.append((fields, after, advantages, mask))

    def compare():
        control = EngineControl("entropy_target", CONTROL, BASE, steps=args.steps, monitor_every=1)
        for i, (stats, after, advantages, mask) in enumerate(tensors):  # timed on CUDA
            batch = (i, TokenStats(*stats), advantages, mask)
            _, seconds = _timed(lambda batch=batch: control.decide(*batch))
            timings["decide_s"].append(seconds)
            _, seconds = _timed(lambda after=after: control.finish(after))
            timings["monitor_s"].append(seconds)
        cuda, cpu = _run(device, tensors, args.steps), _run("cpu", tensors, args.steps)
        for step, (g, c) in enumerate(zip(cuda, cpu, strict=True)):
            worst = max(abs(g["monitor"][k] - c["monitor"][k]) for k in g["monitor"])
            ok = (abs(g["target"] - c["target"]) <= 1e-9 and torch.equal(g["keep"], c["keep"])
                  and _close(g["state"], c["state"]) and worst <= 1e-6)  # fmt: skip
            dropped = int((~g["keep"] & tensors[step][3].cpu()).sum())
            report["rows"].append(
                {"step": step, "ok": bool(ok), "monitor_max_abs_diff": worst, "dropped": dropped}
            )
        report["timings"] = {k: sum(vs) / len(vs) for k, vs in timings.items()}
        report["decide_over_stats"] = report["timings"]["decide_s"] / report["timings"]["stats_s"]
        report["monitor_over_stats"] = report["timings"]["monitor_s"] / report["timings"]["stats_s"]

    run_steps(report, [build, compare], args.out, lambda r: r["rows"])
    print(report)


if __name__ == "__main__":
    main()
