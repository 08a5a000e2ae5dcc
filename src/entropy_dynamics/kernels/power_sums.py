"""The streamed power sums behind the fused statistics: merging, rebasing, finishing.

Derivation of the streamed sums (one row, ``x = z / T``, ``m`` any reference, e.g. the running
max, so every ``e^{x_i - m} ≤ 1`` and nothing overflows)::

    A = Σ_i e^{x_i - m}                B = Σ_i (x_i - m) e^{x_i - m}
    C = Σ_i e^{2(x_i - m)}             D = Σ_i (x_i - m) e^{2(x_i - m)}

With ``p_i = e^{x_i - m} / A`` and ``log p_i = (x_i - m) - log A``::

    logsumexp(x)   = m + log A
    H              = -Σ p_i log p_i            = log A - B / A
    Σ p_i²         = C / A²
    Σ p_i² log p_i = (D - C log A) / A²
    E_p[S]         = H Σ p² + Σ p² log p      = (D - C · B / A) / A²      (log A cancels)

The last line is ``Σ_i p_i² (x_i - x̄)`` with ``x̄ = E_p[x] = m + B / A``, since
``log p_i + H = x_i - x̄``. Moving the reference from ``m`` to ``m'`` (``δ = m - m'``)::

    A' = e^δ A     B' = e^δ (B + δ A)     C' = e^{2δ} C     D' = e^{2δ} (D + δ C)

so two partial sums are merged by rebasing both onto the larger max and adding (online softmax,
extended to the three extra power sums). ``x_k`` is picked out of whichever chunk holds token
``k``; then ``log p_k = x_k - logsumexp(x)`` and ``S_k = p_k (H + log p_k)``.

Used by the torch path (:mod:`entropy_dynamics.kernels.streaming`) and by the Triton path
(:mod:`entropy_dynamics.kernels.triton_stats`, which merges its per-split partial sums here).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["Sums", "finalize", "merge_splits", "rebase"]

Sums = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # (m, A, B, C, D), each (n,)


def rebase(sums: Sums, new_max: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(A, B, C, D)`` of ``sums`` moved from reference ``sums[0]`` to ``new_max >= sums[0]``."""
    m, a, b, c, d = sums
    delta = m - new_max  # (...,) ≤ 0
    scale = delta.exp()  # (...,)
    scale2 = scale * scale
    return scale * a, scale * (b + delta * a), scale2 * c, scale2 * (d + delta * c)


def merge_splits(sums: Sums) -> Sums:
    """Merge partial sums stacked along dim 0 (``(S, n)`` each) into one ``(n,)`` set."""
    new_max = sums[0].max(0).values  # (n,)
    return (new_max, *(x.sum(0) for x in rebase(sums, new_max)))


def finalize(sums: Sums, x_k: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(log p_k, H, S_k, E_p[S], logsumexp)`` from the merged sums (module docstring)."""
    m, a, b, c, d = sums  # (n,) each
    log_a = a.log()
    lse = m + log_a  # (n,), as every result
    mean_shift = b / a  # E_p[x] - m
    entropy = log_a - mean_shift
    expected_s = (d - c * mean_shift) / (a * a)
    log_p_k = x_k - lse
    discriminator = log_p_k.exp() * (entropy + log_p_k)
    return log_p_k, entropy, discriminator, expected_s, lse
