"""Task prompts as the model expects them: plain text, or one user turn of its chat template.

Instruct models (Qwen2.5-7B-Instruct in the paper) are trained on their chat template; a base
model or the embedded one continues plain text. :func:`build_prompted_task` wraps a task so that
every consumer of ``task.prompt`` — trainer, evaluation, final evaluation, analysis — sends the
same text. The rendered template is tokenized like any prompt (``tokenizer(text)``), so a BOS the
template writes is removed when the tokenizer adds its own (no doubled BOS).
"""

from __future__ import annotations

from typing import Any, Literal

from entropy_dynamics.tasks import build_task
from entropy_dynamics.tasks.base import Task, TaskReward, score_all

__all__ = [
    "ChatTemplateMode",
    "ChatTemplateTask",
    "build_prompted_task",
    "chat_prompt",
    "uses_chat",
]

ChatTemplateMode = Literal["auto", "always", "never"]


def uses_chat(tokenizer, mode: ChatTemplateMode = "auto") -> bool:
    """Whether prompts go through the chat template: ``auto`` iff the tokenizer has one."""
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"model.chat_template must be auto, always or never, got {mode!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "always" and not has_template:
        raise ValueError(
            "model.chat_template=always, but the tokenizer has no chat template "
            "(tokenizer_config.json 'chat_template' or chat_template.jinja); use auto or never"
        )
    return has_template and mode != "never"


def chat_prompt(tokenizer, text: str, adds_bos: bool | None = None) -> str:
    """``text`` as the single user message of the chat template, ready for the assistant turn.

    ``adds_bos``: whether ``tokenizer(text)`` prepends BOS itself (``None``: find out).
    """
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    if bos and rendered.startswith(bos):
        strip = _adds_bos(tokenizer) if adds_bos is None else adds_bos
        rendered = rendered[len(bos) :] if strip else rendered
    return rendered


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


class ChatTemplateTask:
    """A task whose prompts are rendered through ``tokenizer``'s chat template."""

    def __init__(self, task: Task, tokenizer) -> None:
        self.task = task
        self.tokenizer = tokenizer
        self.name = task.name
        self.adds_bos = _adds_bos(tokenizer)  # once, not per prompt

    def train_problems(self) -> list[Any]:
        return self.task.train_problems()

    def validation_problems(self) -> list[Any]:
        return self.task.validation_problems()

    def test_problems(self) -> list[Any]:
        return self.task.test_problems()

    def prompt(self, problem: Any) -> str:
        return chat_prompt(self.tokenizer, self.task.prompt(problem), self.adds_bos)

    def score(self, problem: Any, completion: str) -> TaskReward:
        return self.task.score(problem, completion)

    def score_many(self, problems: list[Any], completions: list[str]) -> list[TaskReward]:
        return score_all(self.task, problems, completions)

    def reference_solutions(self, problem: Any) -> list[str]:
        return self.task.reference_solutions(problem)


def build_prompted_task(task_config: Any, tokenizer, mode: ChatTemplateMode = "auto") -> Task:
    """``build_task(task_config)``, wrapped in the chat template when :func:`uses_chat` says so."""
    task = build_task(task_config)
    return ChatTemplateTask(task, tokenizer) if uses_chat(tokenizer, mode) else task


def context_problem(model, tokenizer, prompts: list[str], max_new_tokens: int) -> str | None:
    """Why the longest prompt plus ``max_new_tokens`` would not fit the model's context
    (``config.max_position_embeddings``), or ``None`` when it fits (or the model sets no limit)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not limit or not prompts:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)  # the Rust tokenizer: no lists built
    if backend is not None:
        longest = max(len(encoding.ids) for encoding in backend.encode_batch(prompts))
    else:
        longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    if longest + max_new_tokens <= limit:
        return None
    return (
        f"rollout.max_new_tokens: the longest prompt has {longest} tokens, so {longest} + "
        f"{max_new_tokens} new tokens exceed the model's context of {limit} positions; lower "
        f"rollout.max_new_tokens to at most {max(limit - longest, 0)} or shorten the prompts"
    )
