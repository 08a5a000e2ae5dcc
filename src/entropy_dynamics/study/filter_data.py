"""The paper's pass-rate filter: keep prompts the model solves sometimes, not never or always.

Paper, training setup: DAPO-Math-17k "with prompts with pass rate ≥ 15/16 or ≤ 1/16 removed",
the pass rate measured on 16 samples of the policy being trained. A problem whose 16 samples
are all right or all wrong gives every sample the same reward, hence zero GRPO advantage and no
gradient, so filtering them out is free speed. Here:

- pass rate ``p = (1/n) Σ correct_i`` over ``n = samples`` completions sampled at
  ``temperature`` / ``top_p`` (:func:`entropy_dynamics.training.rollout.generate`), each scored by
  the task; a problem is kept iff ``low < p < high`` (strict: with 16 samples and the defaults,
  2 to 14 correct).
- The output is JSON Lines, one line per *decided* problem, written and flushed batch by batch:
  ``{"source", "question", "answer", "correct", "samples", "pass_rate", "kept", "settings",
  "record"}``. Rerunning with the same output resumes: problems already in it are not sampled
  again (a line cut short by a kill is dropped and redone), and the settings must match.
- When every problem is decided, the kept problems' original records are written to
  ``kept_output`` (default ``<output stem>.kept.jsonl``), a dataset in the input's own layout.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FilterSummary",
    "default_kept_path",
    "filter_by_pass_rate",
    "keeps",
    "read_decisions",
    "write_kept",
]


_DECISION_KEYS = {"source", "pass_rate", "kept", "settings", "record"}
_DECISION_START = b'{"source": '  # how every line _decision_line writes begins


@dataclass(frozen=True)
class FilterSummary:
    """Counts over the decisions of an output file."""

    total: int
    """Problems given to this run."""
    decided: int
    """Of those, decided (in the output, from this run or an earlier one)."""
    resumed: int
    """Of those, decided by an earlier run (not sampled again)."""
    kept: int
    """Decided and kept: ``low < p < high``."""
    too_easy: int
    """Decided with ``p >= high``."""
    too_hard: int
    """Decided with ``p <= low``."""
    output: Path
    kept_output: Path | None
    """The kept records' file, once every problem is decided; else None."""


def keeps(pass_rate: float, low: float, high: float) -> bool:
    """The paper's rule: keep iff ``low < pass_rate < high`` (both strict)."""
    return low < pass_rate < high


def default_kept_path(output: str | Path) -> Path:
    """``runs/dapo.filter.jsonl`` → ``runs/dapo.filter.kept.jsonl``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.kept.jsonl")


def read_decisions(output: str | Path) -> dict[str, dict[str, Any]]:
    """The decisions in ``output`` by source (empty if the file does not exist).

    A last line without its newline is what a killed run leaves: once every complete line has
    been read as a decision (so the file is one this command wrote) and the cut line starts like
    one, it is removed from the file (with a warning) so that its problem is decided again. Any
    other unreadable line is an error naming ``file:line``, and the file is left untouched.
    """
    output = Path(output)
    if not output.exists():
        return {}
    data = output.read_bytes()
    cut = data.rfind(b"\n") + 1
    decisions: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(data[:cut].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            decision = json.loads(line)
        except ValueError:
            decision = None
        if not isinstance(decision, dict) or not decision.keys() >= _DECISION_KEYS:
            raise ValueError(
                f"{output}:{number}: not a pass-rate decision line; give an output file written "
                "by filter-data, or a new one"
            )
        source = decision["source"]
        if source in decisions:
            raise ValueError(f"{output}:{number}: {source} is decided twice")
        decisions[source] = decision
    if cut < len(data):
        if not data[cut:].startswith(_DECISION_START):
            number = data[:cut].count(b"\n") + 1
            raise ValueError(
                f"{output}:{number}: not a pass-rate decision line (and no newline after it); "
                "give an output file written by filter-data, or a new one"
            )
        warnings.warn(
            f"{output}: dropping an incomplete last line (an interrupted run); its problem is "
            "decided again",
            stacklevel=2,
        )
        with output.open("r+b") as handle:
            handle.truncate(cut)
    return decisions


def write_kept(output: str | Path, kept_output: str | Path | None = None) -> tuple[Path, int]:
    """Write the original records of the kept problems of ``output`` (in its order) to
    ``kept_output`` as JSON Lines, atomically; returns the path and the count written."""
    decisions = read_decisions(output)
    path = default_kept_path(output) if kept_output is None else Path(kept_output)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with temporary.open("w", encoding="utf-8") as handle:
        for decision in decisions.values():
            if decision["kept"]:
                handle.write(json.dumps(decision["record"], ensure_ascii=False, default=str))
                handle.write("\n")
                count += 1
    os.replace(temporary, path)
    return path, count


def _source(problem: Any, index: int) -> str:
    return str(getattr(problem, "source", "") or f"problem {index}")


def _decision_line(problem: Any, source: str, correct: list[float], settings: dict) -> str:
    pass_rate = sum(correct) / len(correct)
    n_correct = sum(correct)
    decision = {
        "source": source,
        "question": getattr(problem, "question", None),
        "answer": getattr(problem, "answer", None),
        "correct": int(n_correct) if float(n_correct).is_integer() else n_correct,
        "samples": len(correct),
        "pass_rate": pass_rate,
        "kept": keeps(pass_rate, settings["low"], settings["high"]),
        "settings": settings,
        "record": getattr(problem, "record", None),
    }
    return json.dumps(decision, ensure_ascii=False, default=str) + "\n"


def _check_resumable(output: Path, decisions: dict, problems: dict, settings: dict) -> None:
    for source, decision in decisions.items():
        if decision["settings"] != settings:
            raise ValueError(
                f"{output}: {source} was decided with {decision['settings']}, this run uses "
                f"{settings}; rerun with the same settings or write to a new output file"
            )
        problem = problems.get(source)
        question = getattr(problem, "question", None)
        if problem is not None and decision.get("question") != question:
            raise ValueError(
                f"{output}: {source} holds another problem than the data file has there; the "
                "output belongs to other data: write to a new output file"
            )


def _check_arguments(samples: int, low: float, high: float, batch_prompts: int) -> None:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0 <= low < high <= 1:
        raise ValueError(f"low and high must satisfy 0 <= low < high <= 1, got {low}, {high}")
    if batch_prompts < 1:
        raise ValueError(f"batch_prompts must be >= 1, got {batch_prompts}")


def filter_by_pass_rate(
    model,
    tokenizer,
    task,
    problems: Sequence[Any],
    *,
    output: str | Path,
    samples: int = 16,
    low: float = 1 / 16,
    high: float = 15 / 16,
    batch_prompts: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 1024,
    kept_output: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FilterSummary:
    """Decide every problem by its pass rate under ``model`` (module docstring), resumably.

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer.
        task: gives ``task.prompt(problem)`` (chat template included, if any) and
            ``task.score(problem, completion).correct``.
        problems: the problems, each with a unique ``source`` (else its index names it) and,
            for ``kept_output``, its original ``record``.
        output: the decisions file (JSON Lines); appended to, and read first to resume.
        samples: completions per problem ``n`` (paper: 16).
        low, high: keep iff ``low < p < high`` (paper: 1/16 and 15/16).
        batch_prompts: problems sampled together (``batch_prompts · samples`` sequences).
        temperature, top_p, max_new_tokens: sampling (paper: 1.0, 1.0, the training length).
        kept_output: where the kept records go (default :func:`default_kept_path`).
        progress: called as ``progress(decided, total)`` after each batch (and once at start).
    """
    from entropy_dynamics.training.rollout import generate

    _check_arguments(samples, low, high, batch_prompts)
    output = Path(output)
    settings = {
        "samples": samples,
        "low": low,
        "high": high,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
    }
    by_source: dict[str, Any] = {}
    for index, problem in enumerate(problems):
        source = _source(problem, index)
        if source in by_source:
            raise ValueError(f"problems: two problems share the source {source!r}")
        by_source[source] = problem
    decisions = read_decisions(output)
    _check_resumable(output, decisions, by_source, settings)
    pending = [(s, p) for s, p in by_source.items() if s not in decisions]
    resumed = len(by_source) - len(pending)
    if progress is not None:
        progress(resumed, len(by_source))
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as handle:
        for start in range(0, len(pending), batch_prompts):
            batch = pending[start : start + batch_prompts]
            rollout = generate(
                model,
                tokenizer,
                [task.prompt(problem) for _, problem in batch],
                num_samples=samples,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
            )
            for i, (source, problem) in enumerate(batch):
                completions = rollout.completions[i * samples : (i + 1) * samples]
                correct = [float(task.score(problem, c).correct) for c in completions]
                handle.write(_decision_line(problem, source, correct, settings))
            handle.flush()
            os.fsync(handle.fileno())  # a batch's decisions survive a kill right after
            if progress is not None:
                progress(resumed + start + len(batch), len(by_source))
    return _summarize(output, by_source, resumed, low, high, kept_output)


def _summarize(
    output: Path,
    problems: dict[str, Any],
    resumed: int,
    low: float,
    high: float,
    kept_output: str | Path | None,
) -> FilterSummary:
    """Counts over ``output`` restricted to ``problems``; writes the kept file when complete."""
    decisions = read_decisions(output)
    mine = [decisions[s] for s in problems if s in decisions]
    complete = len(mine) == len(problems)
    kept_path = write_kept(output, kept_output)[0] if complete else None
    return FilterSummary(
        total=len(problems),
        decided=len(mine),
        resumed=resumed,
        kept=sum(1 for d in mine if d["kept"]),
        too_easy=sum(1 for d in mine if d["pass_rate"] >= high),
        too_hard=sum(1 for d in mine if d["pass_rate"] <= low),
        output=output,
        kept_output=kept_path,
    )
