"""Tasks: problems, prompts and outcome rewards behind the :class:`~.base.Task` protocol.

``build_task(config.task)`` is what the trainer calls; Countdown (TinyZero) is the embedded task,
``countdown_search`` asks its problems for a search trace that ends in the answer, ``math`` reads
GSM8K / MATH / DAPO-Math-style dataset files and grades with ``math-verify``.

What lives here: the protocol (``base``), each task with its config and reward (``countdown``,
``countdown_search``, ``math``), the math dataset layouts and their loading (``math_problems``),
and the tasks' private helpers (``_countdown_solver``, ``_countdown_traces``, ``_math_grading``,
``_records``). Imports: the top-level mathematics at most (and ``errors``); never ``models``,
``training``, ``study`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from entropy_dynamics.tasks.base import SPLITS, Split, Task, TaskReward
from entropy_dynamics.tasks.countdown import (
    PROMPT_TEMPLATE,
    CountdownConfig,
    CountdownProblem,
    CountdownReward,
    CountdownTask,
    format_prompt,
    generate_problems,
    score,
    solve,
)
from entropy_dynamics.tasks.countdown_search import (
    STRATEGIES,
    CountdownSearchConfig,
    CountdownSearchTask,
    parse_trace,
    score_trace,
    search_trace,
)
from entropy_dynamics.tasks.math import (
    DEFAULT_PROMPT_TEMPLATE,
    DataIssue,
    MathConfig,
    MathProblem,
    MathReward,
    MathTask,
    load_problems,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "PROMPT_TEMPLATE",
    "SPLITS",
    "STRATEGIES",
    "TASKS",
    "CountdownConfig",
    "CountdownProblem",
    "CountdownReward",
    "CountdownSearchConfig",
    "CountdownSearchTask",
    "CountdownTask",
    "DataIssue",
    "MathConfig",
    "MathProblem",
    "MathReward",
    "MathTask",
    "Split",
    "Task",
    "TaskReward",
    "build_task",
    "format_prompt",
    "generate_problems",
    "load_problems",
    "parse_trace",
    "score",
    "score_trace",
    "search_trace",
    "solve",
]

TASKS: dict[str, Callable[[Any], Task]] = {
    "countdown": lambda task_config: CountdownTask(task_config.countdown),
    "countdown_search": lambda task_config: CountdownSearchTask(
        task_config.countdown, task_config.countdown_search
    ),
    "math": lambda task_config: MathTask(task_config.math),
}
"""Task builders by name; each takes the ``task`` section of the training config."""


def build_task(task_config: Any) -> Task:
    """The task named ``task_config.name``, built from its section of ``task_config``."""
    name = getattr(task_config, "name", None)
    if name not in TASKS:
        raise ValueError(f"task.name: unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name](task_config)
