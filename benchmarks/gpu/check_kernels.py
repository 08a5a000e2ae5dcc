"""The Triton kernels on a real GPU: compiled, checked against float64 and the torch path, timed.

Until a GPU is lent the kernels are tested only through Triton's CPU interpreter. This script,
run once on a CUDA machine (``benchmarks/gpu/run.sh``), checks on the device:

- forward ``(log p_k, H, S_k, E_p[S])`` of ``backend="triton"`` and ``"torch"`` against a float64
  reference on materialised logits (bf16 and fp32 inputs, bias, padded vocabulary, T ≠ 1);
- gradients to hidden, weight and bias of the two backends against each other;
- the backward kernel's ``grad_z`` tile against :func:`entropy_dynamics.kernels.logit_grad_`;

then times forward and forward + backward of both backends at a Qwen-sized shape. Writes JSON.

    python benchmarks/gpu/check_kernels.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from entropy_dynamics.kernels import LMHead, logit_grad_, triton_stats
from entropy_dynamics.stats import token_stats_from_hidden

FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")


def _case(n, d, v, dtype, seed, valid=None, bias=True):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen, device="cuda", dtype=torch.float64) * 3 / math.sqrt(d)
    weight = torch.randn(v, d, generator=gen, device="cuda", dtype=torch.float64)
    b = torch.randn(v, generator=gen, device="cuda", dtype=torch.float64) if bias else None
    tokens = torch.randint(0, valid or v, (n,), generator=gen, device="cuda")
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), tokens


def _reference(hidden, weight, bias, tokens, temperature, valid):
    z = hidden.double() @ weight.double().T
    if bias is not None:
        z = z + bias.double()
    z = z[:, :valid] / temperature
    log_p = torch.log_softmax(z, -1)
    p = log_p.exp()
    h = -(p * log_p).sum(-1)
    log_p_k = log_p.gather(-1, tokens[:, None]).squeeze(-1)
    s_k = log_p_k.exp() * (h + log_p_k)
    e_s = (p * p * (h[:, None] + log_p)).sum(-1)
    return dict(zip(FIELDS, (log_p_k, h, s_k, e_s), strict=True))


def _errors(got, expected):
    return {f: float((getattr(got, f).double() - expected[f]).abs().max()) for f in FIELDS}


def check_forward(report):
    for dtype in (torch.float32, torch.bfloat16):
        for n, d, v, valid, temperature in (
            (300, 128, 5000, 4990, 0.7),
            (1000, 512, 32768, None, 1.0),
        ):
            hidden, weight, bias, tokens = _case(n, d, v, dtype, seed=n + v, valid=valid)
            # the reference sees the rounded inputs the kernels see
            expected = _reference(hidden, weight, bias, tokens, temperature, valid or v)
            row = {}
            for backend in ("triton", "torch"):
                got = token_stats_from_hidden(
                    hidden, weight, tokens, temperature, bias=bias, valid_vocab=valid,
                    backend=backend,
                )  # fmt: skip
                row[backend] = _errors(got, expected)
            report["forward"].append(
                {"dtype": str(dtype), "shape": [n, d, v], "valid": valid, "T": temperature, **row}
            )


def check_backward(report):
    for dtype in (torch.float32, torch.bfloat16):
        hidden, weight, bias, tokens = _case(700, 256, 20000, dtype, seed=3, valid=19950)
        w1 = torch.randn(700, device="cuda")
        w2 = torch.randn(700, device="cuda")
        grads = {}
        for backend in ("triton", "torch"):
            inputs = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
            out = token_stats_from_hidden(
                inputs[0], inputs[1], tokens, 1.3, bias=inputs[2], entropy_grad=True,
                valid_vocab=19950, backend=backend,
            )  # fmt: skip
            ((w1 * out.logprobs).sum() + (w2 * out.entropy).sum()).backward()
            grads[backend] = [t.grad.double() for t in inputs]
        diffs = {
            name: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
            for name, a, b in zip(("hidden", "weight", "bias"), *grads.values(), strict=True)
        }
        report["backward_rel_diff_triton_vs_torch"].append({"dtype": str(dtype), **diffs})


def check_tile(report):
    hidden, weight, bias, tokens = _case(256, 128, 3000, torch.float32, seed=5)
    x = (hidden.double() @ weight.double().T + bias.double()) / 0.8
    lse, log_p = torch.logsumexp(x, -1), torch.log_softmax(x, -1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    g1, g2 = torch.randn(256, device="cuda"), torch.randn(256, device="cuda")
    head = LMHead(weight, bias, 0.8)
    tile = triton_stats.grad_tile(hidden, head, tokens, lse.float(), entropy.float(), g1, g2)
    got = tile(slice(0, 256), 512, 2560)
    expected = logit_grad_(
        log_p[:, 512:2560].clone(), entropy, g1.double(), g2.double(), tokens, 1 / 0.8, 512
    )
    report["grad_tile_max_abs_error_vs_logit_grad"] = float((got.double() - expected).abs().max())


def _timed(fn, repeat=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _forward(h, w, tokens, backend):
    with torch.no_grad():
        token_stats_from_hidden(h, w, tokens, backend=backend)


def _both(h, w, tokens, backend):
    out = token_stats_from_hidden(h, w, tokens, entropy_grad=True, backend=backend)
    (out.logprobs.sum() + out.entropy.sum()).backward()
    h.grad = w.grad = None


def time_backends(report, n=4096, d=1536, v=151936):
    hidden, weight, _, tokens = _case(n, d, v, torch.bfloat16, seed=7, bias=False)
    matmul = _timed(lambda: hidden @ weight.T)
    row = {"shape": [n, d, v], "dtype": "bfloat16", "matmul_forward_s": matmul}
    for backend in ("triton", "torch"):
        h = hidden.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        row[f"{backend}_forward_s"] = _timed(lambda b=backend, h=h, w=w: _forward(h, w, tokens, b))
        row[f"{backend}_forward_backward_s"] = _timed(
            lambda b=backend, h=h, w=w: _both(h, w, tokens, b)
        )
        row[f"{backend}_forward_over_matmul"] = row[f"{backend}_forward_s"] / matmul
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    token_stats_from_hidden(hidden, weight, tokens, backend="triton")
    row["triton_forward_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
    row["naive_logits_bytes_float32"] = n * v * 4
    report["timing"] = row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_kernels.json"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "forward": [],
        "backward_rel_diff_triton_vs_torch": [],
    }
    import triton

    report["triton"] = triton.__version__
    for step in (check_forward, check_backward, check_tile, time_backends):
        try:
            step(report)
        except Exception as exc:  # keep what the other steps measured
            report.setdefault("failures", []).append(
                f"{step.__name__}: {type(exc).__name__}: {exc}"
            )
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
