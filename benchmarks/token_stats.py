"""Token statistics from hidden states: time and peak memory, ours vs the peers, one run.

Every method starts from the same final hidden states ``(N, d)`` and lm_head weight ``(V, d)``
and returns ``log p_k`` and the entropy ``H`` of ``softmax(h Wᵀ)``; the backward pass is that of
``Σ g1·log p_k + g2·H`` with fixed random ``g1, g2``, to ``hidden`` and ``weight``.

- ``matmul``: the bare lm_head matmul ``h Wᵀ`` (and its two backward matmuls) — the floor.
- ``naive``: materialised float32 logits, ``log_softmax``, ``exp``, entropy, gather.
- ``verl``: materialised logits + verl's ``logprobs_from_logits`` and
  ``entropy_from_logits_with_chunking`` (skipped when verl is not importable).
- ``trl``: materialised logits + TRL's ``selective_log_softmax`` and ``entropy_from_logits``
  (TRL's path before 1.15).
- ``trl_fused``: TRL's current fused LM head, ``trl.kernels.ChunkedLogProbFunction`` (log p_k and
  H from hidden states, no E_p[S]; Triton on CUDA, torch elsewhere), at the chunk size TRL's
  GRPOTrainer uses.
- ``verl_fused``: verl's ``FusedLinearForPPO`` (log p_k and H from hidden states, chunks of 512
  positions, plain torch; loaded without verl's ray-importing package ``__init__``).
- ``ours``: :func:`entropy_dynamics.stats.token_stats_from_hidden` — also returns ``S_k`` and
  ``E_p[S]``; ``ours_no_es`` (forward only) is the same pass without the two extra power sums,
  to price ``E_p[S]``.

Forward time is taken with autograd on, as in training; "fwd+bwd" includes it; each is the
minimum over ``--repeat`` runs taken round robin over the methods (so a shared machine's load
drift hits all alike). Peak memory is the peak of live allocations above the level at the call's
start, from a separate untimed run that also serves as warm-up (CPU: replay of the profiler's
allocator events; CUDA: ``torch.cuda.max_memory_allocated``); the fwd+bwd peak includes the
gradients of ``hidden`` and ``weight`` that every method returns.

    python benchmarks/token_stats.py                     # quick shape
    python benchmarks/token_stats.py --full              # N=4096, d=1536, V=151936 (minutes on CPU)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
from _measure import (
    cpu_peaks,
    cuda_peaks,
    load_method,
    report_header,
    resolve_case,
    run_and_write,
    shape_arguments,
    timed,
)
from _peers import trl_chunked_logprob, verl_fused_linear_for_ppo

from entropy_dynamics import stats
from entropy_dynamics.kernels import streaming

QUICK = {"n": 1024, "d": 512, "v": 32768}
FULL = {"n": 4096, "d": 1536, "v": 151936}
METHODS = ("matmul", "naive", "verl", "trl", "trl_fused", "verl_fused", "ours", "ours_no_es")

Outputs = tuple[torch.Tensor, torch.Tensor | None]  # (log p_k or logits, H or None)


def _matmul(h, w, tokens) -> Outputs:
    return h @ w.T, None


def _naive(h, w, tokens) -> Outputs:
    logits = (h @ w.T).float()  # (N, V)
    log_p = torch.log_softmax(logits, -1)
    p = log_p.exp()
    return log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), -(p * log_p).sum(-1)


def _verl() -> Callable[..., Outputs]:
    from verl.utils.torch_functional import (
        entropy_from_logits_with_chunking,
        logprobs_from_logits,
    )

    def run(h, w, tokens) -> Outputs:
        logits = (h @ w.T).float()
        return logprobs_from_logits(logits, tokens), entropy_from_logits_with_chunking(logits)

    return run


def _trl() -> Callable[..., Outputs]:
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    def run(h, w, tokens) -> Outputs:
        logits = (h @ w.T).float()
        return selective_log_softmax(logits, tokens), entropy_from_logits(logits)

    return run


def _trl_fused() -> Callable[..., Outputs]:
    function, chunk = trl_chunked_logprob()

    def run(h, w, tokens) -> Outputs:
        out = function.apply(h, w, None, tokens, 1.0, chunk, None, 1.0, ("entropy",))
        return out[0], out[1]

    return run


def _verl_fused() -> Callable[..., Outputs]:
    head = verl_fused_linear_for_ppo()()

    def run(h, w, tokens) -> Outputs:
        return head(h, w, tokens, 1.0)

    return run


def _ours(h, w, tokens) -> Outputs:
    out = stats.token_stats_from_hidden(h, w, tokens, entropy_grad=True)
    return out.logprobs, out.entropy


def _sums_without_es(x, new_max):
    """``_block_sums`` computing only A and B (log p_k and H), to price the C, D sums."""
    rel = x.sub_(new_max.unsqueeze(-1))
    e = rel.exp()
    a = e.sum(-1)
    zeros = torch.zeros_like(a)
    return a, rel.mul_(e).sum(-1), zeros, zeros


def _ours_no_es(h, w, tokens) -> Outputs:
    original = streaming._block_sums
    streaming._block_sums = _sums_without_es
    try:
        return _ours(h, w, tokens)
    finally:
        streaming._block_sums = original


def _method(name: str) -> Callable[..., Outputs]:
    plain = {"matmul": _matmul, "naive": _naive, "ours": _ours, "ours_no_es": _ours_no_es}
    peers = {"verl": _verl, "trl": _trl, "trl_fused": _trl_fused, "verl_fused": _verl_fused}
    return plain[name] if name in plain else peers[name]()


def _backward(outputs: Outputs, g1: torch.Tensor, g2: torch.Tensor) -> None:
    first, entropy = outputs
    if entropy is None:  # the matmul floor: backward with its own output as gradient
        first.backward(first.detach())
        return
    ((g1 * first).sum() + (g2 * entropy).sum()).backward()


def _timed(fn, inputs, g1, g2, backward: bool) -> dict[str, float]:
    """Wall and process-CPU seconds of the forward and of forward+backward."""
    h, w, tokens = inputs
    h.grad = w.grad = None
    grads = (lambda outputs: _backward(outputs, g1, g2)) if backward else None
    out = timed(lambda: fn(h, w, tokens), grads, h.device)
    h.grad = w.grad = None
    return out


def _values(outputs: Outputs) -> Outputs | None:
    """Detached ``(log p_k, H)`` to compare with the naive values (``None`` for the matmul)."""
    first, entropy = outputs
    return None if entropy is None else (first.detach().float(), entropy.detach().float())


def _peaks(measure):
    """``(forward peak, fwd+bwd peak, values)`` of one method by ``measure`` (``_measure``)."""

    def run(fn, inputs, g1, g2, backward: bool) -> tuple[int, int, Outputs | None]:
        h, w, tokens = inputs
        h.grad = w.grad = None
        grads = (lambda outputs: _backward(outputs, g1, g2)) if backward else None
        forward_peak, peak, outputs = measure(lambda: fn(h, w, tokens), grads)
        values = _values(outputs)
        del outputs
        h.grad = w.grad = None
        return forward_peak, peak, values

    return run


def _estimated_bytes(name: str, n: int, v: int, d: int) -> int:
    """Rough peak for the materialising methods (float32 copies of [N, V]), to skip, not OOM."""
    copies = {"naive": 6, "verl": 6, "trl": 6, "matmul": 2}.get(name, 0)
    return copies * n * v * 4 + 2 * v * d * 4


def run(args: argparse.Namespace) -> dict:
    n, d, v, device, dtype = resolve_case(args, QUICK, FULL)
    gen = torch.Generator().manual_seed(0)
    # Hidden states of unit RMS and a weight giving logits of spread ~3: peaked, realistic rows.
    hidden = torch.randn(n, d, generator=gen).to(device, dtype).requires_grad_(True)
    weight = (torch.randn(v, d, generator=gen) * 3 / d**0.5).to(device, dtype).requires_grad_(True)
    tokens = torch.randint(0, v, (n,), generator=gen).to(device)
    g1, g2 = torch.randn(2, n, generator=gen).to(device)
    inputs = (hidden, weight, tokens)
    peaks = _peaks(cuda_peaks if device.type == "cuda" else cpu_peaks)
    results: dict[str, dict] = {}
    with torch.no_grad():
        reference = tuple(t.float() for t in _naive(hidden, weight, tokens))
    runnable: dict[str, Callable[..., Outputs]] = {}
    for name in args.methods:  # memory pass (untimed; also the warm-up) and value check
        fn = load_method(name, _method, _estimated_bytes(name, n, v, d), device, results)
        if fn is None:
            continue
        try:
            forward_peak, peak, values = peaks(fn, inputs, g1, g2, name != "ours_no_es")
        except Exception as error:  # a peer that imports but fails here: record, go on
            results[name] = {"skipped": f"failed: {type(error).__name__}: {error}"[:500]}
            hidden.grad = weight.grad = None
            continue
        entry: dict = {"forward_peak_bytes": forward_peak}
        if name != "ours_no_es":
            entry["forward_backward_peak_bytes"] = peak
        if values is not None:
            entry["max_abs_diff_vs_naive"] = max(
                (got - expected).abs().max().item()
                for got, expected in zip(values, reference, strict=True)
            )
        results[name], runnable[name] = entry, fn
    times: dict[str, list[dict[str, float]]] = {name: [] for name in runnable}
    for _ in range(args.warmup + args.repeat):  # round robin: load drift hits every method alike
        for name, fn in runnable.items():
            times[name].append(_timed(fn, inputs, g1, g2, name != "ours_no_es"))
    for name, samples in times.items():
        samples = samples[args.warmup :]
        for key in samples[0]:
            results[name][key] = min(sample[key] for sample in samples)
        print(name, json.dumps(results[name]), flush=True)
    # On a shared CPU, process CPU time is the robust measure of work (wall time counts other
    # users' load); on CUDA, wall time with synchronisation.
    clock = "cpu_s" if device.type == "cpu" else "s"
    return {
        "shape": {"n": n, "d": d, "v": v},
        **report_header(args, device),
        "naive_logits_bytes": n * v * 4,
        "gradient_output_bytes": (n * d + v * d) * torch.finfo(dtype).bits // 8,
        "ratio_clock": clock,
        "results": results,
        "ratios": _ratios(results, (n * d + v * d) * torch.finfo(dtype).bits // 8, clock),
    }


def _ratios(results: dict, grad_bytes: int, clock: str) -> dict[str, float]:
    ours, naive, floor = (
        results.get("ours", {}),
        results.get("naive", {}),
        results.get("matmul", {}),
    )
    fwd, total = f"forward_{clock}", f"forward_backward_{clock}"
    ratios: dict[str, float] = {}
    if fwd in ours and fwd in floor:
        ratios["ours_forward_over_matmul"] = ours[fwd] / floor[fwd]
        ratios["ours_fwd_bwd_over_matmul_fwd_bwd"] = ours[total] / floor[total]
    if fwd in ours and fwd in naive:
        ratios["ours_forward_over_naive"] = ours[fwd] / naive[fwd]
        ratios["ours_fwd_bwd_over_naive"] = ours[total] / naive[total]
        ratios["ours_forward_peak_over_naive"] = (
            ours["forward_peak_bytes"] / naive["forward_peak_bytes"]
        )
        ratios["ours_fwd_bwd_peak_over_naive"] = (
            ours["forward_backward_peak_bytes"] / naive["forward_backward_peak_bytes"]
        )
        ratios["ours_fwd_bwd_peak_over_naive_excluding_gradients"] = (
            ours["forward_backward_peak_bytes"] - grad_bytes
        ) / (naive["forward_backward_peak_bytes"] - grad_bytes)
    no_es = results.get("ours_no_es", {})
    if fwd in ours and fwd in no_es:
        ratios["expected_discriminator_forward_overhead"] = ours[fwd] / no_es[fwd] - 1
    return ratios


def markdown(report: dict) -> str:
    """The results as a Markdown table (times in s, memory in MiB, ratios vs matmul / naive)."""
    res, clock = report["results"], report["ratio_clock"]
    fwd_key, total_key = f"forward_{clock}", f"forward_backward_{clock}"
    floor, naive = res.get("matmul", {}), res.get("naive", {})
    unit = "CPU s" if clock == "cpu_s" else "s"
    lines = [
        f"| method | forward {unit} | fwd+bwd {unit} | fwd ÷ matmul | fwd+bwd ÷ naive "
        "| fwd peak MiB | fwd+bwd peak MiB | fwd peak ÷ naive | fwd+bwd peak ÷ naive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(value, base):
        return "–" if value is None or not base else f"{value / base:.3g}"

    def num(value, spec):
        return "–" if value is None else format(value, spec)

    for name, entry in res.items():
        if "skipped" in entry:
            lines.append(f"| {name} | skipped: {entry['skipped']} ||||||||")
            continue
        fwd, total = entry.get(fwd_key), entry.get(total_key)
        fpk, pk = entry.get("forward_peak_bytes"), entry.get("forward_backward_peak_bytes")
        cells = [
            num(fwd, ".3g"),
            num(total, ".3g"),
            ratio(fwd, floor.get(fwd_key)),
            ratio(total, naive.get(total_key)),
            num(fpk / 2**20, ".1f"),
            num(None if pk is None else pk / 2**20, ".1f"),
            ratio(fpk, naive.get("forward_peak_bytes")),
            ratio(pk, naive.get("forward_backward_peak_bytes")),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_arguments(parser, METHODS, "benchmarks/results/token_stats.json")
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs after the memory pass")
    run_and_write(parser.parse_args(), run, markdown)


if __name__ == "__main__":
    main()
