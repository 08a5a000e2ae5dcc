"""``--task NAME``: a task with the settings it needs besides its name (``train``, ``eval``).

A preset is a list of ``key=value`` settings applied *under* the user's config: a YAML file's
fields and ``key=value`` overrides win over it, so it only fills what the user left unset. The
model needs no entry: an empty ``model.path`` is the task's embedded model
(:data:`entropy_dynamics.models.EMBEDDED_MODELS`).
"""

from __future__ import annotations

from typing import Any

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.tasks.countdown_search import CountdownSearchConfig
from entropy_dynamics.training.config_io import apply_overrides

__all__ = ["TASK_PRESETS", "task_preset", "under"]

TASK_PRESETS: dict[str, tuple[str, ...]] = {
    "countdown": ("task.name=countdown",),
    "countdown_search": (
        "task.name=countdown_search",
        # a trace is read up to its response cap: sample as far as the grader reads
        f"rollout.max_new_tokens={CountdownSearchConfig().max_response_chars}",
        # answers of 5 to 512 tokens: micro-batches packed by length spend nothing on padding
        # (a step 4.9 → 1.9 s, peak memory 4.1 → 0.7 GB on 2 CPU cores; docs/performance.md)
        "algorithm.micro_batch_tokens=2048",
    ),
    "math": ("task.name=math",),
}
"""Each task's settings besides the defaults of :class:`~.config.TrainConfig`."""


def task_preset(name: str) -> list[str]:
    """The ``key=value`` settings of task ``name``; an unknown name is refused with the list."""
    if name not in TASK_PRESETS:
        raise ConfigError(f"--task: unknown task {name!r}; choose from {', '.join(TASK_PRESETS)}")
    return list(TASK_PRESETS[name])


def _is_set(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def under(data: dict[str, Any], preset: list[str]) -> dict[str, Any]:
    """``data`` (a YAML file's fields) with each preset setting it does not set itself."""
    missing = [item for item in preset if not _is_set(data, item.partition("=")[0])]
    return apply_overrides(data, missing)
