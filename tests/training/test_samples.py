"""Sample completions every N steps: which rows, what each record holds, TensorBoard's text tab,
resume, and a run's ``samples.jsonl``."""

from __future__ import annotations

import json

import pytest
import torch

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.samples import (
    SAMPLES_FILE,
    SampleLog,
    sample_records,
    sample_rows,
    samples_markdown,
)
from entropy_dynamics.training.trainer import Trainer
from run_helpers import run_args


def test_sample_rows_take_one_per_prompt_first() -> None:
    index = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert sample_rows(index, 4) == [0, 3, 6, 1]
    assert sample_rows(index, 2) == [0, 3]
    assert sample_rows(index, 20) == [0, 3, 6, 1, 2, 4, 5, 7, 8]


@pytest.fixture(scope="module")
def batch(tiny_lm):
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    prompts = ["7 3 2 -> 23: ", "1 9 -> 10: "]
    rollout = generate(model, tokenizer, prompts, num_samples=2, max_new_tokens=6)
    stats = ResponseStats(model, 1.0)
    with torch.no_grad():
        old = stats.stats(stats.features(rollout), rollout.response_ids)
    return prompts, rollout, old, tokenizer


def test_records_hold_the_text_scores_and_per_token_statistics(batch) -> None:
    prompts, rollout, old, tokenizer = batch
    reward, advantage = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0.7, -0.7, -0.7, 0.7])
    records = sample_records(5, [0, 2], prompts, rollout, reward, advantage, old, tokenizer)
    assert [r["prompt"] for r in records] == prompts
    for record, row in zip(records, [0, 2], strict=True):
        valid = rollout.response_mask[row]
        assert record["step"] == 5 and record["completion"] == rollout.completions[row]
        assert record["reward"] == reward[row].item() and record["advantage"] == pytest.approx(
            advantage[row].item()
        )
        n = int(valid.sum())
        assert len(record["tokens"]) == len(record["entropy"]) == len(record["s_k"]) == n
        assert record["entropy"] == pytest.approx(old.entropy[row][valid].tolist(), abs=1e-5)
        assert record["s_k"] == pytest.approx(old.discriminator[row][valid].tolist(), abs=1e-5)
        assert "".join(record["tokens"]).startswith(record["completion"])  # then EOS, if any
    table = samples_markdown(records)
    assert table.count("\n") == 3 and "| prompt | completion |" in table


def test_the_log_writes_due_steps_to_file_and_tensorboard_and_resumes(tmp_path, batch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prompts, rollout, old, tokenizer = batch
    reward, advantage = torch.zeros(4), torch.zeros(4)
    log = SampleLog(tmp_path, every=2, count=3, tokenizer=tokenizer, tensorboard=True)
    for step in range(1, 7):
        log.write(step, prompts, rollout, reward, advantage, old)
    log.close()
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2, 4, 4, 4, 6, 6, 6]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Tensors("samples/text_summary")] == [2, 4, 6]
    SampleLog(tmp_path, every=2, count=3, tokenizer=tokenizer, resume_step=4)  # resumed at 4
    rows = [json.loads(line) for line in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2, 4, 4, 4]
    with pytest.raises(Exception, match="samples_every must be >= 0"):
        load_config(None, ["logging.samples_every=-1"])


def test_a_run_logs_its_samples(tmp_path, random_model_dir) -> None:
    args = run_args(random_model_dir, tmp_path, "s", 3, "logging.samples_every=2",
                    "logging.samples=3")  # fmt: skip
    config = load_config(None, args)
    Trainer(config, config.run_dir).train()
    rows = [json.loads(line) for line in (config.run_dir / SAMPLES_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 2, 2]
    fields = {"prompt", "completion", "reward", "advantage", "tokens", "entropy", "s_k"}
    assert fields <= set(rows[0])


def test_logging_samples_changes_nothing_a_run_computes(tmp_path, random_model_dir) -> None:
    from run_helpers import comparable

    rows = {}
    for every in (0, 1):
        args = run_args(random_model_dir, tmp_path, f"every{every}", 2,
                        f"logging.samples_every={every}")  # fmt: skip
        config = load_config(None, args)
        Trainer(config, config.run_dir).train()
        rows[every] = comparable(config.run_dir)
    assert rows[0] == rows[1]
    assert not (tmp_path / "every0" / SAMPLES_FILE).exists()
    assert (tmp_path / "every1" / SAMPLES_FILE).exists()
