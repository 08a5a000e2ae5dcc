"""The GRPO policy loss from hidden states: time and peak memory, ours vs the peers, one run.

Every method starts from the same final hidden states ``(B, T, d)``, lm_head weight ``(V, d)``,
sampled tokens, old log-probs, advantages and keep-mask, and returns the PPO-clip loss (clip-higher
0.28, dual clip 3, token-mean, as the trainer's default loss config with those options); the
backward goes to ``hidden`` and ``weight``.

- ``matmul``: the bare lm_head matmul ``h Wᵀ`` and its two backward matmuls — the floor.
- ``naive``: materialised float32 logits, ``log_softmax``, entropy, our registered loss.
- ``ours_stats``: :func:`stats.token_stats_from_hidden` (fused statistics, backward recomputes
  every block) + the registered loss — the trainer's path before issue 16.
- ``ours_fused`` / ``ours_fused_es``: :func:`losses.fused_policy_loss`, loss and
  gradient in one pass (three matmuls, the two gradient ones on the rows with a gradient only);
  ``_es`` also computes ``E_p[S]`` (prices it). On CUDA the block work runs in Triton;
  ``ours_fused_torch`` (CUDA only) is the same pass in torch ops, ``ours_fused_matmul`` (CUDA
  only) with the opt-in ``triton-matmul`` kernels (statistics in the matmul's epilogue).
  ``ours_fused_keep_all`` keeps every token (a different loss: no filter), so only binding clips
  leave rows out: the price of the pass when almost every row has a gradient.
- ``trl``: TRL's fused LM head (``trl.kernels.ChunkedLogProbFunction``: log p_k and H, no
  E_p[S]; Triton on CUDA, torch elsewhere) + the registered loss.
- ``verl``: verl's ``FusedLinearForPPO`` (log p_k and H) + the registered loss.
- ``liger``: Liger-Kernel's ``LigerFusedLinearGRPOLoss`` (its own PPO-clip loss, ``dapo`` =
  token-mean; it takes no keep-mask, so it trains every token; no dual clip; not
  ``torch.compile``d, to keep compile time out of the GPU check's budget).

The peers are imported only when importable (``"not importable: ..."`` otherwise). Keep them out of
the project's environment: a separate venv with ``--system-site-packages`` (docs/performance.md).
Forward time is taken with autograd on; each time is the median over ``--repeat`` runs taken
round robin over the methods; peak memory comes from a separate untimed run, also the warm-up
(:mod:`benchmarks._measure`). On CPU the ratio clock is process CPU time (the machine is shared).

    python benchmarks/policy_loss.py                    # quick shape
    python benchmarks/policy_loss.py --full             # N=4096, d=1536, V=151936
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
from _measure import (
    cpu_peaks,
    cuda_peaks,
    load_method,
    machine_load,
    report_header,
    resolve_case,
    run_and_write,
    shape_arguments,
    timed,
)
from _peers import trl_chunked_logprob, verl_fused_linear_for_ppo

from entropy_dynamics import stats
from entropy_dynamics.kernels import Chunking, LMHead
from entropy_dynamics.losses import (
    PolicyLossConfig,
    PolicyLossInputs,
    compute_policy_loss,
    fused_policy_loss,
)

QUICK = {"n": 1024, "d": 512, "v": 32768}
FULL = {"n": 4096, "d": 1536, "v": 151936}
SEQ_LEN = 256  # positions per sequence: N = B · SEQ_LEN
METHODS = (
    "matmul",
    "naive",
    "ours_stats",
    "ours_fused",
    "ours_fused_es",
    "ours_fused_torch",
    "ours_fused_matmul",
    "ours_fused_keep_all",
    "trl",
    "verl",
    "liger",
)
CONFIG = PolicyLossConfig(eps_high=0.28, dual_clip_c=3.0)
TEMPERATURE = 1.0


class Case:
    """The shared inputs: ``h (B, T, d)``, ``w (V, d)``, ``tokens``, ``old``, ``adv``, ``mask``,
    ``keep`` ``(B, T)`` and ``seq_adv (B,)``."""

    def __init__(self, n: int, d: int, v: int, device, dtype, config: PolicyLossConfig) -> None:
        gen = torch.Generator().manual_seed(0)
        b, t = max(n // SEQ_LEN, 1), min(n, SEQ_LEN)
        self.config = config
        # Hidden states of unit RMS and logits of spread ~3: peaked, realistic rows.
        h = torch.randn(b, t, d, generator=gen)
        self.h = h.to(device, dtype).requires_grad_(True)
        self.w = (torch.randn(v, d, generator=gen) * 3 / d**0.5).to(device, dtype)
        self.w.requires_grad_(True)
        self.tokens = torch.randint(0, v, (b, t), generator=gen).to(device)
        self.mask = torch.ones(b, t, dtype=torch.bool, device=device)
        self.keep = (torch.rand(b, t, generator=gen) > 0.2).to(device)  # a filter kept 80 %
        self.seq_adv = torch.randn(b, generator=gen).to(device)
        self.adv = self.seq_adv[:, None].expand(b, t).contiguous()
        with torch.no_grad():  # the rollout policy: the current one, slightly moved
            current = stats.token_stats_from_hidden(self.h, self.w, self.tokens, TEMPERATURE)
        noise = 0.1 * torch.randn(b, t, generator=gen).to(device)
        self.old = current.logprobs.float() + noise

    def live_share(self) -> dict[str, float]:
        """Shares of the tokens the filter kept and of those with a gradient (kept, no binding
        clip): the rows the fused loss's gradient matmuls take."""
        with torch.no_grad():
            current = stats.token_stats_from_hidden(self.h, self.w, self.tokens, TEMPERATURE)
        log_p = current.logprobs.float().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.loss(log_p, current.entropy.float()), log_p)
        return {"kept": self.keep.float().mean().item(), "live": (grad != 0).float().mean().item()}

    def loss(self, log_p: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """The registered ``ppo`` loss of ``(B, T)`` log-probs and entropies."""
        shape = self.mask.shape
        log_p, entropy = log_p.reshape(shape).float(), entropy.reshape(shape).float()
        zeros = torch.zeros_like(log_p)
        token_stats = stats.TokenStats(log_p, entropy, zeros, zeros)
        inputs = PolicyLossInputs(log_p, self.old, self.adv, self.mask, token_stats, self.keep)
        return compute_policy_loss(self.config, inputs).loss


Forward = Callable[[Case], torch.Tensor]


def _matmul(c: Case) -> torch.Tensor:
    return c.h @ c.w.T


def _naive(c: Case) -> torch.Tensor:
    logits = (c.h @ c.w.T).float()  # (B, T, V)
    logits = logits if TEMPERATURE == 1.0 else logits / TEMPERATURE
    log_p = torch.log_softmax(logits, -1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return c.loss(log_p.gather(-1, c.tokens.unsqueeze(-1)).squeeze(-1), entropy)


def _ours_stats(c: Case) -> torch.Tensor:
    entropy_grad = c.config.entropy_coef != 0
    out = stats.token_stats_from_hidden(c.h, c.w, c.tokens, TEMPERATURE, entropy_grad=entropy_grad)
    return c.loss(out.logprobs, out.entropy)


def _ours_fused(with_es: bool, backend: str = "auto", keep_all: bool = False) -> Forward:
    def run(c: Case) -> torch.Tensor:
        keep = c.mask if keep_all else c.keep
        args = (c.config, c.h, LMHead(c.w, None, TEMPERATURE), c.tokens, c.old, c.adv, c.mask, keep)
        out, _ = fused_policy_loss(
            *args, chunking=Chunking(backend=backend), expected_discriminator=with_es
        )
        return out.loss

    return run


def _trl() -> Forward:
    function, chunk = trl_chunked_logprob()

    def run(c: Case) -> torch.Tensor:
        flat_h, flat_t = c.h.reshape(-1, c.h.shape[-1]), c.tokens.reshape(-1)
        out = function.apply(flat_h, c.w, None, flat_t, TEMPERATURE, chunk, None, 1.0, ("entropy",))
        return c.loss(out[0], out[1])

    return run


def _verl() -> Forward:
    head = verl_fused_linear_for_ppo()()  # verl's default chunk_size 512

    def run(c: Case) -> torch.Tensor:
        log_p, entropy = head(c.h, c.w, c.tokens, TEMPERATURE)
        return c.loss(log_p, entropy)

    return run


def _liger() -> Forward:
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    def run(c: Case) -> torch.Tensor:
        loss_fn = LigerFusedLinearGRPOLoss(
            beta=0.0,
            use_ref_model=False,
            compiled=False,
            epsilon_low=c.config.eps_low,
            epsilon_high=c.config.eps_high,
            loss_type="dapo",  # token-mean
            temperature=TEMPERATURE,
        )
        mask = c.mask.to(c.h.dtype)
        return loss_fn(c.h, c.w, c.tokens, mask, c.seq_adv, old_per_token_logps=c.old)[0]

    return run


def _method(name: str) -> Forward:
    plain = {
        "matmul": _matmul,
        "naive": _naive,
        "ours_stats": _ours_stats,
        "ours_fused": _ours_fused(False),
        "ours_fused_es": _ours_fused(True),
        "ours_fused_torch": _ours_fused(False, "torch"),
        "ours_fused_matmul": _ours_fused(False, "triton-matmul"),
        "ours_fused_keep_all": _ours_fused(False, keep_all=True),
    }
    return plain[name] if name in plain else {"trl": _trl, "verl": _verl, "liger": _liger}[name]()


def _backward(out: torch.Tensor) -> None:
    out.backward(out.detach() if out.dim() else None)  # the matmul floor: its own output


def _estimated_bytes(name: str, n: int, v: int, d: int) -> int:
    """Rough peak for the materialising methods (float32 copies of [N, V]), to skip, not OOM."""
    copies = {"naive": 6, "matmul": 2}.get(name, 0)
    return copies * n * v * 4 + 2 * v * d * 4


def run(args: argparse.Namespace) -> dict:
    n, d, v, device, dtype = resolve_case(args, QUICK, FULL)
    config = PolicyLossConfig(eps_high=0.28, dual_clip_c=3.0, entropy_coef=args.entropy_coef)
    case = Case(n, d, v, device, dtype, config)
    peaks = cuda_peaks if device.type == "cuda" else cpu_peaks
    load_before = machine_load()
    token_shares = case.live_share()
    print("token shares", json.dumps(token_shares), flush=True)
    results: dict[str, dict] = {}
    runnable: dict[str, Forward] = {}
    reference = None
    for name in args.methods:  # memory pass (untimed; also the warm-up) and value check
        if name in ("ours_fused_torch", "ours_fused_matmul") and device.type != "cuda":
            results[name] = {"skipped": "CUDA only (on CPU ours_fused is the torch backend)"}
            continue
        fn = load_method(name, _method, _estimated_bytes(name, n, v, d), device, results)
        if fn is None:
            continue
        case.h.grad = case.w.grad = None
        try:
            forward_peak, peak, out = peaks(lambda fn=fn: fn(case), _backward)
        except Exception as error:  # a peer that imports but fails here: record, go on
            results[name] = {"skipped": f"failed: {type(error).__name__}: {error}"[:500]}
            case.h.grad = case.w.grad = None
            continue
        entry: dict = {"forward_peak_bytes": forward_peak, "forward_backward_peak_bytes": peak}
        if out.dim() == 0:
            entry["loss"] = out.item()
            grad = case.h.grad.float()
            if reference is None and name == "naive":
                reference = (out.item(), grad.clone())
            if reference is not None:
                entry["loss_diff_vs_naive"] = abs(out.item() - reference[0])
                entry["grad_hidden_max_rel_diff_vs_naive"] = (
                    (grad - reference[1]).abs().max() / reference[1].abs().max()
                ).item()
        del out
        case.h.grad = case.w.grad = None
        results[name], runnable[name] = entry, fn
    times: dict[str, list[dict[str, float]]] = {name: [] for name in runnable}
    for _ in range(args.repeat):  # round robin: load drift hits every method alike
        for name, fn in runnable.items():
            times[name].append(timed(lambda fn=fn: fn(case), _backward, device))
            case.h.grad = case.w.grad = None
    for name, samples in times.items():
        for key in samples[0]:
            results[name][key] = statistics.median(sample[key] for sample in samples)
        print(name, json.dumps(results[name]), flush=True)
    clock = "cpu_s" if device.type == "cpu" else "s"
    return {
        "shape": {"n": n, "d": d, "v": v, "batch": case.h.shape[0], "seq_len": case.h.shape[1]},
        **report_header(args, device),
        "loss_config": {"eps_high": 0.28, "dual_clip_c": 3.0, "entropy_coef": args.entropy_coef},
        "token_shares": token_shares,
        "machine_load_before": load_before,
        "naive_logits_bytes": n * v * 4,
        "gradient_output_bytes": (n * d + v * d) * torch.finfo(dtype).bits // 8,
        "ratio_clock": clock,
        "results": results,
        "ratios": ratios(results, (n * d + v * d) * torch.finfo(dtype).bits // 8, clock),
    }


def ratios(results: dict, grad_bytes: int, clock: str) -> dict[str, float]:
    """Ours over the floor, naive and each peer, in the same run."""
    fwd, total = f"forward_{clock}", f"forward_backward_{clock}"
    ours = results.get("ours_fused", {})
    out: dict[str, float] = {}
    if total not in ours:
        return out
    for name, entry in results.items():
        if name != "ours_fused" and total in entry:
            out[f"ours_fused_fwd_bwd_over_{name}"] = ours[total] / entry[total]
    floor, naive = results.get("matmul", {}), results.get("naive", {})
    if fwd in floor:
        out["ours_fused_forward_over_matmul_forward"] = ours[fwd] / floor[fwd]
        out["ours_fused_fwd_bwd_over_matmul_fwd_bwd"] = ours[total] / floor[total]
    if total in naive:
        out["ours_fused_fwd_bwd_peak_over_naive"] = (
            ours["forward_backward_peak_bytes"] / naive["forward_backward_peak_bytes"]
        )
        out["ours_fused_fwd_bwd_peak_over_naive_excluding_gradients"] = (
            ours["forward_backward_peak_bytes"] - grad_bytes
        ) / (naive["forward_backward_peak_bytes"] - grad_bytes)
    with_es = results.get("ours_fused_es", {})
    if total in with_es:
        out["expected_discriminator_fwd_bwd_overhead"] = with_es[total] / ours[total] - 1
    return out


def markdown(report: dict) -> str:
    """The results as a Markdown table (times in s, memory in MiB, ratios of ours_fused)."""
    res, clock = report["results"], report["ratio_clock"]
    fwd_key, total_key = f"forward_{clock}", f"forward_backward_{clock}"
    ours, naive = res.get("ours_fused", {}), res.get("naive", {})
    unit = "CPU s" if clock == "cpu_s" else "s"
    lines = [
        f"| method | forward {unit} | fwd+bwd {unit} | ours_fused ÷ it (fwd+bwd) "
        "| fwd+bwd peak MiB | peak ÷ naive | loss diff vs naive |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in res.items():
        if "skipped" in entry:
            lines.append(f"| {name} | skipped: {entry['skipped']} ||||||")
            continue
        total, peak = entry.get(total_key), entry["forward_backward_peak_bytes"]
        naive_peak = naive.get("forward_backward_peak_bytes")
        cells = [
            f"{entry[fwd_key]:.3g}",
            f"{total:.3g}",
            f"{ours[total_key] / total:.3g}" if total_key in ours else "–",
            f"{peak / 2**20:.1f}",
            f"{peak / naive_peak:.3g}" if naive_peak else "–",
            f"{entry['loss_diff_vs_naive']:.2g}" if "loss_diff_vs_naive" in entry else "–",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_arguments(parser, METHODS, "benchmarks/results/policy_loss.json")
    parser.add_argument("--entropy-coef", type=float, default=0.0, help="entropy bonus")
    run_and_write(parser.parse_args(), run, markdown)


if __name__ == "__main__":
    main()
