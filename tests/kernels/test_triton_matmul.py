"""kernels.triton_matmul: matmul kernels with the softmax statistics in their epilogue.

Without a GPU the kernels run through Triton's CPU interpreter (``TRITON_INTERPRET=1``, in a
fresh subprocess as in test_streaming) and are compiled ahead of time for sm_90. Checked against
float64 formulas on materialised logits of the same (rounded) inputs, at shapes no tile divides
(N 37, d 24, V 203 with 190 valid; tiles 16 × 32 × 16, 3 vocabulary splits).

Tolerances: float32 sums in another order than float64, and ``exp`` of the interpreter (numpy)
versus float64: statistics within ``rtol 1e-5, atol 5e-6`` (the streaming kernel's own
tolerance); ``grad_z`` within ``1e-5`` of its largest entry in float32 and ``1e-2`` in bf16
(the output's rounding, 2^-8 relative). bf16 inputs are exact in float64, so they share the
float32 tolerance for the statistics.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys

import pytest
import torch
from interpreter_helpers import run_under_interpreter

from entropy_dynamics.stats import token_stats_from_hidden

N, D, V, VALID = 37, 24, 203, 190
TILES = {"block_m": 16, "block_n": 32, "block_k": 16, "num_warps": 4}


def _case(dtype, seed, bias=True, n=N):
    """Inputs with logits of spread ~3; the padded rows of W are huge, so reading them shows."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, D, generator=gen, dtype=torch.float64) * 3 / math.sqrt(D)
    weight = torch.randn(V, D, generator=gen, dtype=torch.float64)
    weight[VALID:] = 1e3
    b = torch.randn(V, generator=gen, dtype=torch.float64) if bias else None
    tokens = torch.randint(0, VALID, (n,), generator=gen)
    tokens[:3] = torch.tensor([0, VALID - 1, 32])  # first and last valid column, a tile edge
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), tokens


def _logits64(hidden, weight, bias, temperature):
    """``x = (h Wᵀ + b) / T`` in float64 over the valid columns, from the rounded inputs."""
    z = hidden.double() @ weight[:VALID].double().T
    return (z if bias is None else z + bias[:VALID].double()) / temperature


def _reference(x, tokens):
    """``(log p_k, H, S_k, E_p[S])`` by the direct float64 formulas (no power sums)."""
    log_p = torch.log_softmax(x, -1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(-1)
    log_p_k = log_p.gather(-1, tokens[:, None]).squeeze(-1)
    s_k = log_p_k.exp() * (entropy + log_p_k)
    e_s = (p * p * (entropy[:, None] + log_p)).sum(-1)
    return log_p_k, entropy, s_k, e_s


def _close(got, expected, msg):
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=5e-6, msg=msg)


def _check_power_sums() -> None:
    from entropy_dynamics.kernels import LMHead
    from entropy_dynamics.kernels.power_sums import finalize
    from entropy_dynamics.kernels.triton_matmul import matmul_power_sums

    for dtype in (torch.float32, torch.bfloat16):
        for bias in (True, False):
            for temperature in (0.7, 1.0):
                hidden, weight, b, tokens = _case(dtype, seed=1, bias=bias)
                head = LMHead(weight, b, temperature, VALID)
                sums, x_k = matmul_power_sums(hidden, head, tokens, True, splits=3, **TILES)
                x = _logits64(hidden, weight, b, temperature)
                expected = (*_reference(x, tokens), torch.logsumexp(x, -1))
                name = f"{dtype} bias={bias} T={temperature}"
                for got, value in zip(finalize(sums, x_k), expected, strict=True):
                    _close(got, value, name)
    # without E_p[S]: C = D = 0 and the rest unchanged; one split and the default split count
    hidden, weight, b, tokens = _case(torch.float32, seed=2)
    expected = _reference(_logits64(hidden, weight, b, 0.7), tokens)
    for splits, with_es in ((1, False), (None, True)):
        sums, x_k = matmul_power_sums(
            hidden, LMHead(weight, b, 0.7, VALID), tokens, with_es, splits=splits, **TILES
        )
        log_p_k, entropy, _s_k, e_s, _lse = finalize(sums, x_k)
        _close(log_p_k, expected[0], f"splits={splits}")
        _close(entropy, expected[1], f"splits={splits}")
        assert with_es or ((sums[3] == 0).all() and (sums[4] == 0).all() and (e_s == 0).all())
    # very peaked rows (logits of spread ~300): no overflow, no NaN from the masked columns
    sums, x_k = matmul_power_sums(hidden * 100, LMHead(weight, b, 1.0, VALID), tokens, True,
                                  **TILES)  # fmt: skip
    expected = _reference(_logits64(hidden * 100, weight, b, 1.0), tokens)
    for got, value in zip(finalize(sums, x_k)[:4], expected, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), value, rtol=1e-5, atol=1e-4)


def _check_logit_grad() -> None:
    """The kernel's grad_z against the one formula (``logit_grad_``) in float64."""
    from entropy_dynamics.kernels import LMHead
    from entropy_dynamics.kernels.logit_grad import grad_coefficients, logit_grad_
    from entropy_dynamics.kernels.triton_matmul import matmul_logit_grad

    gen = torch.Generator().manual_seed(3)
    g1, g2 = torch.randn(2, N, generator=gen, dtype=torch.float64)
    for dtype, out_dtype, tol in ((torch.float32, torch.float32, 1e-5),
                                  (torch.bfloat16, torch.bfloat16, 1e-2)):  # fmt: skip
        hidden, weight, b, tokens = _case(dtype, seed=4)
        x = _logits64(hidden, weight, b, 0.8)
        row_max, log_a = x.amax(-1), torch.logsumexp(x - x.amax(-1, keepdim=True), -1)
        log_p = torch.log_softmax(x, -1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        expected = logit_grad_(log_p.clone(), entropy, g1, g2, tokens, 1 / 0.8)
        coefficients = torch.stack([row_max, *grad_coefficients(log_a, entropy, g1, g2, 1 / 0.8)])
        coefficients = coefficients.float().contiguous()
        head = LMHead(weight, b, 0.8, VALID)  # the valid columns [0, VALID)
        for width in (VALID, 208):  # exact, and padded to a multiple of 16 (padding gets 0)
            out = torch.full((N, width), float("nan"), dtype=out_dtype)
            matmul_logit_grad(hidden, head, tokens, coefficients, out, **TILES)
            error = (out[:, :VALID].double() - expected).abs().max()
            assert error <= tol * expected.abs().max(), (dtype, width, float(error))
            assert (out[:, VALID:] == 0).all()


def _check_block() -> None:
    """``triton_matmul_block`` against ``loss_blocks.torch_block`` run in float64."""
    from entropy_dynamics.kernels import LMHead
    from entropy_dynamics.kernels.loss_blocks import torch_block
    from entropy_dynamics.kernels.triton_matmul import triton_matmul_block

    gen = torch.Generator().manual_seed(5)
    g1, g2 = torch.randn(2, N, generator=gen, dtype=torch.float64)
    for dtype, with_es, tol in ((torch.float32, True, 1e-5), (torch.float32, False, 1e-5),
                                (torch.bfloat16, True, 1e-2)):  # fmt: skip
        hidden, weight, b, tokens = _case(dtype, seed=6)
        ref, ref_grad_fn = torch_block(
            LMHead(weight.double(), b.double(), 0.7, VALID), hidden.double(), tokens, with_es
        )
        got, grad_fn = triton_matmul_block(
            LMHead(weight, b, 0.7, VALID), hidden, tokens, with_es, splits=2, **TILES
        )
        for a, e in zip(got, ref, strict=True):
            assert a.dtype == torch.float32
            _close(a, e, f"{dtype} with_es={with_es}")
        grad, expected = grad_fn(g1.float(), g2.float()), ref_grad_fn(g1, g2)
        assert grad.shape == (N, VALID) and grad.dtype == dtype
        assert (grad.double() - expected).abs().max() <= tol * expected.abs().max()


def _check_streaming_backend() -> None:
    """``backend="triton-matmul"`` against ``"torch"``: forward (default tiles) and backward."""
    hidden, weight, b, tokens = _case(torch.float32, seed=7, n=45)
    gen = torch.Generator().manual_seed(8)
    w1, w2 = torch.randn(2, 45, generator=gen)
    results = {}
    for backend in ("triton-matmul", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, b)]
        out = token_stats_from_hidden(
            *leaves[:2], tokens, 1.3, bias=leaves[2], entropy_grad=True, valid_vocab=VALID,
            vocab_chunk=150, row_chunk=20, backend=backend,
        )  # fmt: skip
        ((w1 * out.logprobs).sum() + (w2 * out.entropy).sum()).backward()
        results[backend] = out, [t.grad for t in leaves]
    (got, grads), (ref, ref_grads) = results["triton-matmul"], results["torch"]
    for name in ("logprobs", "entropy", "discriminator", "expected_discriminator"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=5e-6)
    for a, e in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
    assert (grads[1][VALID:] == 0).all()


def _triton_checks() -> None:
    _check_power_sums()
    _check_logit_grad()
    _check_block()
    _check_streaming_backend()
    assert "entropy_dynamics.kernels.triton_matmul" in sys.modules  # the kernels did run


def test_kernels_through_the_cpu_interpreter() -> None:
    run_under_interpreter("test_triton_matmul")


def test_the_new_backend_is_opt_in_and_refused_without_triton_or_cuda(monkeypatch) -> None:
    from entropy_dynamics.kernels.chunking import resolve_backend

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden = torch.zeros(2, 4)
    assert resolve_backend("auto", hidden) == "torch"  # "auto" never picks it (CPU: torch)
    assert resolve_backend("torch", hidden) == "torch"
    with pytest.raises(ValueError, match="backend='triton-matmul' needs"):
        token_stats_from_hidden(hidden, torch.zeros(5, 4), torch.arange(2), backend="triton-matmul")
    with pytest.raises(ValueError, match="'triton-matmul', got 'cuda'"):
        token_stats_from_hidden(hidden, torch.zeros(5, 4), torch.arange(2), backend="cuda")
    with pytest.raises(ValueError, match="backend='triton' needs"):
        resolve_backend("triton", hidden)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the interpreter makes them runnable on CPU
    assert resolve_backend("triton-matmul", hidden) == "triton-matmul"
    assert resolve_backend("auto", hidden) == "torch"  # but never the choice of "auto" on CPU
    with pytest.raises(ValueError, match="does not take float64"):
        resolve_backend("triton-matmul", hidden.double())


def test_kernels_compile_for_an_h100_without_a_gpu() -> None:
    # The interpreter forgives what the compiler refuses; compile both kernels for sm_90 with the
    # argument specialisation the JIT gives Qwen-sized tensors (pointers, d, strides and the
    # padded width divisible by 16; unit strides constant) and check that the K loop is
    # software-pipelined: cp.async into num_stages shared-memory buffers (without that
    # specialisation Triton emits scalar loads and a single buffer).
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("compiling needs triton outside interpreter mode")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from entropy_dynamics.kernels import triton_matmul

    def signature(dtype, out_dtype):
        ptr = f"*{dtype}"
        return {
            "h_ptr": ptr, "w_ptr": ptr, "bias_ptr": ptr, "tokens_ptr": "*i64",
            "partial_ptr": "*fp32", "coef_ptr": "*fp32", "out_ptr": f"*{out_dtype}",
            "n_rows": "i32", "valid_vocab": "i32", "n_cols": "i32", "out_cols": "i32",
            "dim": "i32", "split_cols": "i32", "inv_t": "fp32", "stride_hn": "i32",
            "stride_wv": "i32", "stride_on": "i32",
        }  # fmt: skip

    aligned = {"h_ptr", "w_ptr", "bias_ptr", "tokens_ptr", "partial_ptr", "coef_ptr", "out_ptr",
               "dim", "split_cols", "out_cols", "stride_hn", "stride_wv", "stride_on"}  # fmt: skip
    fixed = {"UPCAST": False, "stride_hd": 1, "stride_wd": 1, "HAS_BIAS": True}
    default = dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), (128, 128, 64), strict=True))
    stats = {**default, "BLOCK_M": 64}  # triton_stats' tiles (the measured "triton" path)
    fp32 = dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K"), triton_matmul.FLOAT32_TILES, strict=True))
    cases = [
        (triton_matmul._power_sums_kernel, "bf16", "bf16", {"WITH_ES": True, **default}),
        (triton_matmul._power_sums_kernel, "bf16", "bf16", {"WITH_ES": False, **default}),
        (triton_matmul._power_sums_kernel, "bf16", "bf16", {"WITH_ES": True, **stats}),
        (triton_matmul._power_sums_kernel, "fp32", "fp32", {"WITH_ES": True, **fp32}),
        (triton_matmul._logit_grad_kernel, "bf16", "bf16", default),
        (triton_matmul._logit_grad_kernel, "bf16", "fp32", stats),  # triton_stats' backward
        (triton_matmul._logit_grad_kernel, "fp32", "fp32", fp32),
    ]
    for fn, dtype, out_dtype, extra in cases:
        precision = "ieee" if dtype == "fp32" else "tf32"
        constexprs = {**fixed, **extra, "PRECISION": precision}
        types = {**signature(dtype, out_dtype), **dict.fromkeys(constexprs, "constexpr")}
        ordered = {name: types[name] for name in fn.arg_names}
        attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned & {*ordered}}
        stages = 3 if dtype == "bf16" else 2
        source = ASTSource(fn=fn, signature=ordered, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(
            source,
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": 8, "num_stages": stages},
        )
        ptx = compiled.asm["ptx"]
        block_m, block_n, block_k = extra["BLOCK_M"], extra["BLOCK_N"], extra["BLOCK_K"]
        tile_bytes = (block_m + block_n) * block_k * (2 if dtype == "bf16" else 4)
        assert "cp.async" in ptx, (fn.__name__, dtype)
        if dtype == "bf16":  # three buffers in flight; float32 (IEEE, no tensor cores) has one
            assert compiled.metadata.shared >= stages * tile_bytes, fn.__name__
            assert "wgmma.mma_async" in ptx  # Hopper tensor cores
