"""The verl plug-in in verl's real FSDP2 engine on CPU (issue 13).

- the engine's forward adds ``H``, ``S_k`` and ``E_p[S]`` equal to the float64 definitions of
  ``theory`` on a full-logits reference, padding removal on and off, temperature 1 and 0.7;
- one training step with the plug-in's mask: dropped tokens get exactly zero gradient on their
  log-probability, kept ones ``-A / n_kept`` (they left the token-mean denominator), and the
  optimizer step changes the weights;
- fused kernels are refused with what to change.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl")

from functools import partial

from transformers import AutoModelForCausalLM
from verl_cpu import MODEL, actor_config, build_engine, flags, padded_batch

from entropy_dynamics import theory
from entropy_dynamics.integrations.verl import STAT_KEYS, STATS_FLAG, FilterSettings, decide_keep
from entropy_dynamics.integrations.verl.engine import engine_stats, packed_stats
from entropy_dynamics.stats import token_stats

B, P, C = 8, 6, 10


@pytest.fixture(scope="module")
def engine():
    return build_engine()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    prompt_lengths = torch.tensor([6, 4, 5, 6, 3, 6, 2, 6])
    prompt_mask = torch.arange(P) >= (P - prompt_lengths).unsqueeze(1)  # left padding
    prompts = torch.randint(2, 40, (B, P), generator=gen) * prompt_mask
    lengths = torch.tensor([10, 7, 4, 10, 9, 3, 6, 8])
    response_mask = torch.arange(C) < lengths.unsqueeze(1)  # right padding
    responses = torch.randint(2, 40, (B, C), generator=gen) * response_mask
    advantages = torch.tensor([1.2, -0.8, 0.5, -1.5, 0.9, -0.3, 1.1, -1.1])
    advantages = advantages.unsqueeze(1) * response_mask
    return prompts, prompt_mask, responses, response_mask, advantages


def _data(batch, old_log_probs=None, **values):
    prompts, prompt_mask, responses, response_mask, advantages = batch
    old = torch.zeros(B, C) if old_log_probs is None else old_log_probs
    data = padded_batch(prompts, prompt_mask, responses, response_mask, advantages, old)
    flags(data, **values)
    return data


def _response(engine_output, data):
    from verl.workers.utils.padding import no_padding_2_padding

    return {k: no_padding_2_padding(v, data) for k, v in engine_output["model_output"].items()}


def _reference(batch, temperature: float) -> dict[str, torch.Tensor]:
    """H, S_k, E_p[S] (float64, ``theory``) of each response position, from full logits."""
    prompts, prompt_mask, responses, response_mask, _ = batch
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float64).eval()
    out = {k: torch.zeros(B, C, dtype=torch.float64) for k in STAT_KEYS}
    for b in range(B):
        ids = torch.cat([prompts[b][prompt_mask[b]], responses[b][response_mask[b]]])
        with torch.no_grad():
            logits = model(ids.unsqueeze(0)).logits[0]  # (L, V)
        n_prompt, n = int(prompt_mask[b].sum()), int(response_mask[b].sum())
        z = logits[n_prompt - 1 : n_prompt - 1 + n]  # positions that predict the response
        tokens = responses[b, :n]
        out["ed_entropy"][b, :n] = theory.entropy(z, temperature)
        out["ed_discriminator"][b, :n] = theory.discriminator(z, tokens, temperature)
        out["ed_expected_discriminator"][b, :n] = theory.expected_discriminator(z, temperature)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("remove_padding", [True, False], ids=["rmpad", "padded"])
def test_engine_forward_statistics_equal_the_float64_definitions(
    engine, batch, remove_padding, temperature
):
    data = _data(batch, temperature=temperature, use_remove_padding=remove_padding)
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(data, **{STATS_FLAG: True})
    with engine.eval_mode():
        output = engine.infer_batch(data, loss_function=None)
    got = _response(output, data)
    expected = _reference(batch, temperature)
    mask = batch[3]
    for key in STAT_KEYS:
        torch.testing.assert_close(
            got[key][mask].double(), expected[key][mask], rtol=1e-5, atol=2e-6, msg=key
        )
    # without the flag the engine's output is verl's own
    plain = _data(batch, temperature=temperature, use_remove_padding=remove_padding)
    with engine.eval_mode():
        keys = set(engine.infer_batch(plain, loss_function=None)["model_output"])
    assert keys == {"log_probs"}


def test_packed_statistics_take_one_temperature_per_position() -> None:
    gen = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(6, 11, generator=gen), torch.randint(0, 11, (6,), generator=gen)
    temperature = torch.tensor([1.0, 0.5, 1.0, 2.0, 0.5, 1.0])
    got = packed_stats(logits, labels, temperature)
    for i in range(6):
        ref = token_stats(logits[i : i + 1], labels[i : i + 1], float(temperature[i]))
        torch.testing.assert_close(got["ed_entropy"][i : i + 1], ref.entropy)
        torch.testing.assert_close(got["ed_discriminator"][i : i + 1], ref.discriminator)
        torch.testing.assert_close(
            got["ed_expected_discriminator"][i : i + 1], ref.expected_discriminator
        )


def test_one_training_step_with_the_mask(engine, batch):
    """Dropped tokens: exactly zero gradient; kept ones: -A / n_kept (the denominator counts the
    kept tokens only, because loss_mask was narrowed with response_mask)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    data = _data(batch)
    tu.assign_non_tensor(data, **{STATS_FLAG: True})
    with engine.eval_mode():
        rollout = _response(engine.infer_batch(data, loss_function=None), data)
    mask = batch[3]
    settings = FilterSettings("clip_b", {"mu": 0.5})
    padded = {
        "old_log_probs": rollout["log_probs"],
        **{k: rollout[k] for k in STAT_KEYS},
        "advantages": batch[4].float(),
        "response_mask": mask,
    }
    keep, metrics = decide_keep(settings.loss_config(), padded)
    assert (mask & ~keep).any() and keep.any()
    assert float(metrics["clip_b/frac_clipped"]) == pytest.approx(
        float((mask & ~keep).sum() / mask.sum())
    )
    train = _data(batch, old_log_probs=rollout["log_probs"])  # ratio 1 at the start
    train["response_mask"] = keep.long()
    train["loss_mask"] = keep.long()
    n_kept = int(keep.sum())

    seen = []

    def capture(config, model_output, data, dp_group=None):
        values = model_output["log_probs"].values() * 1.0  # a node to hook: d loss / d log p
        values.register_hook(lambda g, d=data: seen.append((g.detach().clone(), d)))
        offsets = model_output["log_probs"].offsets()
        model_output = {
            **model_output,
            "log_probs": torch.nested.nested_tensor_from_jagged(values, offsets),
        }
        return ppo_loss(config, model_output, data, dp_group)

    config = actor_config(B, 4)
    before = {n: p.full_tensor().clone() for n, p in engine.module.named_parameters()}
    with engine.train_mode():
        engine.train_batch(train, loss_function=partial(capture, config=config))
    assert len(seen) == 2  # two micro-batches of 4
    for grad, micro in seen:
        got = no_padding_2_padding(grad, micro)  # (4, C)
        kept = micro["response_mask"].bool()
        expected = torch.where(kept, -micro["advantages"] / n_kept, 0.0)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
        valid = micro["attention_mask"][:, P:].bool()
        assert torch.equal(got[valid & ~kept], torch.zeros_like(got[valid & ~kept]))
    changed = [
        n
        for n, p in engine.module.named_parameters()
        if not torch.equal(p.full_tensor(), before[n])
    ]
    assert changed  # the optimizer step trained the model


def test_fused_kernels_are_refused_with_what_to_change(engine, batch):
    from verl.utils import tensordict_utils as tu

    data = _data(batch, use_fused_kernels=True)
    with pytest.raises(RuntimeError, match="use_fused_kernels=False"):
        engine_stats(engine, None, {}, data)
    tu.assign_non_tensor(data, **{STATS_FLAG: True})  # through the engine's forward: refused
    with pytest.raises(RuntimeError, match="use_fused_kernels=False"), engine.eval_mode():
        engine.infer_batch(data, loss_function=None)  # before verl reads the fused outputs
