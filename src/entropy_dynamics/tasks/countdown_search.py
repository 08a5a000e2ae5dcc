"""Countdown with search traces: the same problems and splits, answered by a search that reasons.

The problems and the train / validation / test splits are Countdown's, from the same
``task.countdown`` section (the same generator and cache, :class:`.countdown.CountdownTask`). The
prompt is Countdown's with a line break for the space, ``"3 5 7 8 -> 22:\\n"``; the response is
a search trace in our own line format (the grammar of :mod:`._countdown_traces`):

- ``big op small=result [state]``: an operation on two numbers of the current state and the
  numbers it leaves, in increasing order, `` dead end`` after it when one number is left and it
  misses the target;
- ``back [state]``: a return to a state reached before (backtracking);
- ``answer: expression`` (or ``answer: none``): the final line, the only one that is graded.

For example, best-first search on ``3 5 7 8 -> 22`` (7·3 = 21 is nearest 22 but leads nowhere)::

    7*3=21 [5 8 21]
    8+5=13 [13 21]
    back [5 8 21]
    8-5=3 [3 21]
    back [5 8 21]
    8*5=40 [21 40]
    back [3 5 7 8]
    8*3=24 [5 7 24]
    back [3 21]
    21+3=24 [24] dead end
    back [5 7 24]
    7+5=12 [12 24]
    back [5 7 24]
    7-5=2 [2 24]
    24-2=22 [22]
    answer: 8*3-(7-5)

Grading (:func:`score_trace`): the first ``max_response_chars`` characters of the completion are
read (the response cap); the final line is the last non-empty line and must start with
``answer: ``; its expression is scored by Countdown's exact grader (:func:`.countdown.score`,
format and value). Without a final line the error is ``truncated`` if the completion reached the
response cap, else ``no final line``; ``answer: none`` is ``gave up``; all three have format 0.
The lines of the trace itself are not graded (:func:`parse_trace` reads them).

Reference solutions and pretraining data come from the solver's strategies
(:func:`search_trace`: depth-first in three operand orders, best-first by distance to the
target), bounded by a node cap and the trace length, deterministic in the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from entropy_dynamics.tasks._countdown_traces import (
    ANSWER_PREFIX,
    GIVE_UP,
    STRATEGIES,
    ParsedTrace,
    TraceStep,
    parse_trace,
    search_trace,
)
from entropy_dynamics.tasks.countdown import (
    CountdownConfig,
    CountdownProblem,
    CountdownReward,
    CountdownTask,
    format_prompt,
    score,
)

__all__ = [
    "STRATEGIES",
    "CountdownSearchConfig",
    "CountdownSearchTask",
    "ParsedTrace",
    "TraceStep",
    "parse_trace",
    "score_trace",
    "search_prompt",
    "search_trace",
]


@dataclass
class CountdownSearchConfig:
    """Trace options of ``countdown_search`` (its problems are ``task.countdown``'s)."""

    max_response_chars: int = 512
    """The response cap: the grader reads this many characters of a completion (one token each
    with the embedded byte tokenizer; set ``rollout.max_new_tokens`` to it)."""
    max_trace_chars: int = 400
    """The trace length: a solver trace, final line included, is at most this long (at most
    ``max_response_chars``); a search that would run past it gives up."""
    max_nodes: int = 24
    """The solver's node cap: operations one trace tries before it gives up (Gandhi et al.,
    2024, cap their searches the same way); fewer → more traces end in ``answer: none``."""
    strategies: tuple[str, ...] = STRATEGIES
    """The solver's strategies whose traces are reference solutions and pretraining data
    (``dfs_smallest``, ``dfs_largest``, ``dfs_random``, ``best_first``)."""
    seed: int = 0
    """Seeds the random operand order of ``dfs_random`` (with the problem)."""

    def __post_init__(self) -> None:
        # field: (lowest, highest allowed or None); a solver trace must fit the response cap
        bounds: dict[str, tuple[int, int | None]] = {
            "max_response_chars": (16, None),
            "max_trace_chars": (16, self.max_response_chars),
            "max_nodes": (1, None),
        }
        for name, (lowest, highest) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < lowest or (highest is not None and value > highest):
                rule = f">= {lowest}" if highest is None else f"in [{lowest}, {highest}]"
                raise ValueError(f"{name} must be {rule}, got {value}")
        self.strategies = tuple(self.strategies)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"strategies: choose from {', '.join(STRATEGIES)}, got {unknown}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


def search_prompt(problem: CountdownProblem) -> str:
    """``"3 5 7 8 -> 22:\\n"``: Countdown's prompt with the trace starting on its own line."""
    return format_prompt(problem.numbers, problem.target).rstrip() + "\n"


def _refused(error: str) -> CountdownReward:
    return CountdownReward(format=0.0, correct=0.0, reward=0.0, error=error)


def score_trace(
    problem: CountdownProblem,
    completion: str,
    config: CountdownSearchConfig | None = None,
    countdown: CountdownConfig | None = None,
) -> CountdownReward:
    """Score a trace by its final line (see the module docstring); ``countdown`` holds the
    rules of the answer (``use_all_numbers``, ``format_weight``, ``max_answer_chars``)."""
    config = CountdownSearchConfig() if config is None else config
    read = completion[: config.max_response_chars]
    last = read.strip().rsplit("\n", 1)[-1].strip()
    if not last.startswith(ANSWER_PREFIX.strip()):
        cut = len(completion) >= config.max_response_chars
        return _refused("truncated" if cut else "no final line")
    answer = last[len(ANSWER_PREFIX.strip()) :].strip()
    if answer == GIVE_UP:
        return _refused("gave up")
    return score(problem, answer, countdown)


class CountdownSearchTask:
    """``countdown_search`` as a :class:`~entropy_dynamics.tasks.base.Task`: Countdown's problems
    and splits (:class:`.countdown.CountdownTask`), answered and graded as search traces."""

    name = "countdown_search"

    def __init__(
        self, countdown: CountdownConfig | None = None, config: CountdownSearchConfig | None = None
    ) -> None:
        self.countdown = CountdownTask(countdown)
        self.config = CountdownSearchConfig() if config is None else config

    def train_problems(self) -> list[CountdownProblem]:
        return self.countdown.train_problems()

    def validation_problems(self) -> list[CountdownProblem]:
        return self.countdown.validation_problems()

    def test_problems(self) -> list[CountdownProblem]:
        return self.countdown.test_problems()

    def prompt(self, problem: CountdownProblem) -> str:
        return search_prompt(problem)

    def score(self, problem: CountdownProblem, completion: str) -> CountdownReward:
        return score_trace(problem, completion, self.config, self.countdown.config)

    def search_traces(self, problem: CountdownProblem) -> dict[str, str]:
        """Each configured strategy's trace of ``problem``, solved or not (pretraining data)."""
        return {
            strategy: search_trace(
                problem.numbers,
                problem.target,
                strategy,
                use_all=self.countdown.config.use_all_numbers,
                max_nodes=self.config.max_nodes,
                max_chars=self.config.max_trace_chars,
                seed=self.config.seed,
            )
            for strategy in self.config.strategies
        }

    def reference_solutions(self, problem: CountdownProblem) -> list[str]:
        """The distinct traces of :meth:`search_traces` that score as correct (none if every
        strategy gave up within its caps)."""
        traces = dict.fromkeys(self.search_traces(problem).values())
        return [trace for trace in traces if self.score(problem, trace).correct == 1.0]
