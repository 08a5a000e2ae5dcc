"""The verl plug-in on a GPU: what the CPU tests cannot reach (issue 13).

On CPU the plug-in runs in verl's real FSDP2 engine through a test-only CPU platform. Here verl's
own CUDA platform, NCCL and autocast are used (one process, one GPU, the embedded model, sdpa):

1. ``fp32``: the engine's statistics vs the float64 definitions (padding removal on and off),
   and one training step with the mask (dropped tokens: zero gradient; kept: ``-A / n_kept``);
2. ``bf16``: the same statistics under verl's bf16 mixed precision (error reported), and the
   plug-in's overhead, old-log-prob pass + ``train_batch``, interleaved with plain verl;
3. ``fused kernels``: with ``use_fused_kernels=True`` asking for the statistics must fail with
   the plug-in's message (verl's fused head never forms logits).

    python benchmarks/gpu/verl_check.py --out benchmarks/results/gpu/verl_check.json

``--device cpu`` runs the same through the tests' CPU platform (a rehearsal before spending GPU
time; the fused-kernel part then fails inside verl, as on CPU it must).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))

from verl_cpu import MODEL, actor_config, flags, new_engine, padded_batch  # noqa: E402

from entropy_dynamics import theory  # noqa: E402
from entropy_dynamics.integrations.verl import (  # noqa: E402
    STAT_KEYS,
    STATS_FLAG,
    FilterSettings,
    decide_keep,
)

B, P, C = 16, 12, 48
DEVICE = "cuda"


def _engine(precision: str, fused: bool = False):
    return new_engine(lr=0.0, micro_batch=8, bf16=precision == "bf16", fused=fused)


def _batch():
    gen = torch.Generator().manual_seed(0)
    prompt_mask = torch.arange(P) >= torch.randint(0, P // 2, (B, 1), generator=gen)
    response_mask = torch.arange(C) < torch.randint(C // 4, C + 1, (B, 1), generator=gen)
    prompts = torch.randint(2, 40, (B, P), generator=gen) * prompt_mask
    responses = torch.randint(2, 40, (B, C), generator=gen) * response_mask
    advantages = torch.randn(B, 1, generator=gen) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages


def _stats(engine, tensors, remove_padding=True, temperature=1.0, fused=False):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import no_padding_2_padding

    data = padded_batch(*tensors, torch.zeros(B, C))
    flags(
        data,
        micro_batch_size_per_gpu=8,
        use_remove_padding=remove_padding,
        temperature=temperature,
        use_fused_kernels=fused,
    )
    tu.assign_non_tensor(data, **{STATS_FLAG: True})
    with engine.eval_mode():
        output = engine.infer_batch(data, loss_function=None)["model_output"]
    return {k: no_padding_2_padding(v, data).cpu() for k, v in output.items()}


def _reference(tensors, temperature):
    prompts, prompt_mask, responses, response_mask, _ = tensors
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float64).to(DEVICE).eval()
    out = {k: torch.zeros(B, C, dtype=torch.float64) for k in STAT_KEYS}
    for b in range(B):
        ids = torch.cat([prompts[b][prompt_mask[b]], responses[b][response_mask[b]]]).to(DEVICE)
        with torch.no_grad():
            logits = model(ids.unsqueeze(0)).logits[0]
        start, n = int(prompt_mask[b].sum()) - 1, int(response_mask[b].sum())
        z, tokens = logits[start : start + n], responses[b, :n].to(DEVICE)
        out["ed_entropy"][b, :n] = theory.entropy(z, temperature).cpu()
        out["ed_discriminator"][b, :n] = theory.discriminator(z, tokens, temperature).cpu()
        out["ed_expected_discriminator"][b, :n] = theory.expected_discriminator(
            z, temperature
        ).cpu()
    return out


def _errors(got, ref, mask):
    return {k: float((got[k][mask].double() - ref[k][mask]).abs().max()) for k in STAT_KEYS}


def _train_step(engine, tensors):
    """One training step with the mask; per-token gradient of the loss w.r.t. log p."""
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    rollout = _stats(engine, tensors)
    response_mask, advantages = tensors[3], tensors[4].float()
    batch = {
        "old_log_probs": rollout["log_probs"],
        **{k: rollout[k] for k in STAT_KEYS},
        "advantages": advantages,
        "response_mask": response_mask,
    }
    keep, _ = decide_keep(FilterSettings("clip_b", {"mu": 0.5}).loss_config(), batch)
    train = padded_batch(*tensors, rollout["log_probs"])
    flags(train, micro_batch_size_per_gpu=8)
    train["response_mask"], train["loss_mask"] = keep.long(), keep.long()
    seen = []

    def capture(config, model_output, data, dp_group=None):
        values = model_output["log_probs"].values() * 1.0
        values.register_hook(lambda g, d=data: seen.append((g.detach().cpu(), d.cpu())))
        nested = torch.nested.nested_tensor_from_jagged(values, model_output["log_probs"].offsets())
        return ppo_loss(config, {**model_output, "log_probs": nested}, data, dp_group)

    config = actor_config(B, 8)
    with engine.train_mode():
        engine.train_batch(train, loss_function=partial(capture, config=config))
    n_kept, worst, dropped_max = int(keep.sum()), 0.0, 0.0
    for grad, micro in seen:
        got = no_padding_2_padding(grad, micro)
        kept = micro["response_mask"].bool()
        want = torch.where(kept, -micro["advantages"] / n_kept, 0.0)
        worst = max(worst, float((got - want).abs().max()))
        valid = micro["attention_mask"][:, P:].bool()
        dropped = got[valid & ~kept].abs()
        dropped_max = max(dropped_max, float(dropped.max()) if dropped.numel() else 0.0)
    return {
        "dropped": int((response_mask & ~keep).sum()),
        "kept": n_kept,
        "max_abs_error_kept_grad": worst,
        "max_abs_dropped_grad": dropped_max,
    }


def _overhead(engine, tensors, rounds=5, steps=3):
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    config = actor_config(B, 8)

    def sync() -> None:
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def update(plugin: bool) -> float:
        sync()
        start = time.perf_counter()
        data = padded_batch(*tensors, torch.zeros(B, C))
        flags(data, micro_batch_size_per_gpu=8, calculate_entropy=True)
        if plugin:
            tu.assign_non_tensor(data, **{STATS_FLAG: True})
        with engine.eval_mode():
            output = engine.infer_batch(data, loss_function=None)["model_output"]
        padded = {k: no_padding_2_padding(v, data) for k, v in output.items()}
        train = padded_batch(*tensors, padded["log_probs"].cpu())
        flags(train, micro_batch_size_per_gpu=8)
        if plugin:
            batch = {
                "old_log_probs": padded["log_probs"],
                **{k: padded[k] for k in STAT_KEYS},
                "advantages": tensors[4].float().to(padded["log_probs"].device),
                "response_mask": tensors[3].to(padded["log_probs"].device),
            }
            keep, _ = decide_keep(FilterSettings("clip_b", {"mu": 2.5}).loss_config(), batch)
            train["response_mask"] = train["loss_mask"] = keep.long().cpu()
        with engine.train_mode():
            engine.train_batch(train, loss_function=partial(ppo_loss, config=config))
        sync()
        return time.perf_counter() - start

    update(False), update(True)  # warm-up
    ratios = []
    for index in range(rounds):
        order = [False, True] if index % 2 == 0 else [True, False]
        times = {p: statistics.median(update(p) for _ in range(steps)) for p in order}
        ratios.append(times[True] / times[False])
    return {"step_time_ratio": statistics.median(ratios), "per_round": ratios}


def _section(report, name, fn):
    start = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as exc:  # one failing part must not lose the others
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    report[name]["seconds"] = round(time.perf_counter() - start, 1)
    print(name, json.dumps(report[name])[:600], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu/verl_check.json")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--skip-bf16", action="store_true", help="(slow on CPU)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29551")
    if DEVICE == "cpu":
        from verl_cpu import use_cpu_platform

        use_cpu_platform()
        dist.init_process_group("gloo", rank=0, world_size=1)
    else:
        dist.init_process_group("nccl", rank=0, world_size=1)
        torch.cuda.set_device(0)
    import verl

    import entropy_dynamics.integrations.verl as plugin

    tensors = _batch()
    mask = tensors[3]
    report = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (rehearsal)",
        "verl": verl.__version__,
        "torch": torch.__version__,
    }
    engines = {}

    def fp32():
        engines["fp32"] = engine = _engine("fp32")
        out = {}
        for temperature in (1.0, 0.7):
            ref = _reference(tensors, temperature)
            for rmpad in (True, False):
                got = _stats(engine, tensors, remove_padding=rmpad, temperature=temperature)
                out[f"T{temperature}/rmpad={rmpad}"] = _errors(got, ref, mask)
        out["train_step"] = _train_step(engine, tensors)
        return out

    def bf16():
        engine = _engine("bf16")
        ref = _reference(tensors, 1.0)
        return {
            "stats_max_abs_error_vs_float64": _errors(_stats(engine, tensors), ref, mask),
            "overhead_clip_b": _overhead(engine, tensors),
        }

    def fused():
        engine = _engine("fp32", fused=True)
        try:
            _stats(engine, tensors, fused=True)
        except RuntimeError as exc:
            return {"refused": "use_fused_kernels=False" in str(exc), "message": str(exc)[:300]}
        return {"refused": False, "message": "no error: the statistics were computed"}

    _section(report, "fp32", fp32)
    if not args.skip_bf16:
        _section(report, "bf16", bf16)
    _section(report, "fused_kernels", fused)
    report["patched"] = sorted(plugin.PATCHED)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
