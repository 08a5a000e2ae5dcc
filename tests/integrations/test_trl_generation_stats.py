"""The TRL plug-in's statistics from TRL's own ``generate`` (no extra pass; issue 12 follow-up).

When TRL makes no old-log-prob pass, the plug-in records the decoder's final hidden states
during transformers' ``generate`` (the prefill's last position predicts completion token 0,
each decode step the next one) instead of running a teacher-forced pass afterwards. Here the
recorded statistics are compared with a teacher-forced no-grad pass over the same completions
(the fallback, :meth:`EntropyGRPOTrainer.rollout_stats`): two prompt lengths in one left-padded
batch, completions ending at EOS and at ``max_completion_length``, temperature / top-k / top-p
sampling, ``mask_truncated_completions`` and ``pad_to_multiple_of``.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from trl import GRPOTrainer

from entropy_dynamics.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer

PROMPTS = ["12 + 7 = ", "3 * 45 - 6 / 2 = "]  # two lengths: the shorter one is left-padded
WIDTH = 12  # max_completion_length

SAMPLING = {
    "plain": {},
    "tempered_truncated_padded": {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.95,
        "mask_truncated_completions": True,
        "pad_to_multiple_of": 16,
    },
}


def _trainer(tmp_path, tiny_lm, **options) -> EntropyGRPOTrainer:
    model, tokenizer = tiny_lm
    model = copy.deepcopy(model)
    with torch.no_grad():  # a likelier EOS: some completions end at EOS, others at the limit
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 6.0
    args = EntropyGRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=WIDTH,
        entropy_filter="clip_b",
        entropy_filter_options={"mu": 0.2},  # drops some tokens of this random model
        bf16=False,
        report_to="none",
        seed=0,
        **options,
    )
    return EntropyGRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS] * 4),
        processing_class=tokenizer,
    )


def _generation_batch(trainer: EntropyGRPOTrainer, seed: int):
    """TRL's generation batch, the statistics the plug-in used and its keep-mask."""
    seen = []
    apply_filter = trainer.apply_filter

    def record(output, stats):
        out = apply_filter(output, stats)
        seen.append((stats, out["tool_mask"].clone()))
        return out

    trainer.apply_filter = record
    torch.manual_seed(seed)
    inputs = [{"prompt": p} for p in PROMPTS for _ in range(8)]
    output = trainer._generate_and_score_completions(inputs)
    trainer.apply_filter = apply_filter
    (stats, keep), = seen  # fmt: skip
    return output, stats, keep


@pytest.mark.skipif(
    not hasattr(GRPOTrainer, "_generate_single_turn"),
    reason="this TRL has no _generate_single_turn",
)
@pytest.mark.parametrize("name", sorted(SAMPLING))
def test_statistics_recorded_during_generation_equal_a_teacher_forced_pass(tmp_path, tiny_lm, name):
    trainer = _trainer(tmp_path, tiny_lm, **SAMPLING[name])
    assert not trainer._trl_runs_old_pass()
    refused = []
    rollout_stats = trainer.rollout_stats
    trainer.rollout_stats = lambda output: refused.append(output)  # must not be needed
    output, stats, keep = _generation_batch(trainer, seed=3)
    trainer.rollout_stats = rollout_stats
    assert trainer.stats_source == "generation" and not refused

    prompt_mask, tokens = output["prompt_mask"], output["completion_ids"]
    assert len(set(prompt_mask.sum(1).tolist())) == 2 and not prompt_mask[:, -1].eq(0).any()
    ends_at_eos = (tokens == tiny_lm[1].eos_token_id).any(1)
    assert ends_at_eos.any() and (~ends_at_eos).any(), "need completions of both endings"
    if name == "plain":
        lengths = output["completion_mask"].sum(1)
        assert (lengths[~ends_at_eos] == WIDTH).all()
    else:  # truncated rows are masked out, and completions are padded past the limit
        assert tokens.shape[1] == 16 and output["completion_mask"][~ends_at_eos].eq(0).all()

    reference = trainer.rollout_stats(output)  # teacher-forced, no grad, same completions
    valid = output["completion_mask"].bool()
    assert valid.sum() > 0
    for field in ("logprobs", "entropy", "discriminator", "expected_discriminator"):
        torch.testing.assert_close(
            getattr(stats, field)[valid], getattr(reference, field)[valid], rtol=1e-5, atol=1e-5
        )
    fresh = {k: v for k, v in output.items() if k != "tool_mask"}
    reference_keep = trainer.apply_filter(fresh, reference)["tool_mask"]
    dropped = valid & (keep == 0)
    assert dropped.any() and (valid & (keep == 1)).any()
    assert torch.equal(keep[valid], reference_keep[valid])


def test_a_misaligned_record_falls_back_to_the_teacher_forced_pass(tmp_path, tiny_lm):
    trainer = _trainer(tmp_path, tiny_lm)
    original = trainer.generation_stats

    def shifted(output):  # a record whose decode steps were fed other tokens
        for record in trainer._generations:
            record.fed = [fed + 1 for fed in record.fed]
        return original(output)

    trainer.generation_stats = shifted
    output, stats, _ = _generation_batch(trainer, seed=3)
    assert trainer.stats_source == "extra_pass"
    reference = trainer.rollout_stats(output)
    valid = output["completion_mask"].bool()
    torch.testing.assert_close(stats.entropy[valid], reference.entropy[valid])
