"""The verl plug-in against our trainer's loss path, on the fixed batch of the TRL test (issue 13).

Same weights (the embedded model), token ids, advantages and old log-probs on both sides. Ours:
:func:`engine_batch.our_update`. verl's: the real FSDP2 engine's forward with the plug-in's
statistics, :func:`~entropy_dynamics.integrations.verl.decide_keep` on the whole batch (the v1
trainer patch's call), ``response_mask`` and ``loss_mask`` narrowed, then verl's unmodified
``ppo_loss`` — with its own ``vanilla`` policy loss and with our registered ``ed_ppo`` — over two
micro-batches with verl's global normalisation. Keep-mask, loss and every parameter gradient must
agree for ``grpo``, ``clip_b``, ``clip_v`` × ``token-mean``, ``seq-mean-token-mean``; with the
TRL test on the same batch, our trainer, TRL and verl agree.

verl's ``vanilla`` always applies dual clipping (``clip_ratio_c`` 3.0), so our side runs with
``dual_clip_c=3.0``.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

pytest.importorskip("verl")

from engine_batch import FILTERS, B, fixed_batch, our_update
from verl_cpu import actor_config, build_engine, flags, padded_batch

from entropy_dynamics.integrations.verl import STAT_KEYS, STATS_FLAG, FilterSettings, decide_keep


@pytest.fixture(scope="module")
def engine():
    return build_engine()


@pytest.fixture(scope="module")
def batch():
    return fixed_batch()


@pytest.fixture(scope="module")
def ours(tmp_path_factory, batch):
    """Our trainer's update per (method, agg_mode), computed once for both verl loss modes."""
    cache = {}

    def update(method: str, agg_mode: str):
        if (method, agg_mode) not in cache:
            cache[method, agg_mode] = our_update(
                tmp_path_factory.mktemp("ours"),
                method,
                agg_mode,
                None,
                True,
                batch,
                extra=("algorithm.loss.dual_clip_c=3.0",),
            )
        return cache[method, agg_mode]

    return update


def _verl_batch(batch, old_log_probs):
    prompt_ids, completion_ids, completion_mask, seq_adv, _ = batch
    mask = completion_mask.bool()
    advantages = torch.where(mask, seq_adv.unsqueeze(1), 0.0)  # (B, C)
    data = padded_batch(
        prompt_ids,
        torch.ones_like(prompt_ids).bool(),
        completion_ids,
        mask,
        advantages,
        old_log_probs,
    )
    flags(data)
    return data


def _verl(engine, method: str, agg_mode: str, loss_mode: str, batch, old_log_probs):
    from verl.utils import tensordict_utils as tu
    from verl.workers.config import PolicyLossConfig
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    name, options = FILTERS[method]
    mask = batch[2].bool()
    rollout = _verl_batch(batch, old_log_probs)
    tu.assign_non_tensor(rollout, **{STATS_FLAG: True})
    with engine.eval_mode():  # the old-log-prob pass of the v1 trainer, with the plug-in's flag
        output = engine.infer_batch(rollout, loss_function=None)["model_output"]
    stats = {k: no_padding_2_padding(v, rollout) for k, v in output.items()}
    keep = mask
    if name != "none":
        padded = {
            "old_log_probs": stats["log_probs"],  # π_old: the rollout policy's own log p
            **{k: stats[k] for k in STAT_KEYS},
            "advantages": rollout["advantages"],
            "response_mask": mask,
        }
        keep, _ = decide_keep(FilterSettings(name, options).loss_config(), padded)
    train = _verl_batch(batch, old_log_probs)
    train["response_mask"] = keep.long()
    train["loss_mask"] = keep.long()
    config = actor_config(
        B,
        4,
        loss_agg_mode=agg_mode,
        clip_ratio=0.2,
        clip_ratio_c=3.0,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
    )
    engine.optimizer_zero_grad()
    with engine.train_mode():  # it zeroes the gradients on exit: read them inside
        out = engine.forward_backward_batch(train, partial(ppo_loss, config=config))
        grads = {n: p.grad.full_tensor().clone() for n, p in engine.module.named_parameters()}
    loss = torch.tensor(out["loss"], dtype=torch.float64).sum()  # micro-batches, normalised
    return keep, loss, grads


@pytest.mark.parametrize("loss_mode", ["vanilla", "ed_ppo"])
@pytest.mark.parametrize("agg_mode", ["token-mean", "seq-mean-token-mean"])
@pytest.mark.parametrize("method", ["grpo", "clip_b", "clip_v"])
def test_plugin_keep_mask_loss_and_gradients_equal_our_trainer(
    ours, engine, batch, method, agg_mode, loss_mode
):
    start, keep, loss, grads, old_logprobs = ours(method, agg_mode)
    for name, param in engine.module.named_parameters():  # the same weights on both sides
        torch.testing.assert_close(param.full_tensor(), start.get_parameter(name), rtol=0, atol=0)
    verl_keep, verl_loss, verl_grads = _verl(
        engine, method, agg_mode, loss_mode, batch, old_logprobs
    )
    mask = batch[2].bool()
    if method != "grpo":  # the comparison must involve dropped tokens
        assert (mask & ~keep).any()
    if agg_mode == "seq-mean-token-mean":  # verl divides by every sequence of the mini-batch
        assert keep.any(-1).all()
    torch.testing.assert_close(verl_keep, keep, rtol=0, atol=0)
    torch.testing.assert_close(verl_loss.float(), loss.float(), rtol=1e-5, atol=1e-6)
    assert set(verl_grads) == set(grads)
    for name, grad in grads.items():  # float32: two kernels, two summation orders
        atol = 1e-4 * float(grad.abs().max())
        torch.testing.assert_close(
            verl_grads[name], grad, rtol=1e-3, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_registered_losses_are_verl_policy_losses() -> None:
    from verl.trainer.ppo import core_algos

    assert {"ed_ppo", "ed_kl_cov"} <= set(core_algos.POLICY_LOSS_REGISTRY)
    assert core_algos.get_policy_loss_fn("ed_ppo").__name__ == "ed_ppo"


def test_ed_entropic_refuses_to_run_without_its_controller() -> None:
    # EntroPIC's weight α is set each step by its controller, which runs in our trainer only;
    # without it ed_entropic would silently be ed_ppo, so it is registered to fail loudly.
    from verl.trainer.ppo import core_algos

    loss = core_algos.get_policy_loss_fn("ed_entropic")
    assert loss.__name__ == "ed_entropic"
    zeros, mask = torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs the controller of the 'entropic' method"):
        loss(zeros, zeros, zeros, mask, "token-mean", config=None)
    with pytest.raises(ValueError, match="Use ed_kl_cov, ed_ppo"):
        loss(zeros, zeros, zeros, mask)
