"""One run's setup, built once: model, tokenizer, prompted task, valid vocabulary, statistics.

Everything that turns a :class:`~entropy_dynamics.training.config.TrainConfig` into the objects
a run works with: the causal LM and its tokenizer (a checkpoint's model when resuming or
evaluating a run), the task with its prompts in the model's format
(:func:`~entropy_dynamics.training.prompts.build_prompted_task`), the output rows that are real
tokens (:func:`~entropy_dynamics.models.loading.valid_vocab_size`), the teacher-forced token
statistics (:class:`~entropy_dynamics.training.forward.ResponseStats`, fused where the model
allows it), the task's three splits (train; validation, which the run's own evaluations read;
test, which only final evaluations read), and the check that the longest prompt plus the
response fits the model's context. The trainer, ``train --dry-run``, ``eval``, the final
evaluation, ``analyze`` and ``filter-data`` all build it here.

Building loads the model and tokenizer and wraps the task; the problem lists and the statistics
are formed on first use (a dataset file is read only when its splits are asked for). Loading draws
no random numbers of its own, but a caller that seeds torch (the trainer) seeds it *before*
:meth:`RunSetup.build`, as the trainer always has.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.models.loading import load_model_and_tokenizer, valid_vocab_size
from entropy_dynamics.tasks.base import SPLITS, Split, Task
from entropy_dynamics.training.checkpoint import latest_checkpoint
from entropy_dynamics.training.config import TrainConfig, load_config
from entropy_dynamics.training.forward import ResponseStats
from entropy_dynamics.training.prompts import build_prompted_task, context_problem

__all__ = ["RunSetup"]


@dataclass(eq=False)
class RunSetup:
    """The objects one run works with (module docstring); build with :meth:`build` or
    :meth:`from_run`."""

    config: TrainConfig
    """The run's config: model, task, rollout (temperature, response length), eval."""
    model_path: Path
    """Where the model was loaded from (a checkpoint's ``model/`` directory when resuming)."""
    model: nn.Module
    """The causal LM, on its device, in train mode."""
    tokenizer: Any
    """Its tokenizer (pad token set)."""
    task: Task
    """The task, its prompts in the model's format (a user turn of its chat template, if any)."""
    valid_vocab: int | None
    """Output rows that are real tokens when the ``lm_head`` is padded, else ``None``."""
    checkpoint: Path | None = None
    """The checkpoint the model came from, if any."""

    @classmethod
    def build(
        cls, config: TrainConfig, checkpoint: Path | None = None, device: str | None = None
    ) -> RunSetup:
        """Load ``config.model`` (or ``checkpoint/model``, with the tokenizer it holds) on
        ``device`` (default ``config.model.device``) and wrap ``config.task`` for it.

        Raises:
            FileNotFoundError, ValueError: the model, tokenizer or task cannot be built (the
                message names the config field).
        """
        task_model = config.model.resolved_path(config.task.name)
        path = checkpoint / "model" if checkpoint else task_model
        model, tokenizer = load_model_and_tokenizer(
            path,
            config.model.dtype,
            device or config.model.device,
            "" if checkpoint else config.model.tokenizer,  # a checkpoint holds its tokenizer
        )
        task = build_prompted_task(config.task, tokenizer, config.model.chat_template)
        valid_vocab = valid_vocab_size(model, tokenizer)
        return cls(config, path, model, tokenizer, task, valid_vocab, checkpoint)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, config: TrainConfig | None = None, device: str | None = None
    ) -> RunSetup:
        """The setup of a run directory's newest checkpoint, with the run's ``config.yaml``
        (``config`` instead, if given; the defaults if the run has neither).

        Raises:
            FileNotFoundError: the run has no checkpoint.
        """
        run_dir = Path(run_dir)
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint under {run_dir}")
        if config is None:
            saved = run_dir / "config.yaml"
            config = load_config(saved) if saved.is_file() else TrainConfig()
        return cls.build(config, checkpoint, device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def stats(self) -> ResponseStats:
        """Token statistics at ``config.rollout.temperature``, fused as ``model.fused_stats``
        says (formed on first use: it runs one short probe forward)."""
        cfg = self.config
        return ResponseStats(
            self.model, cfg.rollout.temperature, cfg.model.fused_stats, self.valid_vocab
        )

    def initial_model(self) -> nn.Module:
        """A separate copy of the run's initial model, ``config.model`` (not a checkpoint's),
        on the setup's device: the KL penalty's reference. A copy of :attr:`model` when it is
        the initial model (not loaded from a checkpoint), else loaded again from
        ``model.path``."""
        if self.checkpoint is None:
            return copy.deepcopy(self.model)
        cfg = self.config.model
        model, _ = load_model_and_tokenizer(
            cfg.resolved_path(self.config.task.name), cfg.dtype, str(self.device), cfg.tokenizer
        )
        return model

    @cached_property
    def train_problems(self) -> list:
        """The task's training split."""
        return self.task.train_problems()

    @cached_property
    def validation_problems(self) -> list:
        """The task's validation split: the run's evaluations (``eval/*``), the forecast's probe
        set, diagnostics."""
        return self.task.validation_problems()

    @cached_property
    def test_problems(self) -> list:
        """The task's test split: final evaluations only."""
        return self.task.test_problems()

    def problems(self, split: Split) -> list:
        """The task's problems of ``split`` (``train``, ``validation`` or ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, f"{split}_problems")

    @property
    def eval_problems(self) -> list:
        """The problems of the run's in-run evaluations: the first ``config.eval.problems`` of
        the validation split."""
        return self.validation_problems[: self.config.eval.problems]

    def context_problem(self) -> str | None:
        """Why the longest prompt of the run (training problems, and the evaluated ones of
        validation and test) plus ``rollout.max_new_tokens`` would not fit the model's context,
        or ``None``."""
        tested = self.test_problems[: self.config.eval.problems]  # the final evaluation's
        prompts = [self.task.prompt(p) for p in self.train_problems + self.eval_problems + tested]
        max_new_tokens = self.config.rollout.max_new_tokens
        return context_problem(self.model, self.tokenizer, prompts, max_new_tokens)

    def check_context(self) -> None:
        """Raise :class:`ConfigError` with :meth:`context_problem`'s message, if any."""
        problem = self.context_problem()
        if problem:
            raise ConfigError(problem)
