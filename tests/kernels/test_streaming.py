"""Fused token statistics from hidden states against materialised logits and float64 references."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from interpreter_helpers import run_under_interpreter

from entropy_dynamics import theory
from entropy_dynamics.stats import token_stats, token_stats_from_hidden

FIELDS = ("logprobs", "entropy", "discriminator", "expected_discriminator")


def _reference(logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
    """Direct float64 formulas on materialised logits, written independently of both modules."""
    log_p = torch.log_softmax(logits.double() / temperature, -1)
    p = log_p.exp()
    p_log_p = torch.where(p > 0, p * log_p, 0.0)  # 0 log 0 = 0 at padded (-inf) entries
    h = -p_log_p.sum(-1)
    log_p_k = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    s_k = log_p_k.exp() * (h + log_p_k)
    e_s = (p * p * h.unsqueeze(-1) + p * p_log_p).sum(-1)
    return log_p_k, h, s_k, e_s


def _case(batch, dim, vocab, seed, dtype=torch.float32, valid=None, bias=True):
    """Random ``(hidden, weight, bias, tokens)`` with logits of spread ~3 (peaked and flat rows)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*batch, dim, generator=gen, dtype=torch.float64) * 3 / math.sqrt(dim)
    weight = torch.randn(vocab, dim, generator=gen, dtype=torch.float64)
    b = torch.randn(vocab, generator=gen, dtype=torch.float64) if bias else None
    tokens = torch.randint(0, valid or vocab, batch, generator=gen)
    cast = (lambda t: t.to(dtype)) if dtype != torch.float64 else (lambda t: t)
    return cast(hidden), cast(weight), None if b is None else cast(b), tokens


def _logits(hidden, weight, bias, valid=None):
    z = hidden @ weight.T if bias is None else hidden @ weight.T + bias
    return z if valid is None else z[..., :valid]


def _assert_fields(result, expected, rtol, atol):
    for name, value in zip(FIELDS, expected, strict=True):
        got = getattr(result, name)
        torch.testing.assert_close(got.to(value.dtype), value, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize(
    ("batch", "vocab", "vocab_chunk", "row_chunk"),
    [((37,), 1000, 97, 10), ((3, 11), 513, 64, 33), ((5,), 300, 4096, 1024), ((2, 2), 40, 1, 1)],
)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_forward_matches_materialised_logits(batch, vocab, vocab_chunk, row_chunk, temperature):
    hidden, weight, bias, tokens = _case(batch, 24, vocab, seed=vocab)
    fused = token_stats_from_hidden(
        hidden, weight, tokens, temperature, bias=bias, vocab_chunk=vocab_chunk, row_chunk=row_chunk
    )
    assert fused.logprobs.shape == batch and fused.entropy.dtype == torch.float32
    logits = _logits(hidden, weight, bias)
    # Against the lead path on the same float32 logits, and against float64 formulas.
    materialised = token_stats(logits, tokens, temperature)
    _assert_fields(fused, [getattr(materialised, f) for f in FIELDS], rtol=1e-5, atol=2e-6)
    _assert_fields(fused, _reference(logits, tokens, temperature), rtol=1e-5, atol=2e-6)


def test_public_wrapper_dispatches_to_the_torch_path_on_cpu(monkeypatch):
    from entropy_dynamics import stats
    from entropy_dynamics.kernels import streaming

    calls = []
    original = streaming._forward_torch
    monkeypatch.setattr(streaming, "_forward_torch", lambda *a: calls.append(1) or original(*a))
    hidden, weight, bias, tokens = _case((6, 7), 12, 333, seed=11, valid=300)
    result = stats.token_stats_from_hidden(
        hidden, weight, tokens, 0.8, bias=bias, vocab_chunk=50, row_chunk=16, valid_vocab=300
    )
    assert calls and isinstance(result, stats.TokenStats)
    materialised = token_stats(_logits(hidden, weight, bias, valid=300), tokens, 0.8)
    _assert_fields(result, [getattr(materialised, f) for f in FIELDS], rtol=1e-5, atol=2e-6)


def test_valid_vocab_is_the_truncated_and_the_minus_inf_padded_distribution():
    # Rows >= 250 of a 256-row lm_head are padding: p = 0 there, exactly as if they did not exist.
    hidden, weight, bias, tokens = _case((19,), 16, 256, seed=1, valid=250)
    fused = token_stats_from_hidden(
        hidden, weight, tokens, 0.9, bias=bias, vocab_chunk=60, row_chunk=8, valid_vocab=250
    )
    logits = _logits(hidden, weight, bias)
    _assert_fields(fused, _reference(logits[:, :250], tokens, 0.9), rtol=1e-5, atol=2e-6)
    padded = torch.cat([logits[:, :250], torch.full((19, 6), -math.inf)], -1)
    _assert_fields(fused, _reference(padded, tokens, 0.9), rtol=1e-5, atol=2e-6)


def test_float64_stays_float64_and_matches_theory_to_rounding():
    hidden, weight, bias, tokens = _case((4, 5), 8, 77, seed=2, dtype=torch.float64)
    fused = token_stats_from_hidden(hidden, weight, tokens, 1.3, bias=bias, vocab_chunk=10)
    assert fused.entropy.dtype == torch.float64
    logits = _logits(hidden, weight, bias)
    expected = (
        theory.entropy(logits, 1.3),
        theory.discriminator(logits, tokens, 1.3),
        theory.expected_discriminator(logits, 1.3),
    )
    got = (fused.entropy, fused.discriminator, fused.expected_discriminator)
    for value, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        fused.logprobs, _reference(logits, tokens, 1.3)[0], rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_equals_token_stats_on_the_half_logits(dtype):
    # The torch path forms each block's logits in the input dtype, as the lm_head would; the
    # statistics of those logits are then exact to float32 rounding.
    hidden, weight, _, tokens = _case((29,), 32, 400, seed=3, dtype=dtype, bias=False)
    fused = token_stats_from_hidden(hidden, weight, tokens, 0.8, vocab_chunk=64, row_chunk=7)
    assert fused.entropy.dtype == torch.float32
    materialised = token_stats(hidden @ weight.T, tokens, 0.8)
    _assert_fields(fused, [getattr(materialised, f) for f in FIELDS], rtol=1e-5, atol=2e-6)


def test_extreme_logits_give_finite_statistics():
    # Row 0 is one-hot in float32 (other entries underflow to p = 0), row 1 is uniform.
    weight = torch.eye(4)
    hidden = torch.tensor([[300.0, 0.0, -300.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    fused = token_stats_from_hidden(hidden, weight, torch.tensor([2, 1]), vocab_chunk=3)
    for name in FIELDS[1:]:
        assert torch.isfinite(getattr(fused, name)).all(), name
    assert fused.entropy[0].item() == 0.0 and fused.discriminator[0].item() == 0.0
    # Uniform over 4: H = log 4, S_k = (1/4)(log 4 - log 4) = 0, E_p[S] = 0.
    assert fused.entropy[1].item() == pytest.approx(math.log(4.0), rel=1e-6)
    assert fused.expected_discriminator[1].item() == pytest.approx(0.0, abs=1e-7)


def _grad_fn(tokens, temperature, valid, **chunks):
    def fn(hidden, weight, bias):
        out = token_stats_from_hidden(
            hidden, weight, tokens, temperature, bias=bias, entropy_grad=True,
            valid_vocab=valid, **chunks,
        )  # fmt: skip
        return out.logprobs, out.entropy

    return fn


def test_gradcheck_float64_wrt_hidden_weight_and_bias():
    hidden, weight, bias, tokens = _case((2, 3), 5, 13, seed=4, dtype=torch.float64, valid=11)
    inputs = tuple(t.requires_grad_(True) for t in (hidden, weight, bias))
    fn = _grad_fn(tokens, 0.7, 11, vocab_chunk=4, row_chunk=4)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("use", ["logprobs", "entropy", "both"])
def test_gradients_equal_autograd_through_materialised_logits(use):
    hidden, weight, bias, tokens = _case((9,), 6, 50, seed=5, dtype=torch.float64, valid=45)
    w1, w2 = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)

    def loss(log_p_k, h):
        terms = {"logprobs": w1 * log_p_k, "entropy": w2 * h, "both": w1 * log_p_k + w2 * h}
        return terms[use].sum()

    fused_inputs = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    fused = token_stats_from_hidden(
        *fused_inputs[:2], tokens, 1.2, bias=fused_inputs[2], vocab_chunk=7, row_chunk=4,
        entropy_grad=True, valid_vocab=45,
    )  # fmt: skip
    loss(fused.logprobs, fused.entropy).backward()
    ref_inputs = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
    log_p_k, h, _, _ = _reference(_logits(*ref_inputs, valid=45), tokens, 1.2)
    loss(log_p_k, h).backward()
    for got, expected in zip(fused_inputs, ref_inputs, strict=True):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-10, atol=1e-12)
    assert (fused_inputs[1].grad[45:] == 0).all() and (fused_inputs[2].grad[45:] == 0).all()


def test_float32_gradients_match_float64_and_frozen_weight_gets_none():
    hidden, weight, _, tokens = _case((40,), 16, 700, seed=6, bias=False)
    hidden.requires_grad_(True)
    fused = token_stats_from_hidden(hidden, weight, tokens, vocab_chunk=128, row_chunk=16)
    fused.logprobs.sum().backward()
    ref_hidden = hidden.detach().double().requires_grad_(True)
    _reference(ref_hidden @ weight.double().T, tokens, 1.0)[0].sum().backward()
    torch.testing.assert_close(hidden.grad.double(), ref_hidden.grad, rtol=1e-4, atol=1e-5)
    assert weight.grad is None


def test_only_logprobs_and_requested_entropy_are_differentiable():
    hidden, weight, _, tokens = _case((3,), 4, 9, seed=7, bias=False)
    hidden.requires_grad_(True)
    plain = token_stats_from_hidden(hidden, weight, tokens)
    assert plain.logprobs.requires_grad and not plain.entropy.requires_grad
    assert not plain.discriminator.requires_grad and not plain.expected_discriminator.requires_grad
    assert token_stats_from_hidden(hidden, weight, tokens, entropy_grad=True).entropy.requires_grad


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"vocab_chunk": 0}, ValueError, "vocab_chunk"),
        ({"row_chunk": 0}, ValueError, "row_chunk"),
        ({"valid_vocab": 11}, ValueError, "valid_vocab"),
        ({"valid_vocab": 2}, ValueError, r"\[0, 2\)"),
        ({"weight": torch.zeros(10, 3)}, ValueError, r"\(V, d\)"),
        ({"weight": torch.zeros(10, 4, dtype=torch.float64)}, ValueError, "dtype"),
        ({"bias": torch.zeros(9)}, ValueError, "bias"),
        ({"bias": torch.full((10,), -math.inf)}, ValueError, "valid_vocab"),
        ({"tokens": torch.tensor([0, 1])}, ValueError, "shape"),
        ({"tokens": torch.tensor([0.0, 1.0, 2.0])}, TypeError, "integer"),
        ({"tokens": torch.tensor([0, 1, 10])}, ValueError, r"\[0, 10\)"),
        ({"backend": "cuda"}, ValueError, "backend"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(change, error, match):
    args = {"hidden": torch.zeros(3, 4), "weight": torch.zeros(10, 4), "tokens": torch.arange(3)}
    args |= change
    with pytest.raises(error, match=match):
        token_stats_from_hidden(**args)


def test_triton_backend_without_cuda_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend='torch'"):
        token_stats_from_hidden(
            torch.zeros(2, 4), torch.zeros(5, 4), torch.arange(2), backend="triton"
        )


# ---- peak memory (not timed) ----------------------------------------------------------------


def _peak_cpu_bytes(fn) -> int:
    """Peak of live CPU allocator bytes during ``fn()``, above the level at its start.

    Replays the profiler's allocation events (``profile_memory=True``: every alloc and free of
    torch's CPU allocator with its signed size) in time order and returns the running-sum maximum.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    if not events:
        pytest.skip("this torch build's profiler records no CPU memory events")
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak


def test_peak_memory_is_bounded_by_the_chunk_sizes():
    n, dim, vocab, vocab_chunk, row_chunk = 512, 64, 32768, 2048, 256
    hidden, weight, _, tokens = _case((n,), dim, vocab, seed=8, bias=False)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)

    def forward_backward():
        out = token_stats_from_hidden(
            hidden, weight, tokens, vocab_chunk=vocab_chunk, row_chunk=row_chunk, entropy_grad=True
        )
        (out.logprobs.sum() + out.entropy.sum()).backward()

    peak = _peak_cpu_bytes(forward_backward)
    block = row_chunk * vocab_chunk * 4  # one float32 [row_chunk, vocab_chunk] block
    outputs = (vocab * dim + n * dim) * 4  # grad_W and grad_hidden, which any method returns
    per_chunk = vocab_chunk * dim * 4  # grad_W accumulator of one vocabulary chunk
    per_row = 64 * n  # a few float32 vectors of length N (sums, lse, H, grads)
    bound = 2 * block + outputs + 2 * per_chunk + per_row
    naive = n * vocab * 4  # ONE float32 copy of the logits (naive code holds several)
    assert hidden.grad is not None and weight.grad is not None
    assert peak <= bound, (peak, bound)
    assert peak - outputs <= naive / 8, (peak, naive)


# ---- Triton kernel through the CPU interpreter ----------------------------------------------
# TRITON_INTERPRET must be set before triton is first imported (its own reductions are jit'd at
# import), and an interpreter-mode triton must not leak into other tests, so the checks run in a
# fresh interpreter.


def _triton_checks() -> None:
    """Forward vs float64, the gradient tile vs ``logit_grad_`` and gradients vs the torch path,
    under ``TRITON_INTERPRET=1``."""
    hidden, weight, bias, tokens = _case((70,), 40, 300, seed=9, valid=290)
    fused = token_stats_from_hidden(
        hidden, weight, tokens, 0.7, bias=bias, valid_vocab=290, backend="triton"
    )
    logits = _logits(hidden, weight, bias, valid=290)
    _assert_fields(fused, _reference(logits, tokens, 0.7), rtol=1e-5, atol=5e-6)

    # the backward kernel's in-register grad_z against the one formula (kernels.logit_grad)
    from entropy_dynamics.kernels import LMHead, logit_grad_, triton_stats

    hidden, weight, bias, tokens = _case((45,), 24, 200, seed=10, valid=190)
    w1, w2 = torch.randn(45), torch.randn(45)
    x = _logits(hidden, weight, bias, valid=190) / 1.3
    lse = torch.logsumexp(x, -1)
    entropy = -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)
    head = LMHead(weight, bias, 1.3, 190)
    tile = triton_stats.grad_tile(hidden, head, tokens, lse, entropy, w1, w2)
    for rows, v0, v1 in ((slice(0, 45), 0, 190), (slice(5, 30), 60, 130)):
        expected = logit_grad_(
            x[rows, v0:v1] - lse[rows].unsqueeze(-1), entropy[rows], w1[rows], w2[rows],
            tokens[rows], 1 / 1.3, v0,
        )  # fmt: skip
        torch.testing.assert_close(tile(rows, v0, v1), expected, rtol=1e-4, atol=1e-6)

    grads = []
    for backend in ("triton", "torch"):
        inputs = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        out = token_stats_from_hidden(
            *inputs[:2], tokens, 1.3, bias=inputs[2], entropy_grad=True, valid_vocab=190,
            vocab_chunk=150, row_chunk=20, backend=backend,
        )  # fmt: skip
        ((w1 * out.logprobs).sum() + (w2 * out.entropy).sum()).backward()
        grads.append([t.grad for t in inputs])
    for got, expected in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert "entropy_dynamics.kernels.triton_stats" in sys.modules  # the kernels did run


def test_triton_kernel_through_the_cpu_interpreter():
    run_under_interpreter("test_streaming")
