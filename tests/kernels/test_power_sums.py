"""The streamed power sums (``kernels/power_sums.py``): partial sums over vocabulary chunks, each on
its own reference, merged and finished, equal the statistics of the whole row (float64, by
``theory``)."""

from __future__ import annotations

import torch

from entropy_dynamics import theory
from entropy_dynamics.kernels.power_sums import finalize, merge_splits, rebase


def _sums(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(m, A, B, C, D)`` of each row of ``x`` ``(n, v)`` on its own max (module docstring)."""
    m = x.max(-1).values  # (n,)
    d = x - m[:, None]  # (n, v) ≤ 0
    e = d.exp()
    return m, e.sum(-1), (d * e).sum(-1), (e * e).sum(-1), (d * e * e).sum(-1)


def test_merged_chunks_equal_the_whole_row() -> None:
    gen = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(4, 23, generator=gen, dtype=torch.float64)  # (n, V)
    tokens = torch.randint(0, 23, (4,), generator=gen)
    chunks = [_sums(x[:, i : i + 8]) for i in range(0, 23, 8)]  # three references
    stacked = tuple(torch.stack(parts) for parts in zip(*chunks, strict=True))  # (S, n) each
    merged = merge_splits(stacked)
    for got, whole in zip(merged, _sums(x), strict=True):
        torch.testing.assert_close(got, whole)
    x_k = x.gather(-1, tokens[:, None])[:, 0]
    log_p_k, entropy, s_k, e_s, lse = finalize(merged, x_k)
    torch.testing.assert_close(lse, torch.logsumexp(x, -1))
    torch.testing.assert_close(entropy, theory.entropy(x))
    torch.testing.assert_close(log_p_k, torch.log_softmax(x, -1).gather(-1, tokens[:, None])[:, 0])
    torch.testing.assert_close(s_k, theory.discriminator(x, tokens))
    torch.testing.assert_close(e_s, theory.expected_discriminator(x))


def test_rebasing_onto_a_larger_max_is_exact() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    sums = _sums(x)
    moved = rebase(sums, sums[0] + 1.5)  # δ = -1.5
    # by hand: the sums on reference m + 1.5 are those of x - (m + 1.5)
    d = x - (sums[0] + 1.5)[:, None]
    e = d.exp()
    by_hand = (e.sum(-1), (d * e).sum(-1), (e * e).sum(-1), (d * e * e).sum(-1))
    for got, want in zip(moved, by_hand, strict=True):
        torch.testing.assert_close(got, want)
