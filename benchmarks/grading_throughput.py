"""Math grading throughput: the worker pool against the signal-based grader it replaced.

Issue 17 moved math grading into killable worker processes (``tasks/_math_grading.py``); this
checks that GSM8K-sized answers are graded no more than 10 % slower than before. The old grader
(``SIGALRM`` on the main thread) is read from git, from the newest revision of the module that
still uses ``signal.setitimer`` (or ``--old-rev``), and loaded from a temporary file, so no copy
of it is kept in the tree. Completions are built from the gold answers of
``tests/data/math/gsm8k.jsonl``: seeded worked steps ending in the boxed gold (correct), a boxed
wrong number, or the answer in plain text without a box (math-verify searches the text's tail).
Both graders grade the same completions one at a time, as the trainer does, in interleaved
chunks (the order alternating per chunk) after one untimed warm-up chunk each; both must agree
on every grade. Ratios are also given per variant: the new grader remembers the verdicts its
workers gave, so a boxed answer seen before is not sent again, while every ``unboxed`` text is
new, so its ratio is that of a round trip to a worker against grading in place. Last, never-seen
texts only, graded the way the trainer now grades a rollout: the new grader gets each chunk as one
batch (``grade_completions``), the old one grades them one at a time. Writes JSON
(default ``benchmarks/results/grading_throughput.json``).

    python benchmarks/grading_throughput.py --completions 2000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import ModuleType

from entropy_dynamics.tasks import _math_grading
from entropy_dynamics.tasks.math import load_problems

ROOT = Path(__file__).resolve().parents[1]
MODULE = "src/entropy_dynamics/tasks/_math_grading.py"
VARIANTS = ("correct", "wrong", "unboxed")
Grader = Callable[[str, str, float], tuple]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def _old_revision() -> str:
    """The newest commit whose grading module still bounds time with ``signal.setitimer``."""
    for commit in _git("log", "--format=%H", "--", MODULE).split():
        if "signal.setitimer" in _git("show", f"{commit}:{MODULE}"):
            return commit
    raise SystemExit(f"no revision of {MODULE} uses signal.setitimer; pass --old-rev")


def _load_old(revision: str, directory: Path) -> ModuleType:
    path = directory / "old_math_grading.py"
    path.write_text(_git("show", f"{revision}:{MODULE}"))
    spec = importlib.util.spec_from_file_location("old_math_grading", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _completions(count: int, seed: int) -> list[tuple[str, str, str]]:
    """``(variant, gold, completion)``: GSM8K-sized worked answers (a few arithmetic steps)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's malformed records
        problems, _ = load_problems(ROOT / "tests/data/math/gsm8k.jsonl")
    rng = random.Random(seed)
    out = []
    for index in range(count):
        gold = problems[index % len(problems)].answer
        steps = []
        for _ in range(rng.randint(2, 6)):
            a, b = rng.randint(2, 500), rng.randint(2, 60)
            steps.append(f"{a} * {b} = {a * b}, and adding {b} gives {a * b + b}.")
        variant = VARIANTS[index % len(VARIANTS)]
        if variant == "correct":
            ending = f"So the final answer is \\boxed{{{gold}}}."
        elif variant == "wrong":
            ending = f"So the final answer is \\boxed{{{Decimal(gold) + rng.randint(1, 9)}}}."
        else:
            ending = f"Therefore the answer is {gold}."
        text = "Let's work it out step by step.\n" + "\n".join(steps) + "\n" + ending
        out.append((variant, gold, text))
    return out


def _timed(grade: Grader, chunk: list, timeout: float) -> tuple[dict[str, float], list]:
    """Seconds spent per variant, and the grades."""
    seconds, grades = dict.fromkeys(VARIANTS, 0.0), []
    for variant, gold, text in chunk:
        start = time.perf_counter()
        grades.append(grade(gold, text, timeout))
        seconds[variant] += time.perf_counter() - start
    return seconds, grades


def _unseen_batches(old: Grader, chunks: list[list], timeout: float) -> dict[str, float]:
    """Never-seen texts: the old grader one at a time against the new one given each chunk as a
    batch (as the trainer now grades a rollout), with no remembered verdicts; interleaved."""
    seconds = {"old": 0.0, "new_batched": 0.0}
    for index, chunk in enumerate(chunks):
        pairs = [(gold, text) for _, gold, text in chunk]
        runs = [("old", None), ("new_batched", None)]
        for name, _ in runs if index % 2 == 0 else reversed(runs):
            _math_grading._verdicts.clear()  # every text is new to the workers
            start = time.perf_counter()
            if name == "old":
                old_grades = [old(gold, text, timeout) for gold, text in pairs]
            else:
                new_grades = _math_grading.grade_completions(pairs, timeout)
            seconds[name] += time.perf_counter() - start
        if old_grades != new_grades:
            raise SystemExit("the graders disagree on never-seen texts")
    count = sum(len(chunk) for chunk in chunks)
    rates = {name: count / s for name, s in seconds.items()}
    return {**rates, "ratio_new_batched_over_old": rates["new_batched"] / rates["old"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=2000, help="graded by each grader")
    parser.add_argument("--chunk", type=int, default=100, help="completions per timed chunk")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per completion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-rev", default="", help="git revision of the old grader")
    parser.add_argument(
        "--workers", type=int, default=_math_grading.POOL_WORKERS, help="grading pool size"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results/grading_throughput.json"
    )
    args = parser.parse_args()
    _math_grading.POOL_WORKERS = args.workers  # read when the pool starts, on the first grading
    revision = args.old_rev or _old_revision()
    completions = _completions(args.completions, args.seed)
    chunks = [completions[i : i + args.chunk] for i in range(0, len(completions), args.chunk)]
    with tempfile.TemporaryDirectory() as tmp:
        graders = {
            "old": _load_old(revision, Path(tmp)).grade_completion,
            "new": _math_grading.grade_completion,
        }
        warm = _completions(args.chunk, args.seed + 1)
        for grade in graders.values():
            _timed(grade, warm, args.timeout)
        seconds = {name: dict.fromkeys(VARIANTS, 0.0) for name in graders}
        chunk_seconds = {name: [] for name in graders}
        disagreements = 0
        for index, chunk in enumerate(chunks):
            order = list(graders) if index % 2 == 0 else list(reversed(graders))
            grades = {}
            for name in order:
                spent, grades[name] = _timed(graders[name], chunk, args.timeout)
                chunk_seconds[name].append(sum(spent.values()))
                for variant, value in spent.items():
                    seconds[name][variant] += value
            disagreements += sum(a != b for a, b in zip(grades["old"], grades["new"], strict=True))
        fresh = [c for c in _completions(6 * args.completions, args.seed + 2) if c[0] == "unboxed"]
        fresh = fresh[: args.completions]
        unseen = _unseen_batches(
            graders["old"],
            [fresh[i : i + args.chunk] for i in range(0, len(fresh), args.chunk)],
            args.timeout,
        )
    _math_grading.shutdown_pool()
    counts = Counter(variant for variant, _, _ in completions)
    throughput = {name: len(completions) / sum(chunk_seconds[name]) for name in graders}
    by_variant = {
        variant: {name: counts[variant] / seconds[name][variant] for name in graders}
        for variant in VARIANTS
    }
    results = {
        "config": vars(args) | {"output": str(args.output), "old_rev": revision},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "completions_per_s": throughput,
        "ratio_new_over_old": throughput["new"] / throughput["old"],
        "completions_per_s_by_variant": by_variant,
        "ratio_by_variant": {v: r["new"] / r["old"] for v, r in by_variant.items()},
        "disagreements": disagreements,
        "unseen_texts_graded_as_a_batch": unseen,
        "chunk_seconds": chunk_seconds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    shown = (
        "completions_per_s",
        "ratio_new_over_old",
        "ratio_by_variant",
        "disagreements",
        "unseen_texts_graded_as_a_batch",
    )
    print(json.dumps({key: results[key] for key in shown}, indent=1))
    if disagreements:
        raise SystemExit(f"the graders disagree on {disagreements} completion(s)")


if __name__ == "__main__":
    main()
