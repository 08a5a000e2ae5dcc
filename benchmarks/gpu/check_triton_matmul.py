"""The matmul kernels with the statistics in their epilogue on a real GPU: checked, then timed.

For :mod:`entropy_dynamics.kernels.triton_matmul`, run by ``benchmarks/gpu/run.sh``:

- checks (bf16 and float32; bias, padded vocabulary, T ≠ 1) against float64 on materialised
  logits of the same rounded inputs: ``matmul_power_sums`` → ``finalize`` (``log p_k``, ``H``,
  ``S_k``, ``E_p[S]``, max abs error), ``matmul_logit_grad`` against ``logit_grad_`` (error
  relative to the largest entry), and ``token_stats_from_hidden(backend="triton-matmul")``;
- times at N 4096, d 1536, V 151936 in bf16 (medians): ``matmul_power_sums`` (default tiles and a
  few others, with and without ``E_p[S]``) against the bare ``h @ w.T`` and the existing
  statistics forward (``backend="triton"``), and ``matmul_logit_grad`` against the path it would
  replace in the fused loss (float32 cuBLAS logits + ``triton_loss.block_grad``).

Writes JSON (every error, ``ok`` per check, the timings and their ratios).

    python benchmarks/gpu/check_triton_matmul.py [--out PATH] [--dry-run]

``--dry-run`` runs tiny shapes on CPU under ``TRITON_INTERPRET=1`` (set by the script), to check
the script itself; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from _steps import run_steps

DEVICE = "cuda"
FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")
# statistics: max abs error (nats); grad_z: error over its largest entry (bf16 output: 2^-8)
TOLERANCE = {"stats": 1e-4, "grad": {torch.float32: 1e-4, torch.bfloat16: 1e-2}}
CHECK_SHAPES = ((300, 128, 5000, 4990, 0.7), (1000, 512, 32768, 32700, 1.3))  # N, d, V, valid, T
FULL_SHAPE = (4096, 1536, 151936)
CONFIGS = (  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); the first is the default
    (128, 128, 64, 8, 3),
    (128, 256, 64, 8, 3),
    (64, 128, 64, 4, 4),
    (128, 128, 64, 4, 4),
)


def _case(n, d, v, valid, dtype, seed, bias=True):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, device=DEVICE, dtype=torch.float64) * 3 / math.sqrt(d)
    weight = torch.randn(v, d, generator=gen, device=DEVICE, dtype=torch.float64)
    b = torch.randn(v, generator=gen, device=DEVICE, dtype=torch.float64) if bias else None
    tokens = torch.randint(0, valid, (n,), generator=gen, device=DEVICE)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), tokens


def _logits64(hidden, weight, bias, valid, temperature):
    z = hidden.double() @ weight[:valid].double().T
    return (z if bias is None else z + bias[:valid].double()) / temperature


def _reference(x, tokens):
    log_p = torch.log_softmax(x, -1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)
    log_p_k = log_p.gather(-1, tokens[:, None]).squeeze(-1)
    s_k = log_p_k.exp() * (entropy + log_p_k)
    return log_p_k, entropy, s_k, (p * p * (entropy[:, None] + log_p)).sum(-1), log_p


def check(report, n, d, v, valid, temperature, dtype, tiles):
    from entropy_dynamics.kernels import LMHead
    from entropy_dynamics.kernels.logit_grad import grad_coefficients, logit_grad_
    from entropy_dynamics.kernels.power_sums import finalize
    from entropy_dynamics.kernels.triton_matmul import matmul_logit_grad, matmul_power_sums
    from entropy_dynamics.stats import token_stats_from_hidden

    hidden, weight, bias, tokens = _case(n, d, v, valid, dtype, seed=n + v)
    x = _logits64(hidden, weight, bias, valid, temperature)
    *expected, log_p = _reference(x, tokens)
    row = {"dtype": str(dtype), "shape": [n, d, v], "valid": valid, "T": temperature}
    head = LMHead(weight, bias, temperature, valid)
    sums, x_k = matmul_power_sums(hidden, head, tokens, True, **tiles)
    got = finalize(sums, x_k)[:4]
    row["power_sums"] = {f: float((g.double() - e).abs().max())
                         for f, g, e in zip(FIELDS, got, expected, strict=True)}  # fmt: skip
    stats = token_stats_from_hidden(hidden, weight, tokens, temperature, bias=bias,
                                    valid_vocab=valid, backend="triton-matmul")  # fmt: skip
    row["backend_triton_matmul"] = {f: float((getattr(stats, f).double() - e).abs().max())
                                    for f, e in zip(FIELDS, expected, strict=True)}  # fmt: skip
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    g1, g2 = torch.randn(2, n, generator=gen, device=DEVICE, dtype=torch.float64)
    entropy = expected[1]
    log_a = torch.logsumexp(x - x.amax(-1, keepdim=True), -1)
    coefficients = torch.stack(
        [x.amax(-1), *grad_coefficients(log_a, entropy, g1, g2, 1 / temperature)]
    )
    width = -(-valid // 16) * 16
    out = torch.empty(n, width, dtype=dtype, device=DEVICE)
    matmul_logit_grad(hidden, head, tokens, coefficients.float().contiguous(), out, **tiles)
    ref = logit_grad_(log_p, entropy, g1, g2, tokens, 1 / temperature)
    row["logit_grad_rel"] = float((out[:, :valid].double() - ref).abs().max() / ref.abs().max())
    row["ok"] = (
        max(*row["power_sums"].values(), *row["backend_triton_matmul"].values())
        <= TOLERANCE["stats"]
        and row["logit_grad_rel"] <= TOLERANCE["grad"][dtype]
    )
    report["checks"].append(row)


def _timed(fn, repeat):
    sync = torch.cuda.synchronize if DEVICE == "cuda" else lambda: None
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_full(report, n, d, v, repeat, configs):
    from entropy_dynamics.kernels import Chunking, LMHead, fused_token_stats, triton_loss
    from entropy_dynamics.kernels.triton_matmul import matmul_logit_grad, matmul_power_sums

    hidden, weight, _, tokens = _case(n, d, v, v, torch.bfloat16, seed=7, bias=False)
    head, triton = LMHead(weight), Chunking(backend="triton")
    row = {"shape": [n, d, v], "dtype": "bfloat16", "repeat": repeat}
    report["timing"] = row
    row["matmul_s"] = matmul = _timed(lambda: hidden @ weight.T, repeat)
    with torch.no_grad():
        row["triton_stats_forward_s"] = stats = _timed(
            lambda: fused_token_stats(hidden, head, tokens, triton), repeat
        )
    row["configs"] = []
    for block_m, block_n, block_k, warps, stages in configs:
        tiles = {"block_m": block_m, "block_n": block_n, "block_k": block_k,
                 "num_warps": warps, "num_stages": stages}  # fmt: skip
        entry = {"tiles": [block_m, block_n, block_k, warps, stages]}
        row["configs"].append(entry)
        try:
            for with_es in (True, False):
                seconds = _timed(lambda e=with_es, t=tiles: matmul_power_sums(
                    hidden, head, tokens, e, **t), repeat)  # fmt: skip
                key = "power_sums" if with_es else "power_sums_without_es"
                entry[f"{key}_s"] = seconds
                entry[f"{key}_over_matmul"] = seconds / matmul
                entry[f"{key}_over_triton_stats"] = seconds / stats
        except Exception as exc:  # a tile shape this GPU refuses (shared memory): keep the rest
            entry["failure"] = f"{type(exc).__name__}: {exc}"
    sums, _ = matmul_power_sums(hidden, head, tokens, False)
    coefficients = torch.stack([sums[0], -1 / sums[1], torch.zeros_like(sums[0]),
                                torch.ones_like(sums[0])]).contiguous()  # fmt: skip
    out = torch.empty(n, v, dtype=torch.bfloat16, device=DEVICE)
    row["logit_grad_s"] = grad = _timed(
        lambda: matmul_logit_grad(hidden, head, tokens, coefficients, out), repeat
    )

    def float32_logits_path():  # what the fused loss does today: cuBLAS float32, then a kernel
        z = torch.mm(hidden, weight.T, out_dtype=torch.float32) if DEVICE == "cuda" else (
            hidden @ weight.T).float()  # fmt: skip
        triton_loss.block_grad(z, tokens, coefficients, 1.0, out)

    row["float32_logits_then_block_grad_s"] = old = _timed(float32_logits_path, repeat)
    row["logit_grad_over_matmul"] = grad / matmul
    row["logit_grad_over_float32_logits_path"] = grad / old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/gpu/check_triton_matmul.json, "
        "check_triton_matmul_cpu_rehearsal.json with --dry-run)",
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny")
    args = parser.parse_args()
    if args.out is None:
        name = "check_triton_matmul" + ("_cpu_rehearsal" if args.dry_run else "")
        args.out = Path(f"benchmarks/results/gpu/{name}.json")
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported
    else:
        assert torch.cuda.is_available(), "needs a CUDA device (or --dry-run)"
    import triton

    report = {
        "device": "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "checks": [],
    }
    small = {"block_m": 16, "block_n": 32, "block_k": 16, "num_warps": 4}
    shapes = ((37, 24, 203, 190, 0.7),) if args.dry_run else CHECK_SHAPES
    steps = [
        lambda dtype=dtype, shape=shape: check(report, *shape, dtype, small if args.dry_run else {})
        for dtype in (torch.bfloat16, torch.float32)
        for shape in shapes
    ]
    if args.dry_run:
        configs = ((16, 32, 16, 4, 2), (32, 32, 16, 4, 2))
        steps.append(lambda: time_full(report, 64, 32, 500, 1, configs))
    else:
        steps.append(lambda: time_full(report, *FULL_SHAPE, 10, CONFIGS))
    run_steps(report, steps, args.out, lambda r: r["checks"])
    timing = dict(report.get("timing", {}))
    configs = timing.pop("configs", [])
    head = {k: v for k, v in report.items() if k not in ("checks", "timing")}
    for line in (head, *report["checks"], timing, *configs):  # one line each: run.sh tails it
        print(json.dumps(line))


if __name__ == "__main__":
    main()
