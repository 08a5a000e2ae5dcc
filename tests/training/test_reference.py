"""The KL penalty to a frozen reference (``training/reference.py``): the penalty against a float64
hand computation, its options, the reference's log-probabilities and its fingerprint."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.reference import (
    KLConfig,
    ReferencePolicy,
    kl_penalty,
    weights_fingerprint,
)
from entropy_dynamics.training.rollout import generate


def test_kl_config_is_off_by_default_and_validated() -> None:
    assert KLConfig().coef == 0.0 and KLConfig().estimator == "k3"
    with pytest.raises(ConfigError, match=r"algorithm\.kl\.coef must be >= 0"):
        KLConfig(coef=-0.1)
    with pytest.raises(ConfigError, match="k1, k2, k3"):
        KLConfig(estimator="mse")  # type: ignore[arg-type]


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_kl_penalty_by_hand_in_float64(estimator, agg_mode) -> None:
    # two sequences, 3 and 1 valid tokens; padding holds -inf / NaN that must not leak
    logp = [[math.log(0.5), math.log(0.2), math.log(0.9)], [math.log(0.4), 0.0, 0.0]]
    refp = [[math.log(0.25), math.log(0.4), math.log(0.9)], [math.log(0.8), 0.0, 0.0]]
    valid = [[1, 1, 1], [1, 0, 0]]

    def k(lp: float, lr: float) -> float:
        log_r = lr - lp
        return {"k1": -log_r, "k2": log_r**2 / 2, "k3": math.exp(log_r) - 1 - log_r}[estimator]

    per_seq = [[k(logp[b][t], refp[b][t]) for t in range(3) if valid[b][t]] for b in range(2)]
    if agg_mode == "token-mean":
        hand = sum(map(sum, per_seq)) / 4
    else:
        hand = sum(sum(s) / len(s) for s in per_seq) / 2
    mean = sum(map(sum, per_seq)) / 4

    logprobs = torch.tensor(logp, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(refp, dtype=torch.float64)
    ref[1, 1:] = float("nan")  # padding of the reference pass: anything
    mask = torch.tensor(valid, dtype=torch.bool)
    penalty, kl_mean = kl_penalty(KLConfig(coef=0.1, estimator=estimator), logprobs, ref, mask,
                                  agg_mode)  # fmt: skip
    assert penalty.item() == pytest.approx(0.1 * hand, rel=1e-14)
    assert kl_mean.item() == pytest.approx(mean, rel=1e-14)
    penalty.backward()
    assert torch.isfinite(logprobs.grad).all() and (logprobs.grad[1, 1:] == 0).all()


@pytest.fixture(scope="module")
def rollout(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    return generate(model, tokenizer, ["7 3 2 -> 23: ", "1 9 -> 10: "], num_samples=2,
                    max_new_tokens=5)  # fmt: skip


def test_reference_gives_the_initial_policy_logprobs_and_stays_frozen(tiny_lm, rollout) -> None:
    model, _ = tiny_lm
    policy = copy.deepcopy(model)
    reference = ReferencePolicy(copy.deepcopy(model), temperature=1.0)
    assert not any(p.requires_grad for p in reference.model.parameters())
    assert not reference.model.training
    stats = ResponseStats(policy, 1.0)
    with torch.no_grad():
        own = stats.stats(stats.features(rollout), rollout.response_ids).logprobs
    mask = rollout.response_mask
    torch.testing.assert_close(reference.logprobs(rollout)[mask], own[mask])
    with torch.no_grad():  # the policy moves; the reference does not
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = reference.logprobs(rollout)
    torch.testing.assert_close(reference.logprobs(rollout), before, rtol=0, atol=0)
    assert reference.fingerprint == weights_fingerprint(model)


def test_fingerprint_and_resume_check(tiny_lm) -> None:
    model, _ = tiny_lm
    moved = copy.deepcopy(model)
    with torch.no_grad():
        next(moved.parameters()).view(-1)[0] += 1e-6
    assert weights_fingerprint(copy.deepcopy(model)) == weights_fingerprint(model)
    assert weights_fingerprint(moved) != weights_fingerprint(model)
    reference = ReferencePolicy(copy.deepcopy(model), temperature=1.0)
    reference.check(weights_fingerprint(model), "m")  # the same model: accepted
    with pytest.raises(ConfigError, match="not the one this run started from"):
        reference.check(weights_fingerprint(moved), "m")
    with pytest.raises(ConfigError, match="written without a KL penalty"):
        reference.check(None, "m")
