"""Run under ``torchrun --nproc_per_node 2`` (CPU, gloo) by ``test_trl_distributed.py``.

Each process holds a different local generation batch (different rows, different completion
widths); the plug-in decides the keep-mask on the gathered batch. Rank 0 rebuilds the whole
batch from every rank's local tensors, runs ``select_tokens`` on it directly and writes, as JSON
to ``argv[1]``, whether each rank's mask and ``num_items_in_batch`` equal the whole-batch ones.

With ``argv[2] == "control"`` the filter is ``entropy_target`` driven by its controller, with the
monitor after each of three batches: rank 0 also checks that both ranks' controller states are
equal and equal to our trainer's controller replayed on the whole batches.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from datasets import Dataset
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from entropy_dynamics.advantages import broadcast_to_tokens
from entropy_dynamics.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer
from entropy_dynamics.losses import select_tokens
from entropy_dynamics.stats import TokenStats

B, P = 4, 5


CONTROL = {"target": 3.0, "ki": 0.2, "schedule": "linear", "target_final": 2.5}
TARGET_OPTIONS = {"gain": 1.0, "max_share": 0.3, "band": 0.01}


def main(out_path: str, mode: str = "filter") -> None:
    torch.manual_seed(0)  # the same weights on every rank
    config = Qwen2Config(
        vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    args = EntropyGRPOConfig(
        output_dir=out_path + ".trainer", per_device_train_batch_size=B, num_generations=B,
        max_completion_length=9, bf16=False, use_cpu=True, report_to="none",
        **(
            {"entropy_filter": "entropy_target", "entropy_filter_options": TARGET_OPTIONS,
             "entropy_control": CONTROL, "entropy_dynamics_monitor_every": 1, "max_steps": 3}
            if mode == "control" else
            {"entropy_filter": "clip_b", "entropy_filter_options": {"mu": 0.5}}
        ),
    )  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "a": 2}, "<pad>")),
        pad_token="<pad>", eos_token="<eos>",
    )  # fmt: skip
    trainer = EntropyGRPOTrainer(
        model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_list([{"prompt": "a"}] * 8), processing_class=tokenizer,
    )  # fmt: skip
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    assert world == 2, world
    if mode == "control":
        return control(trainer, rank, world, out_path)
    gen = torch.Generator().manual_seed(100 + rank)
    width = 9 if rank == 0 else 6  # ragged across processes: the gather pads
    lengths = torch.randint(2, width + 1, (B,), generator=gen)
    completion_mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
    output = {
        "prompt_ids": torch.randint(2, 48, (B, P), generator=gen),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        # rank 1 repeats one token: its discriminators sit apart from rank 0's, so the moments
        # of the whole batch differ from each rank's own
        "completion_ids": torch.randint(2, 48, (B, width), generator=gen)
        if rank == 0
        else torch.full((B, width), 7),
        "completion_mask": completion_mask,
        "advantages": torch.randn(B, generator=gen),
        "num_items_in_batch": completion_mask.sum(),
    }
    stats = trainer.rollout_stats(output)
    output = trainer.apply_filter(output, stats)
    fields = (stats.logprobs, stats.entropy, stats.discriminator, stats.expected_discriminator)
    local = {
        "stats": [t.tolist() for t in fields],
        "advantages": output["advantages"].tolist(),
        "mask": completion_mask.tolist(),
        "keep": (output["tool_mask"] * completion_mask).tolist(),
        "num_items": int(output["num_items_in_batch"]),
    }
    everything = [None] * world
    dist.all_gather_object(everything, local)
    if rank == 0:
        c_max = max(len(r["mask"][0]) for r in everything)

        def padded(rows):
            t = torch.tensor(rows, dtype=torch.float32)
            return torch.nn.functional.pad(t, (0, c_max - t.shape[1]))

        mask = torch.cat([padded(r["mask"]) for r in everything]).bool()
        fields = [torch.cat([padded(r["stats"][i]) for r in everything]) for i in range(4)]
        seq_adv = torch.cat([torch.tensor(r["advantages"]) for r in everything])
        keep, _ = select_tokens(
            trainer.filter_config, TokenStats(*fields), broadcast_to_tokens(seq_adv, mask), mask
        )
        keep = keep & mask
        got = torch.cat([padded(r["keep"]) for r in everything]).bool()
        # what each rank would decide from its own rows alone (the test's sensitivity)
        alone = []
        for r in everything:
            m = torch.tensor(r["mask"]).bool()
            own = TokenStats(*(torch.tensor(x) for x in r["stats"]))
            adv = broadcast_to_tokens(torch.tensor(r["advantages"]), m)
            alone.append(padded((select_tokens(trainer.filter_config, own, adv, m)[0] & m).int()))
        result = {
            "local_decision_differs": not torch.equal(torch.cat(alone).bool(), keep),
            "masks_equal": bool(torch.equal(got, keep)),
            "dropped": int((mask & ~keep).sum()),
            "num_items": [r["num_items"] for r in everything],
            "kept_total": int(keep.sum()),
        }
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.barrier()


def _local_batch(rank: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed + rank)
    width = 9 if rank == 0 else 6
    lengths = torch.randint(2, width + 1, (B,), generator=gen)
    completion_mask = (torch.arange(width) < lengths.unsqueeze(1)).long()
    return {
        "prompt_ids": torch.randint(2, 48, (B, P), generator=gen),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.randint(2, 48, (B, width), generator=gen),
        "completion_mask": completion_mask,
        "advantages": torch.randn(B, generator=gen),
        "num_items_in_batch": completion_mask.sum(),
    }


def control(trainer, rank: int, world: int, out_path: str) -> None:
    """Three generation batches through the controller, each closed by the monitor."""
    trainer.model.train()
    trainer.state.max_steps = 3
    per_batch = trainer.args.steps_per_generation * trainer.num_iterations
    local = []
    for step in range(3):
        trainer.state.global_step = step * per_batch // trainer.args.gradient_accumulation_steps
        output = _local_batch(rank, 10 * step)
        stats = trainer.rollout_stats(output)
        output = trainer.apply_filter(output, stats)
        fields = (stats.logprobs, stats.entropy, stats.discriminator, stats.expected_discriminator)
        trainer._step += per_batch  # the batch's micro-steps are done: the monitor runs
        trainer.control.finish()
        local.append({
            "stats": [t.tolist() for t in fields], "advantages": output["advantages"].tolist(),
            "mask": output["completion_mask"].tolist(),
            "keep": (output["tool_mask"] * output["completion_mask"]).tolist(),
            "target": trainer.control.config.filter_options["target"],
            "state": dict(trainer.control.engine.controller.state),
            "delta_h": trainer._metrics["train"]["dynamics/delta_h_actual"][-1],
        })  # fmt: skip
    everything = [None] * world
    dist.all_gather_object(everything, local)
    if rank == 0:
        from entropy_dynamics.losses import PolicyLossConfig
        from entropy_dynamics.methods import build_controller

        base = PolicyLossConfig(filter="entropy_target", filter_options=TARGET_OPTIONS)
        controller = build_controller("entropy_target", CONTROL, base, 3)
        same, dropped, failed = True, 0, []
        for step in range(3):
            rows = [r[step] for r in everything]
            c_max = max(len(r["mask"][0]) for r in rows)

            def padded(values, c_max=c_max):
                t = torch.tensor(values, dtype=torch.float32)
                return torch.nn.functional.pad(t, (0, c_max - t.shape[1]))

            mask = torch.cat([padded(r["mask"]) for r in rows]).bool()
            parts = [torch.cat([padded(r["stats"][i]) for r in rows]) for i in range(4)]
            whole = TokenStats(*parts)
            seq_adv = torch.cat([torch.tensor(r["advantages"]) for r in rows])
            adv = broadcast_to_tokens(seq_adv, mask)
            config, control_metrics = controller.begin(step, whole, mask)
            keep, metrics = select_tokens(config, whole, adv, mask)
            got = torch.cat([padded(r["keep"]) for r in rows]).bool()
            dropped += int((mask & ~keep).sum())
            target = config.filter_options["target"]
            checks = [bool(torch.equal(got, keep & mask)), all(r["target"] == target for r in rows)]
            same &= all(checks)
            delta_h = torch.tensor(rows[0]["delta_h"], dtype=torch.float64)
            measured = {"dynamics/delta_h_actual": delta_h}
            controller.end({**control_metrics, **metrics, **measured})
            checks.append(all(r["state"] == controller.state for r in rows))  # both ranks, ours
            same &= all(checks)
            failed.extend(f"step {step} check {i}" for i, ok in enumerate(checks) if not ok)
        with open(out_path, "w") as f:
            result = {"same": same, "dropped": dropped, "state": controller.state, "failed": failed}
            json.dump(result, f)
    dist.barrier()


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    finally:
        # a gloo group left to interpreter exit can abort one rank ("terminate called without an
        # active exception") after all the work is done: close it while both ranks still run
        if dist.is_initialized():
            dist.destroy_process_group()
