"""Task prompts as the model expects them (``training/prompts.py``): one user turn of a chat
template where the tokenizer has one, plain text otherwise, and never a doubled BOS."""

from __future__ import annotations

import pytest

from entropy_dynamics.models.loading import load_model_and_tokenizer
from entropy_dynamics.training.config import TaskConfig
from entropy_dynamics.training.prompts import build_prompted_task, chat_prompt, uses_chat


def test_chat_template_wraps_task_prompts(chat_model_dir, tiny_lm) -> None:
    _, tokenizer = load_model_and_tokenizer(chat_model_dir)
    assert uses_chat(tokenizer, "auto") and not uses_chat(tokenizer, "never")
    task = build_prompted_task(TaskConfig(), tokenizer, "auto")
    plain = build_prompted_task(TaskConfig(), tokenizer, "never")
    problem = task.validation_problems()[0]
    assert task.test_problems() == plain.test_problems()  # the task's splits, passed through
    # ChatML, by hand: one user turn, then the assistant header.
    expected = f"<|im_start|>user\n{plain.prompt(problem)}<|im_end|>\n<|im_start|>assistant\n"
    assert task.prompt(problem) == expected == chat_prompt(tokenizer, plain.prompt(problem))
    assert task.score(problem, "no answer").correct == 0.0
    char_tokenizer = tiny_lm[1]  # no chat template
    assert not uses_chat(char_tokenizer, "auto")
    with pytest.raises(ValueError, match=r"chat_template=always.*no chat template"):
        build_prompted_task(TaskConfig(), char_tokenizer, "always")


def test_a_template_bos_is_not_doubled_by_the_tokenizer() -> None:
    # Llama-style: the template writes BOS and tokenizer(text) prepends BOS too; the rendered
    # prompt must encode to exactly one BOS. Without automatic BOS the template's stays.
    from tokenizers import processors

    from model_fixtures import CHATML, bpe_tokenizer

    tokenizer = bpe_tokenizer()
    bos = "<|endoftext|>"
    bos_id = tokenizer.convert_tokens_to_ids(bos)
    tokenizer.bos_token = bos
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    plain = chat_prompt(tokenizer, "hi")
    assert plain.startswith(bos)  # the tokenizer adds no BOS: keep the template's
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, bos_id)]
    )
    rendered = chat_prompt(tokenizer, "hi")
    assert rendered == plain[len(bos) :]
    ids = tokenizer(rendered)["input_ids"]
    assert ids[0] == bos_id and ids.count(bos_id) == 1
    task = build_prompted_task(TaskConfig(), tokenizer)
    problem = task.test_problems()[0]
    assert tokenizer(task.prompt(problem))["input_ids"].count(bos_id) == 1
