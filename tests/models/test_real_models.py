"""Real-checkpoint features on test fixtures: BPE + chat template, padded vocabulary, GGUF files.
The chat-template prompts themselves: ``tests/training/test_prompts.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from entropy_dynamics.models.loading import load_model_and_tokenizer, valid_vocab_size
from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.prompts import chat_prompt, uses_chat
from entropy_dynamics.training.rollout import generate
from entropy_dynamics.training.trainer import Trainer


def test_padded_rows_are_never_sampled_nor_counted(chat_model_dir) -> None:
    model, tokenizer = load_model_and_tokenizer(chat_model_dir)
    valid = valid_vocab_size(model, tokenizer)
    rows = model.lm_head.out_features
    assert valid == len(tokenizer) and rows == valid + 24
    prompts = [chat_prompt(tokenizer, "What is 3 + 4?")]
    with torch.no_grad():  # the fixture makes padded rows likely: unmasked, they get sampled
        ids = torch.tensor([tokenizer(prompts[0])["input_ids"]])
        p = torch.softmax(model(ids).logits[0, -1].double(), -1)
    assert p[valid:].sum() > 0.05
    torch.manual_seed(0)
    rollout = generate(model, tokenizer, prompts, num_samples=32, max_new_tokens=8)
    sampled = rollout.response_ids[rollout.response_mask]
    assert sampled.max() < valid
    for mode in ("auto", "never"):  # fused and materialised statistics
        stats_path = ResponseStats(model, 1.0, mode, valid)
        with torch.no_grad():
            features = stats_path.features(rollout)
            stats = stats_path.stats(features, rollout.response_ids)
            logits = model(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask)
        z = logits.logits[:, rollout.prompt_length - 1 : -1, :valid].double()  # reference
        logp = torch.log_softmax(z, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        logp_k = logp.gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
        mask = rollout.response_mask
        torch.testing.assert_close(stats.logprobs[mask].double(), logp_k[mask], atol=1e-5, rtol=0)
        torch.testing.assert_close(stats.entropy[mask].double(), entropy[mask], atol=1e-5, rtol=0)
        assert stats_path.logits(features[:, :1]).shape[-1] == valid
        # The recorded sampling statistics are those of the same valid-vocabulary distribution.
        torch.testing.assert_close(
            rollout.sampling_logprobs[mask].double(), logp_k[mask], atol=1e-4, rtol=0
        )


def test_gguf_file_loads_as_the_model_it_was_exported_from(gguf_model_file) -> None:
    path, source, source_tokenizer = gguf_model_file
    model, tokenizer = load_model_and_tokenizer(path)
    text = "What is 12 + 7? The answer is \\boxed{19}."
    assert tokenizer(text)["input_ids"] == source_tokenizer(text)["input_ids"]
    assert tokenizer.eos_token == "<|im_end|>" and uses_chat(tokenizer)
    ids = torch.tensor([source_tokenizer(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="GGUF file"):
        load_model_and_tokenizer(path.with_name("missing.gguf"))


GSM8K = Path(__file__).parents[1] / "data" / "math" / "gsm8k.jsonl"
TASKS = {
    "countdown": [
        "task.countdown.n_train=20", "task.countdown.n_validation=4", "task.countdown.n_test=4"
    ],
    "math": [
        "task.name=math", f"task.math.path={GSM8K}", "task.math.validation_size=2",
        "task.math.test_size=2",
    ],
}


def _model_path(request, fixture: str) -> Path:
    value = request.getfixturevalue(fixture)
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.filterwarnings("ignore:.*malformed|skipped:UserWarning")
@pytest.mark.parametrize("task", ["countdown", "math"])
@pytest.mark.parametrize("fixture", ["chat_model_dir", "gguf_model_file"])
def test_two_training_steps_on_real_format_models(fixture, task, request, tmp_path) -> None:
    config = load_config(
        None,
        [
            f"model.path={_model_path(request, fixture)}",
            f"output_dir={tmp_path}",
            "steps=2",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.max_new_tokens=6",
            "eval.every=0",
            "tensorboard=false",
            *TASKS[task],
        ],
    )
    trainer = Trainer(config, config.run_dir)
    assert trainer.forward.fused and isinstance(trainer.task.prompt(trainer.train_problems[0]), str)
    assert trainer.task.prompt(trainer.train_problems[0]).startswith("<|im_start|>user\n")
    history = trainer.train()
    assert len(history) == 2 and trainer.step == 2
    assert all(torch.isfinite(torch.tensor(row["actor/loss"])) for row in history)
    assert (config.run_dir / "checkpoints").is_dir()


@pytest.mark.parametrize("fixture", ["chat_model_dir", "gguf_model_file"])
def test_analyze_runs_on_real_format_models(fixture, request, tmp_path) -> None:
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    model = _model_path(request, fixture)
    out = tmp_path / "analysis"
    args = ["analyze", "--model", str(model), "--data", str(GSM8K), "-n", "2", "--samples", "2"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "6", "-o", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("tokens.csv", "tokens.html", "one_step.json"):
        assert (out / name).stat().st_size > 0, name
    assert "&lt;|im_start|&gt;user" in (out / "tokens.html").read_text()  # chat-template prompt


def test_a_separate_tokenizer_directory_is_used(gguf_model_file, random_model_dir) -> None:
    # model.tokenizer overrides the model's own (here the GGUF's) tokenizer.
    path, _, _ = gguf_model_file
    _, own = load_model_and_tokenizer(path)
    _, other = load_model_and_tokenizer(path, tokenizer=random_model_dir)
    assert uses_chat(own) and not uses_chat(other)
    assert other("7 3")["input_ids"] != own("7 3")["input_ids"]
    assert other.eos_token == "<eos>"
