"""Supervised pretraining of the embedded model on Countdown, to a *partial* success rate.

The RL experiments need a policy with something left to learn and entropy left to lose, so this
is deliberately a short run, not a run to convergence:

- data: prompts from the task's training split; the target of each example is *one* reference
  solution chosen at random among all of the problem's solutions, followed by ``<eos>``, so the
  model learns a distribution over many valid answers rather than one canonical answer. With
  ``task_name="countdown_search"`` the prompts are ``countdown_search``'s and the targets are
  the solver's search traces (:meth:`.CountdownSearchTask.search_traces`): one of the
  strategies' traces that solve the problem (``search_traces="solved"``) or one of all the
  strategies' traces, those ending in ``answer: none`` included (``"all"``, as in Gandhi et al.,
  2024, stream of search); problems that no strategy solves are skipped either way;
- loss: next-token cross-entropy on completion tokens only (prompt and padding masked out),
  averaged over completion tokens of the batch;
- optimiser: AdamW, linear warm-up then cosine decay to ``min_lr_ratio · lr``, gradient clipping;
- determinism: one seed drives initialisation (``torch.manual_seed``), the data order and the
  solution choices (``random.Random(seed)``) and the evaluation samples;
- evaluation: the first ``eval_problems`` of the validation split (a diagnostic of the model,
  never the test split), ``eval_samples`` answers each sampled at temperature 1 with
  ``model.generate`` (via :func:`entropy_dynamics.training.evaluate.evaluate`): pass@1, Pass@k
  and the mean token entropy of the sampled answers.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from entropy_dynamics.finite import check_finite_fields
from entropy_dynamics.models.architecture import ModelSize, build_model, count_parameters
from entropy_dynamics.models.tokenizer import build_tokenizer, save_tokenizer
from entropy_dynamics.tasks.countdown import CountdownConfig, CountdownProblem, CountdownTask
from entropy_dynamics.tasks.countdown_search import CountdownSearchConfig, CountdownSearchTask

__all__ = [
    "METRICS_FILE",
    "PRETRAIN_TASKS",
    "ExampleStream",
    "PretrainConfig",
    "encode_examples",
    "example_stream",
    "lr_schedule",
    "pretrain",
]

METRICS_FILE = "pretrain_metrics.json"

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
"""``progress(phase, done, total, info)`` with phase ``"train"`` or ``"eval"``."""

PRETRAIN_TASKS = ("countdown", "countdown_search")
"""The tasks whose training split :func:`pretrain` can take its examples from."""


@dataclass
class PretrainConfig:
    """Options of :func:`pretrain`; the defaults produced the shipped ``countdown-tiny``."""

    seed: int = 0
    """Seeds initialisation, data order, solution choice and evaluation sampling."""
    model: ModelSize = field(default_factory=ModelSize)
    """Sizes of the tiny Qwen2."""
    task: CountdownConfig = field(default_factory=CountdownConfig)
    """Countdown generator (its train split is the training data; its validation split is
    evaluated)."""
    task_name: Literal["countdown", "countdown_search"] = "countdown"
    """The task of the examples and the evaluation: ``countdown`` (answers) or
    ``countdown_search`` (the solver's search traces, options in ``search``)."""
    search: CountdownSearchConfig = field(default_factory=CountdownSearchConfig)
    """Trace options of ``countdown_search`` (used when ``task_name`` is ``countdown_search``)."""
    search_traces: Literal["solved", "all"] = "solved"
    """Which traces are examples with ``countdown_search``: those that solve the problem, or
    every strategy's trace, those that give up included (Gandhi et al., 2024, train on both)."""
    steps: int = 600
    """Optimiser steps; fewer steps → lower pass@1 (the target is a partial success rate)."""
    batch_size: int = 64
    """Examples (prompt + one solution) per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (tiny models tolerate a large one)."""
    warmup_steps: int = 50
    """Linear warm-up steps, then cosine decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (β1, β2)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    eval_problems: int = 200
    """Validation problems evaluated after training (0: skip evaluation)."""
    eval_samples: int = 16
    """Samples per evaluated problem ``k``: reports pass@1 and Pass@k."""
    eval_temperature: float = 1.0
    """Sampling temperature of the evaluation."""
    max_new_tokens: int = 24
    """Longest sampled answer in the evaluation."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if isinstance(self.model, dict):
            self.model = ModelSize(**self.model)
        if isinstance(self.task, dict):
            self.task = CountdownConfig(**self.task)
        if isinstance(self.search, dict):
            self.search = CountdownSearchConfig(**self.search)
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "weight_decay": self.weight_decay >= 0,
            "grad_clip": self.grad_clip > 0,
            "eval_problems": self.eval_problems >= 0,
            "eval_samples": self.eval_samples >= 1,
            "eval_temperature": self.eval_temperature > 0,
            "max_new_tokens": self.max_new_tokens >= 1,
            "task_name": self.task_name in PRETRAIN_TASKS,
            "search_traces": self.search_traces in ("solved", "all"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"PretrainConfig.{name}: invalid value {getattr(self, name)!r}")


def lr_schedule(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps``, then cosine from 1 to ``min_lr_ratio`` at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def encode_examples(
    tokenizer, prompts: list[str], completions: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + completion + <eos>`` with labels on the completion only.

    Returns:
        input_ids: ``(B, L)`` long.
        attention_mask: ``(B, L)`` long, 1 on real tokens.
        labels: ``(B, L)`` long, the token id on completion and ``<eos>`` positions, -100 elsewhere
            (Hugging Face's ignore index; the model shifts labels by one internally).
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    rows = [p + c + [eos] for p, c in zip(prompt_ids, completion_ids, strict=True)]
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (row, prompt) in enumerate(zip(rows, prompt_ids, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, len(prompt) : len(row)] = input_ids[i, len(prompt) : len(row)]
    return input_ids, attention_mask, labels


class ExampleStream:
    """Deterministic stream of (prompt, one random solution) pairs from the training split:
    ``examples(problem)`` lists a problem's targets, asked once per problem, on first use
    (``countdown_search``'s are computed up front, to keep only problems that have one)."""

    def __init__(
        self,
        task: CountdownTask | CountdownSearchTask,
        problems: list[CountdownProblem],
        examples: Callable[[CountdownProblem], list[str]],
        seed: int,
    ) -> None:
        self.task = task
        self.problems = problems
        self.examples = examples
        if not self.problems:
            raise ValueError("PretrainConfig.task: the training split has no solvable problem")
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.solutions: dict[int, list[str]] = {}

    def _next_index(self) -> int:
        if not self.order:  # a fresh shuffled epoch
            self.order = list(range(len(self.problems)))
            self.rng.shuffle(self.order)
        return self.order.pop()

    def sample(self, batch_size: int) -> tuple[list[str], list[str]]:
        prompts, completions = [], []
        for _ in range(batch_size):
            index = self._next_index()
            if index not in self.solutions:
                self.solutions[index] = self.examples(self.problems[index])
            problem = self.problems[index]
            prompts.append(self.task.prompt(problem))
            completions.append(self.rng.choice(self.solutions[index]))
        return prompts, completions


def example_stream(
    config: PretrainConfig,
) -> tuple[CountdownTask | CountdownSearchTask, ExampleStream]:
    """The task of ``config.task_name`` and its stream of training examples (see the module
    docstring); its ``problems`` are those with at least one example."""
    if config.task_name == "countdown":
        task = CountdownTask(config.task)
        problems = [p for p in task.train_problems() if p.num_solutions > 0]
        examples = lambda p: list(task.reference_solutions(p))  # noqa: E731
        return task, ExampleStream(task, problems, examples, config.seed)
    search = CountdownSearchTask(config.task, config.search)

    def traces(problem: CountdownProblem) -> list[str]:
        solved = search.reference_solutions(problem)
        if config.search_traces == "solved" or not solved:
            return solved
        return list(dict.fromkeys(search.search_traces(problem).values()))  # every strategy's

    pairs = [(p, traces(p)) for p in search.train_problems()]
    kept = [p for p, examples in pairs if examples]
    lookup = dict(pairs)
    return search, ExampleStream(search, kept, lookup.__getitem__, config.seed)


def _evaluate(model, tokenizer, task, config: PretrainConfig, progress: ProgressFn | None):
    from entropy_dynamics.training.evaluate import evaluate

    problems = task.validation_problems()[: config.eval_problems]
    k = config.eval_samples

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("eval", done, total, {})

    torch.manual_seed(config.seed)
    result = evaluate(
        model,
        tokenizer,
        task,
        problems,
        k=k,
        ks=(1, k),
        temperature=config.eval_temperature,
        max_new_tokens=config.max_new_tokens,
        progress=report,
    )
    return {
        "eval/problems": len(problems),
        "eval/samples_per_problem": k,
        "eval/pass@1": result.pass_at[1],
        f"eval/pass@{k}": result.pass_at[k],
        "eval/format_rate": result.format_rate,
        "eval/entropy": result.mean_entropy,
        "eval/response_length": result.mean_response_length,
        "eval/all_correct_frac": sum(r == 1.0 for r in result.per_problem_pass_rate)
        / len(problems),
        "eval/all_wrong_frac": sum(r == 0.0 for r in result.per_problem_pass_rate) / len(problems),
    }


def pretrain(
    config: PretrainConfig,
    output_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a fresh tiny Qwen2 on ``config.task_name``'s examples, evaluate it, save it to
    ``output_dir``.

    ``output_dir`` receives a Hugging Face model directory (``config.json``, ``model.safetensors``,
    ``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``) and
    ``pretrain_metrics.json``: the metrics returned here plus the config and ``provenance``
    (e.g. the command line). Metric keys: ``train/loss`` (mean of the last 10 % of steps),
    ``train/loss_first``, ``model/parameters``, ``time/train_s``, ``time/eval_s`` and, unless
    ``config.eval_problems == 0``, the ``eval/*`` keys, of the validation split (``eval/pass@1``,
    ``eval/pass@{k}``, ``eval/entropy`` = mean token entropy of the sampled answers, ...).
    """
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer()
    task, batches = example_stream(config)

    torch.manual_seed(config.seed)
    model = build_model(config.model, tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_schedule(
            step,
            steps=config.steps,
            warmup_steps=config.warmup_steps,
            min_lr_ratio=config.min_lr_ratio,
        ),
    )

    losses: list[float] = []
    start = time.perf_counter()
    for step in range(config.steps):
        input_ids, attention_mask, labels = encode_examples(
            tokenizer, *batches.sample(config.batch_size)
        )
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if progress is not None:
            progress("train", step + 1, config.steps, {"loss": losses[-1]})
    train_s = time.perf_counter() - start

    tail = losses[-max(1, len(losses) // 10) :]
    metrics: dict[str, Any] = {
        "model/parameters": count_parameters(model),
        "train/loss_first": losses[0],
        "train/loss": sum(tail) / len(tail),
        "time/train_s": train_s,
    }
    # saved before evaluating: batched left padding would otherwise be baked into tokenizer.json
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    save_tokenizer(tokenizer, output_dir)

    start = time.perf_counter()
    if config.eval_problems > 0:
        metrics |= _evaluate(model, tokenizer, task, config, progress)
    metrics["time/eval_s"] = time.perf_counter() - start
    record = {
        "metrics": metrics,
        "eval_split": "validation",  # the eval/* metrics'
        "config": asdict(config),
        "torch_threads": torch.get_num_threads(),
        **(provenance or {}),
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return metrics
