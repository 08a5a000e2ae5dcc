"""kernels.fused_loss: a loss of (log p_k, H) with its gradient formed in the forward pass.

Checked against torch autograd through materialised logits (``stats.token_stats``), by float64
gradcheck, for row blocks that do not divide N, a padded vocabulary and T ≠ 1.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from interpreter_helpers import run_under_interpreter

from entropy_dynamics.kernels import Chunking, LMHead, default_loss_row_chunk, fused_linear_loss
from entropy_dynamics.stats import token_stats

N, D, V, VALID = 11, 5, 19, 16


def _case(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(V, D, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(V, generator=gen, dtype=torch.float64).to(dtype)
    tokens = torch.randint(0, VALID, (N,), generator=gen)
    c1, c2 = torch.randn(2, N, generator=gen, dtype=torch.float64)
    return hidden, weight, bias, tokens, c1, c2


def _smooth_loss(c1, c2):
    """A non-linear per-token loss of both statistics: Σ c1 p_k + c2 H²."""

    def loss(rows, log_p, entropy):
        return (c1[rows].to(log_p) * log_p.exp() + c2[rows].to(log_p) * entropy.square()).sum()

    return loss


@pytest.mark.parametrize("row_chunk", [1, 4, 11, 64])
def test_matches_autograd_through_materialised_logits(row_chunk) -> None:
    hidden, weight, bias, tokens, c1, c2 = _case()
    leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    loss, log_p, entropy, s_k, e_s = fused_linear_loss(
        leaves[0], LMHead(leaves[1], leaves[2], 0.6, VALID), tokens, _smooth_loss(c1, c2),
        chunking=Chunking(row_chunk=row_chunk),
    )  # fmt: skip
    grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    h, w, b = ref_leaves
    stats = token_stats((h @ w.T + b)[:, :VALID], tokens, 0.6, entropy_grad=True)
    ref = (c1 * stats.logprobs.exp() + c2 * stats.entropy.square()).sum()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-13, atol=1e-13)
    for got, expected in zip(grads, torch.autograd.grad(ref, ref_leaves), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)
    assert grads[1][VALID:].abs().max() == 0 and grads[2][VALID:].abs().max() == 0
    for got, name in ((log_p, "logprobs"), (entropy, "entropy"), (s_k, "discriminator"),
                      (e_s, "expected_discriminator")):  # fmt: skip
        torch.testing.assert_close(got, getattr(stats, name).detach(), rtol=1e-12, atol=1e-13)
    assert not log_p.requires_grad


def test_gradcheck() -> None:
    hidden, weight, bias, tokens, c1, c2 = _case(seed=1)
    loss_fn = _smooth_loss(c1, c2)

    def loss(h, w, b):
        chunks = Chunking(row_chunk=3)
        return fused_linear_loss(h, LMHead(w, b, 1.7), tokens, loss_fn, chunking=chunks)[0]

    leaves = tuple(t.clone().requires_grad_(True) for t in (hidden, weight, bias))
    assert torch.autograd.gradcheck(loss, leaves)


def test_float32_and_bfloat16_follow_float64() -> None:
    hidden, weight, _bias, tokens, c1, c2 = _case(seed=2)
    loss_fn = _smooth_loss(c1, c2)
    chunks = Chunking(row_chunk=4)
    ref = fused_linear_loss(hidden.requires_grad_(True), LMHead(weight), tokens, loss_fn,
                            chunking=chunks)  # fmt: skip
    (ref_grad,) = torch.autograd.grad(ref[0], hidden)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        h = hidden.detach().to(dtype).requires_grad_(True)
        out = fused_linear_loss(h, LMHead(weight.to(dtype)), tokens, loss_fn, chunking=chunks)
        assert out[1].dtype == torch.float32  # float32 statistics for half inputs
        (grad,) = torch.autograd.grad(out[0], h)
        assert grad.dtype == dtype
        scale = ref_grad.abs().max().item()
        assert (grad.double() - ref_grad).abs().max().item() <= tol * scale
        assert abs(out[0].item() - ref[0].item()) <= tol * (1 + abs(ref[0].item()))


def test_without_expected_discriminator_and_without_grad() -> None:
    hidden, weight, _bias, tokens, c1, c2 = _case()
    with torch.no_grad():
        loss, _log_p, entropy, _, e_s = fused_linear_loss(
            hidden.requires_grad_(True), LMHead(weight), tokens, _smooth_loss(c1, c2),
            expected_discriminator=False,
        )  # fmt: skip
    stats = token_stats(hidden.detach() @ weight.T, tokens)
    torch.testing.assert_close(entropy, stats.entropy, rtol=1e-12, atol=1e-13)
    assert (e_s == 0).all() and not loss.requires_grad


@pytest.mark.parametrize("row_chunk", [2, 4, 64])
def test_rows_without_gradient_and_positions_left_out(row_chunk) -> None:
    # Zero weights on some rows (a keep-mask), a whole block of them, and positions left out
    # (padding): the same loss and gradients as autograd through materialised logits on the
    # computed positions; the left-out ones never reach the loss and get 0 everywhere.
    hidden, weight, bias, tokens, c1, c2 = _case(seed=3)
    c1[[0, 2, 3, 7]] = 0  # rows 2-3: a dead block at row_chunk 2 (positions skip 1)
    c2[[0, 2, 3, 7]] = 0
    positions = torch.ones(N, dtype=torch.bool)
    positions[[1, 9]] = False
    seen = []
    smooth = _smooth_loss(c1, c2)

    def loss_fn(rows, log_p, entropy):
        seen.append(torch.arange(N)[rows])
        return smooth(rows, log_p, entropy)

    leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    out = fused_linear_loss(
        leaves[0], LMHead(leaves[1], leaves[2], 0.8, VALID), tokens, loss_fn,
        chunking=Chunking(row_chunk=row_chunk), positions=positions,
    )  # fmt: skip
    grads = torch.autograd.grad(out[0], leaves)
    assert torch.equal(torch.cat(seen), positions.nonzero().squeeze(1))
    ref_leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    h, w, b = ref_leaves
    stats = token_stats((h[positions] @ w.T + b)[:, :VALID], tokens[positions], 0.8,
                        entropy_grad=True)  # fmt: skip
    ref = (c1[positions] * stats.logprobs.exp() + c2[positions] * stats.entropy.square()).sum()
    torch.testing.assert_close(out[0], ref.detach(), rtol=1e-13, atol=1e-13)
    for got, expected in zip(grads, torch.autograd.grad(ref, ref_leaves), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)
    assert grads[0][~positions].abs().max() == 0 and grads[0][[0, 2, 3, 7]].abs().max() == 0
    torch.testing.assert_close(out[2][positions], stats.entropy.detach(), rtol=1e-12, atol=1e-13)
    assert all((x[~positions] == 0).all() for x in out[1:])


def test_no_live_row_means_no_gradient() -> None:
    hidden, weight, _bias, tokens, _c1, _c2 = _case()
    leaves = [t.clone().requires_grad_(True) for t in (hidden, weight)]
    zero_loss = lambda rows, lp, h: (0 * lp).sum()  # noqa: E731
    out = fused_linear_loss(leaves[0], LMHead(leaves[1]), tokens, zero_loss,
                            chunking=Chunking(row_chunk=4))  # fmt: skip
    grads = torch.autograd.grad(out[0], leaves)
    assert out[0].item() == 0 and all(g.abs().max() == 0 for g in grads)


def test_default_row_chunk_bounds_the_block() -> None:
    cpu = default_loss_row_chunk(151_936, torch.device("cpu"))
    assert cpu >= 16 and cpu * 151_936 * 4 <= 1 << 27
    assert default_loss_row_chunk(10, torch.device("cpu")) * 10 * 4 <= 1 << 27


def test_bad_input_is_refused() -> None:
    hidden, weight, _bias, tokens, c1, c2 = _case()
    head = LMHead(weight)
    with pytest.raises(ValueError, match="row_chunk"):
        fused_linear_loss(hidden, head, tokens, _smooth_loss(c1, c2),
                          chunking=Chunking(row_chunk=0))  # fmt: skip
    with pytest.raises(ValueError, match="temperature"):
        fused_linear_loss(hidden, LMHead(weight, None, 0.0), tokens, _smooth_loss(c1, c2))
    with pytest.raises(ValueError, match="token ids"):
        fused_linear_loss(hidden, LMHead(weight, valid_vocab=VALID), tokens + VALID,
                          _smooth_loss(c1, c2))  # fmt: skip
    with pytest.raises(ValueError, match="positions must be a bool mask"):
        fused_linear_loss(hidden, head, tokens, _smooth_loss(c1, c2),
                          positions=(tokens > 3).float())  # fmt: skip
    with pytest.raises(ValueError, match="positions must be a bool mask"):
        fused_linear_loss(hidden, head, tokens, _smooth_loss(c1, c2),
                          positions=torch.ones(N + 1, dtype=torch.bool))  # fmt: skip


# ---- Triton block kernels through the CPU interpreter ---------------------------------------
# As in test_streaming: TRITON_INTERPRET must be set before triton is first imported, so the
# checks run in a fresh interpreter.


def _triton_checks() -> None:
    """The Triton backend against the float64 torch backend: loss, the four statistics and the
    gradients, with and without E_p[S], with and without an entropy term, float32 and bf16."""
    hidden, weight, bias, tokens, c1, c2 = _case(seed=4)
    hidden, weight, bias = hidden * 0.8, weight * 2, bias * 3  # peaked rows: large logits
    dead = c1.clone()
    dead[[1, 2, 3, 6]] = 0  # rows without a gradient: left out of the gradient matmuls
    losses = {
        "both": _smooth_loss(c1, c2),
        "log_p only": lambda rows, lp, h: (c1[rows].to(lp) * lp).sum(),
        "dead rows": lambda rows, lp, h: (dead[rows].to(lp) * lp).sum(),
    }
    cases = [(n, e, k) for n in losses.items() for e in (True, False)
             for k in ("triton", "triton-matmul")]  # fmt: skip
    for (name, loss_fn), with_es, kernel in cases:
        results = {}
        for backend, dtype in (("torch", torch.float64), (kernel, torch.float32)):
            leaves = [t.to(dtype).requires_grad_(True) for t in (hidden, weight, bias)]
            out = fused_linear_loss(
                leaves[0], LMHead(leaves[1], leaves[2], 0.7, VALID), tokens, loss_fn,
                chunking=Chunking(row_chunk=4, backend=backend), expected_discriminator=with_es,
            )  # fmt: skip
            results[backend] = out, torch.autograd.grad(out[0], leaves)
        (ref, ref_grads), (got, grads) = results["torch"], results[kernel]
        for a, b in zip(got, ref, strict=True):
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5, msg=name)
        for a, b in zip(grads, ref_grads, strict=True):
            assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max(), name
        assert grads[1][VALID:].abs().max() == 0
    bf16 = [t.to(torch.bfloat16).requires_grad_(True) for t in (hidden, weight)]
    bf16_head = LMHead(bf16[1], None, 0.7)
    out = fused_linear_loss(bf16[0], bf16_head, tokens, losses["both"],
                            chunking=Chunking(row_chunk=5, backend="triton"))  # fmt: skip
    grads = torch.autograd.grad(out[0], bf16)
    assert all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
    # on CPU both backends see logits rounded to bf16 (no float32-output bf16 matmul there)
    ref = fused_linear_loss(bf16[0], bf16_head, tokens, losses["both"],
                            chunking=Chunking(row_chunk=5, backend="torch"))  # fmt: skip
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(ref[0], bf16), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-3)
    # triton-matmul multiplies bf16 exactly in float32 (the logits are not rounded to bf16)
    out = fused_linear_loss(bf16[0], bf16_head, tokens, losses["dead rows"],
                            chunking=Chunking(row_chunk=5, backend="triton-matmul"))  # fmt: skip
    grads = torch.autograd.grad(out[0], bf16)
    exact = [t.detach().double().requires_grad_(True) for t in bf16]
    ref = fused_linear_loss(exact[0], LMHead(exact[1], None, 0.7), tokens, losses["dead rows"],
                            chunking=Chunking(row_chunk=5))  # fmt: skip
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(ref[0], exact), strict=True):
        assert a.dtype == torch.bfloat16  # grad_z rounded to bf16 for the cuBLAS matmuls
        assert (a.double() - b).abs().max() <= 1e-2 * b.abs().max()
    for module in ("triton_loss", "triton_matmul"):  # the kernels did run
        assert f"entropy_dynamics.kernels.{module}" in sys.modules


def test_triton_block_kernels_through_the_cpu_interpreter() -> None:
    run_under_interpreter("test_fused_loss")


def test_triton_backend_without_cuda_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    hidden, weight, _, tokens, c1, c2 = _case()
    with pytest.raises(ValueError, match="backend='triton'"):
        fused_linear_loss(hidden.float(), LMHead(weight.float()), tokens, _smooth_loss(c1, c2),
                          chunking=Chunking(backend="triton"))  # fmt: skip
    with pytest.raises(ValueError, match="backend must be"):
        fused_linear_loss(hidden, LMHead(weight), tokens, _smooth_loss(c1, c2),
                          chunking=Chunking(backend="cuda"))  # fmt: skip


def test_triton_kernels_compile_for_an_h100_without_a_gpu() -> None:
    # The interpreter runs kernels as Python and forgives what the compiler refuses (a module
    # global read in jit'd code, a type mismatch); compile both kernels ahead of time for sm_90.
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("compiling needs triton outside interpreter mode")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from entropy_dynamics.kernels import triton_loss

    common = {"tokens_ptr": "*i64", "vocab": "i32", "inv_t": "fp32", "n_rows": "i32"}
    stats = {"x_ptr": "*fp32", "stride": "i32", "out_ptr": "*fp32", **common}
    grad = {"x_ptr": "*fp32", "stride_x": "i32", "grad_ptr": "*bf16", "stride_g": "i32",
            "coef_ptr": "*fp32", **common}  # fmt: skip
    kernels = [
        (triton_loss._stats_kernel, {**stats, "WITH_ES": "constexpr", "BLOCK": "constexpr"},
         {"WITH_ES": with_es, "BLOCK": 1024}) for with_es in (True, False)
    ] + [(triton_loss._grad_kernel, {**grad, "BLOCK": "constexpr"}, {"BLOCK": 1024})]  # fmt: skip
    for fn, signature, constexprs in kernels:
        ordered = {name: signature[name] for name in fn.arg_names}
        source = ASTSource(fn=fn, signature=ordered, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert "ptx" in compiled.asm
