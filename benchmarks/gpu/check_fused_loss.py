"""The fused loss's Triton block kernels on a real GPU: compiled, checked against float64.

Run first by ``benchmarks/gpu/run.sh``, before any timing. For float32 and bfloat16 inputs (bias,
padded vocabulary, T ≠ 1) it compares with a float64 reference on materialised logits of the
same (rounded) inputs, for ``backend="triton"`` and ``backend="torch"``:

- :func:`entropy_dynamics.kernels.fused_linear_loss` with a non-linear loss of both statistics:
  the loss, ``log p_k``, ``H``, ``S_k``, ``E_p[S]`` and the gradients to hidden, weight and bias;
- :func:`entropy_dynamics.losses.fused_policy_loss` (PPO-clip, clip-higher, dual clip,
  keep-mask, seq-mean-token-mean, entropy bonus) against ``losses.compute_policy_loss``.

Writes JSON with every error and ``ok`` (float32 within 1e-4 relative, bf16 within 5e-2).

    python benchmarks/gpu/check_fused_loss.py --out check_fused_loss.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from _steps import run_steps

from entropy_dynamics.kernels import Chunking, LMHead, fused_linear_loss
from entropy_dynamics.losses import (
    PolicyLossConfig,
    PolicyLossInputs,
    compute_policy_loss,
    fused_policy_loss,
)
from entropy_dynamics.stats import token_stats

DEVICE = "cuda"  # --dry-run: "cpu", under TRITON_INTERPRET=1, at small shapes
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2}
SHAPES = ((300, 128, 5000, 4990, 0.7), (1000, 512, 32768, 32768, 1.0))  # N, d, V, valid, T
FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")


def _case(n, d, v, dtype, seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, device=DEVICE, dtype=torch.float64)
    weight = torch.randn(v, d, generator=gen, device=DEVICE, dtype=torch.float64) * 3 / math.sqrt(d)
    bias = torch.randn(v, generator=gen, device=DEVICE, dtype=torch.float64)
    return hidden.to(dtype), weight.to(dtype), bias.to(dtype)


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def check_kernel(report, n, d, v, valid, temperature, dtype):
    hidden, weight, bias = _case(n, d, v, dtype, seed=n + v)
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    tokens = torch.randint(0, valid, (n,), generator=gen, device=DEVICE)
    c1, c2 = torch.randn(2, n, generator=gen, device=DEVICE, dtype=torch.float64)

    def loss_fn(rows, log_p, entropy):
        return (c1[rows].to(log_p) * log_p.exp() + c2[rows].to(log_p) * entropy.square()).sum()

    leaves = [t.double().requires_grad_(True) for t in (hidden, weight, bias)]
    z = (leaves[0] @ leaves[1].T + leaves[2])[:, :valid]
    stats = token_stats(z, tokens, temperature, entropy_grad=True)
    ref = loss_fn(slice(None), stats.logprobs, stats.entropy)
    ref_grads = torch.autograd.grad(ref, leaves)
    row = {"dtype": str(dtype), "shape": [n, d, v], "valid": valid, "T": temperature}
    for backend in ("triton", "torch"):
        inputs = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        out = fused_linear_loss(
            inputs[0], LMHead(inputs[1], inputs[2], temperature, valid), tokens, loss_fn,
            chunking=Chunking(backend=backend),
        )  # fmt: skip
        grads = torch.autograd.grad(out[0], inputs)
        errors = {"loss": abs(out[0].item() - ref.item()) / max(abs(ref.item()), 1e-30)}
        for name, value in zip(FIELDS, out[1:], strict=True):
            errors[name] = float((value.double() - getattr(stats, name).detach()).abs().max())
        for name, got, expected in zip(("hidden", "weight", "bias"), grads, ref_grads, strict=True):
            errors[f"grad_{name}"] = _rel(got, expected)
        row[backend] = errors
    tol = TOLERANCE[dtype]
    row["ok"] = all(
        row["triton"][k] <= tol for k in ("loss", "grad_hidden", "grad_weight", "grad_bias")
    )
    report["kernel"].append(row)


def check_policy_loss(report, dtype, b=16, t=64, d=256, v=20000, valid=19950):
    hidden, weight, bias = _case(b * t, d, v, dtype, seed=11)
    hidden = hidden.reshape(b, t, d)
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    tokens = torch.randint(0, valid, (b, t), generator=gen, device=DEVICE)
    mask = torch.arange(t, device=DEVICE)[None, :] < torch.randint(8, t + 1, (b, 1), device=DEVICE)
    keep = torch.rand(b, t, generator=gen, device=DEVICE) > 0.2
    adv = torch.randn(b, 1, generator=gen, device=DEVICE).expand(b, t)
    config = PolicyLossConfig(
        eps_high=0.28, dual_clip_c=3.0, agg_mode="seq-mean-token-mean", entropy_coef=0.01
    )
    leaves = [x.double().requires_grad_(True) for x in (hidden, weight, bias)]
    z = (leaves[0] @ leaves[1].T + leaves[2])[..., :valid]
    stats = token_stats(z, tokens, 0.8, entropy_grad=True)
    # log-ratios of ±0.03 or ±0.6: inside or well outside the clip range, so that the rounding of
    # bf16 logits (a few 1e-2 nats) flips no clip decision and the check measures the kernels
    shift = torch.tensor([-0.6, -0.03, 0.03, 0.6], device=DEVICE, dtype=torch.float64)
    pick = torch.randint(0, 4, (b, t), generator=gen, device=DEVICE)
    old = stats.logprobs.detach() - shift[pick]
    inputs = PolicyLossInputs(stats.logprobs, old, adv, mask, stats, keep)
    ref = compute_policy_loss(config, inputs)
    ref_grads = torch.autograd.grad(ref.loss, leaves)
    row = {
        "dtype": str(dtype),
        "shape": [b, t, d, v],
        "pg_clipfrac": ref.metrics["actor/pg_clipfrac"].item(),
    }
    for backend in ("triton", "torch"):
        xs = [x.clone().requires_grad_(True) for x in (hidden, weight, bias)]
        out, _ = fused_policy_loss(
            config, xs[0], LMHead(xs[1], xs[2], 0.8, valid), tokens, old.float(), adv, mask, keep,
            chunking=Chunking(backend=backend),
        )  # fmt: skip
        grads = torch.autograd.grad(out.loss, xs)
        errors = {"loss": abs(out.loss.item() - ref.loss.item()) / abs(ref.loss.item())}
        for name, got, expected in zip(("hidden", "weight", "bias"), grads, ref_grads, strict=True):
            errors[f"grad_{name}"] = _rel(got, expected)
        row[backend] = errors
    row["ok"] = all(value <= TOLERANCE[dtype] for value in row["triton"].values())
    report["policy_loss"].append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_fused_loss.json"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, small")
    args = parser.parse_args()
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
    else:
        assert torch.cuda.is_available(), "needs a CUDA device"
    import triton

    small = 8 if args.dry_run else 1

    report = {
        "device": "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "kernel": [],
        "policy_loss": [],
    }
    steps = []
    for dtype in (torch.float32, torch.bfloat16):
        for n, d, v, valid, temperature in SHAPES:
            shape = (n // small, d // small, v // small, valid // small, temperature)
            steps.append(lambda dtype=dtype, shape=shape: check_kernel(report, *shape, dtype))
        dims = {"b": 16 // small, "d": 256 // small, "v": 20000 // small, "valid": 19950 // small}
        steps.append(lambda dtype=dtype, dims=dims: check_policy_loss(report, dtype, **dims))
    run_steps(report, steps, args.out, lambda r: r["kernel"] + r["policy_loss"])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
