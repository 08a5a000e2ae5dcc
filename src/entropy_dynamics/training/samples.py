"""Sample completions, logged every N steps (TRL's ``log_completions``, verl's
``log_val_generations``): ``run_dir/samples.jsonl`` and TensorBoard's text tab.

- which: ``logging.samples`` sequences of the step's rollout batch, one per prompt first (the
  first sample of each group), then the following rows, so a step shows several problems;
- each record: ``step``, ``prompt``, ``completion``, ``reward``, ``advantage`` (the sequence's
  group-relative advantage) and, per response token, the ``token``, its entropy ``H`` and its
  ``S_k = p_k (H + log p_k)`` under the rollout policy (the statistics the filters see);
- a resumed run drops the records after its checkpoint, as ``metrics.jsonl`` does; nothing here
  draws random numbers or changes what a step computes.

Shapes: ``N`` sequences, ``R`` response positions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from entropy_dynamics.stats import TokenStats
from entropy_dynamics.training.rollout import Rollout

__all__ = ["SAMPLES_FILE", "SampleLog", "sample_records", "sample_rows", "samples_markdown"]

SAMPLES_FILE = "samples.jsonl"


def sample_rows(prompt_index: Tensor, count: int) -> list[int]:
    """``count`` rows of a batch whose ``(N,)`` ``prompt_index`` groups its samples: the first
    row of each prompt in order, then the remaining rows in order."""
    index = prompt_index.tolist()
    firsts = [row for row, p in enumerate(index) if p not in index[:row]]
    rest = [row for row in range(len(index)) if row not in firsts]
    return (firsts + rest)[:count]


def sample_records(
    step: int,
    rows: list[int],
    prompts: list[str],
    rollout: Rollout,
    reward: Tensor,
    advantage: Tensor,
    stats: TokenStats,
    tokenizer: Any,
) -> list[dict[str, Any]]:
    """One record per row of ``rows`` (module docstring). ``prompts``: the text of each prompt
    index; ``reward``, ``advantage``: ``(N,)``; ``stats``: ``(N, R)`` rollout-policy statistics."""
    records = []
    for row in rows:
        valid = rollout.response_mask[row].bool()  # (R,)
        ids = rollout.response_ids[row][valid].tolist()
        records.append({
            "step": step,
            "prompt": prompts[int(rollout.prompt_index[row])],
            "completion": rollout.completions[row],
            "reward": float(reward[row]),
            "advantage": float(advantage[row]),
            "tokens": [tokenizer.decode([i]) for i in ids],
            "entropy": [round(float(h), 5) for h in stats.entropy[row][valid]],
            "s_k": [round(float(s), 5) for s in stats.discriminator[row][valid]],
        })  # fmt: skip
    return records


def samples_markdown(records: list[dict[str, Any]]) -> str:
    """The records as a Markdown table (TensorBoard's text tab renders it)."""
    lines = ["| prompt | completion | reward | advantage | mean H |", "|---|---|---|---|---|"]
    for r in records:
        mean_h = sum(r["entropy"]) / max(len(r["entropy"]), 1)
        cells = [r["prompt"], r["completion"], f"{r['reward']:.3g}", f"{r['advantage']:.3g}",
                 f"{mean_h:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") or " "


class SampleLog:
    """Writes the samples of every ``every``-th step (0: never) to ``run_dir/samples.jsonl`` and,
    with ``tensorboard``, as text to ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Path, every: int, count: int, tokenizer: Any,
                 resume_step: int = 0, tensorboard: bool = False) -> None:  # fmt: skip
        self.path, self.every, self.count = run_dir / SAMPLES_FILE, every, count
        self.tokenizer, self.tensorboard, self._tb = tokenizer, tensorboard, None
        if resume_step > 0 and self.path.exists():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if _step_of(line) <= resume_step]
            tmp = self.path.with_name(SAMPLES_FILE + ".tmp")  # atomic: a kill keeps the old file
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)

    def due(self, step: int) -> bool:
        return self.every > 0 and self.count > 0 and step % self.every == 0

    def write(self, step: int, prompts: list[str], rollout: Rollout, reward: Tensor,
              advantage: Tensor, stats: TokenStats) -> None:  # fmt: skip
        """Log step ``step``'s samples when it is due (:meth:`due`)."""
        if not self.due(step):
            return
        with torch.no_grad():
            rows = sample_rows(rollout.prompt_index, self.count)
            records = sample_records(step, rows, prompts, rollout, reward, advantage, stats,
                                     self.tokenizer)  # fmt: skip
        with self.path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        if self.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.path.parent / "tensorboard"))
            self._tb.add_text("samples", samples_markdown(records), step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 1 << 62  # a torn line: dropped
