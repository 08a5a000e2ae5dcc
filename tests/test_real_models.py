"""Real-checkpoint features on test fixtures: BPE + chat template, padded vocabulary, GGUF files."""

from __future__ import annotations

import pytest
import torch

from entropy_dynamics.config import TaskConfig, load_config
from entropy_dynamics.forward import ResponseStats
from entropy_dynamics.models.loading import load_model_and_tokenizer, valid_vocab_size
from entropy_dynamics.prompts import build_prompted_task, chat_prompt, uses_chat
from entropy_dynamics.rollout import generate
from entropy_dynamics.trainer import Trainer


def test_chat_template_wraps_task_prompts(chat_model_dir, tiny_lm) -> None:
    _, tokenizer = load_model_and_tokenizer(chat_model_dir)
    assert uses_chat(tokenizer, "auto") and not uses_chat(tokenizer, "never")
    task = build_prompted_task(TaskConfig(), tokenizer, "auto")
    plain = build_prompted_task(TaskConfig(), tokenizer, "never")
    problem = task.eval_problems()[0]
    # ChatML, by hand: one user turn, then the assistant header.
    expected = f"<|im_start|>user\n{plain.prompt(problem)}<|im_end|>\n<|im_start|>assistant\n"
    assert task.prompt(problem) == expected == chat_prompt(tokenizer, plain.prompt(problem))
    assert task.score(problem, "no answer").correct == 0.0
    char_tokenizer = tiny_lm[1]  # no chat template
    assert not uses_chat(char_tokenizer, "auto")
    with pytest.raises(ValueError, match=r"chat_template=always.*no chat template"):
        build_prompted_task(TaskConfig(), char_tokenizer, "always")


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


@pytest.mark.parametrize("fixture", ["chat_model_dir", "gguf_model_file"])
def test_two_training_steps_on_real_format_models(fixture, request, tmp_path) -> None:
    value = request.getfixturevalue(fixture)
    path = value[0] if isinstance(value, tuple) else value
    config = load_config(
        None,
        [
            f"model.path={path}",
            f"output_dir={tmp_path}",
            "steps=2",
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.max_new_tokens=6",
            "eval.every=0",
            "tensorboard=false",
            "task.countdown.n_train=20",
            "task.countdown.n_eval=4",
        ],
    )
    trainer = Trainer(config, config.run_dir)
    assert trainer.forward.fused and isinstance(trainer.task.prompt(trainer.train_problems[0]), str)
    assert trainer.task.prompt(trainer.train_problems[0]).startswith("<|im_start|>user\n")
    history = trainer.train()
    assert len(history) == 2 and trainer.step == 2
    assert all(torch.isfinite(torch.tensor(row["actor/loss"])) for row in history)
    assert (config.run_dir / "checkpoints").is_dir()
