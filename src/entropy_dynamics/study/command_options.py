"""The options of ``entropy-dynamics analyze`` and ``filter-data``, each checked once on creation.

Each field's docstring is the flag's ``--help``
(:func:`~entropy_dynamics.training.option_fields.option` declares the flag and bounds beside the
default); ``__post_init__`` refuses a bad value with a message that names the flag, before any
model is loaded. :meth:`AnalyzeOptions.run_config` and :meth:`FilterDataOptions.run_config` give
the config a :class:`~entropy_dynamics.training.setup.RunSetup` is built from (model, prompt
format, task)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from entropy_dynamics.study.filter_data import default_kept_path
from entropy_dynamics.study.one_step import DEFAULT_LR
from entropy_dynamics.tasks.math import DEFAULT_PROMPT_TEMPLATE, PRESETS, MathConfig
from entropy_dynamics.training.config import ModelConfig, TaskConfig, TrainConfig
from entropy_dynamics.training.option_fields import check_bounds, option

__all__ = ["AnalyzeOptions", "FilterDataOptions", "parse_rate"]


def parse_rate(text: str, flag: str) -> float:
    """``"1/16"`` or ``"0.0625"`` → 0.0625, in ``[0, 1]``; a ``ValueError`` names ``flag``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        message = f"{flag}: expected a fraction like 1/16 or a number, got {text!r}"
        raise ValueError(message) from None
    if not 0 <= value <= 1:
        raise ValueError(f"{flag}: must be in [0, 1], got {text}")
    return value


def _model(path: Path | str | None, dtype: str, device: str, chat_template: str) -> ModelConfig:
    """The model section; ``dtype``, ``device`` and ``chat_template`` are checked where used."""
    return ModelConfig(
        path=str(path or ""),
        chat_template=chat_template,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
    )


@dataclass
class AnalyzeOptions:
    """``entropy-dynamics analyze``: sample responses, tabulate their tokens, one SGD step."""

    model: Path | None = None
    """Model directory or .gguf file (default: the embedded model)."""
    data: Path | None = None
    """Math dataset (.jsonl/.json/.parquet); default: Countdown's validation split."""
    problems: int = option(8, "-n", "--problems", min=1)
    """Problems (prompts) to sample."""
    samples: int = option(4, min=1)
    """Responses per problem (group G)."""
    temperature: float = option(1.0, min=1e-6)
    """Sampling temperature."""
    max_new_tokens: int = option(64, min=1)
    """Longest response."""
    advantage_sign: int = 1
    """+1 or -1: the advantage of every response when the rewards give none (all equal) or with
    --constant-advantage."""
    constant_advantage: bool = False
    """Give every response --advantage-sign instead of the GRPO advantages of its reward."""
    lr: float = option(DEFAULT_LR, min=0.0, min_open=True)
    """SGD step of the one-step check (> 0)."""
    preset: str = "auto"
    """Dataset layout of --data: auto, gsm8k, math, dapo."""
    chat_template: str = "auto"
    """auto (if the tokenizer has one), always, never."""
    dtype: str = "float32"
    """auto, float32, bfloat16, float16."""
    device: str = "auto"
    """auto, cpu, cuda."""
    output: Path = option(Path("analysis"), "--output", "-o")
    """Output directory."""
    seed: int = 0
    """Sampling seed."""
    forecast: bool = option(True, "--forecast/--no-forecast")
    """Forecast the step's ΔH in parameter space before taking it (by token group and per
    sequence; one extra forward + backward per response)."""

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.advantage_sign not in (1, -1):
            raise ValueError(f"--advantage-sign must be +1 or -1, got {self.advantage_sign}")

    def run_config(self) -> TrainConfig:
        """The model and prompt format; the task: Countdown's validation split, or the ``--data``
        file."""
        task = TaskConfig()
        if self.data is not None:
            task = TaskConfig(name="math", math=MathConfig(path=str(self.data), preset=self.preset))
        model = _model(self.model, self.dtype, self.device, self.chat_template)
        return TrainConfig(model=model, task=task)


@dataclass
class FilterDataOptions:
    """``entropy-dynamics filter-data``: the paper's pass-rate filter over a math dataset file."""

    data: Path = option(...)
    """Dataset file: .jsonl, .json or .parquet (GSM8K / MATH / DAPO layout)."""
    output: Path = option(..., "--output", "-o")
    """Decisions file (JSON Lines, one line per decided problem); rerun to resume."""
    model: str = ""
    """Local Hugging Face model directory or .gguf file; empty: embedded."""
    preset: str = "auto"
    """Layout: auto, gsm8k, math, dapo, custom."""
    prompt_field: str = ""
    """Override the problem field."""
    answer_field: str = ""
    """Override the answer field."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """Prompt; {question} is the problem."""
    on_error: str = "skip"
    """Malformed records: skip (reported) or refuse."""
    max_problems: int = option(0, min=0)
    """First N problems (0: all)."""
    samples: int = option(16, min=1)
    """Samples per problem (paper: 16)."""
    low: str = "1/16"
    """Keep if pass rate > LOW (paper: 1/16)."""
    high: str = "15/16"
    """Keep if pass rate < HIGH (paper: 15/16)."""
    max_new_tokens: int = option(1024, min=1)
    """Response length."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    batch_prompts: int = option(4, min=1)
    """Problems per batch."""
    kept_output: str = ""
    """Kept records (JSON Lines); default: <output>.kept.jsonl."""
    kept_only: bool = False
    """Only write the kept records of the existing output."""
    chat_template: str = "auto"
    """auto / always / never: prompts as a user chat turn."""
    dtype: str = "auto"
    """auto, float32, bfloat16, float16."""
    device: str = "auto"
    """auto, cpu, cuda."""
    grading_timeout: float = 5.0
    """Seconds per grading."""
    seed: int = 0
    """Seed of sampling."""

    def __post_init__(self) -> None:
        check_bounds(self)
        self.rates  # noqa: B018 - parses --low and --high
        if self.preset not in PRESETS:
            raise ValueError(f"--preset: must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.on_error not in ("skip", "refuse"):
            raise ValueError(f"--on-error: must be skip or refuse, got {self.on_error!r}")
        if self.preset == "custom" and not (self.prompt_field and self.answer_field):
            raise ValueError("--preset custom needs --prompt-field and --answer-field")

    @property
    def rates(self) -> tuple[float, float]:
        """``(low, high)`` as numbers."""
        return parse_rate(self.low, "--low"), parse_rate(self.high, "--high")

    @property
    def kept_path(self) -> Path:
        """Where the kept records go."""
        return Path(self.kept_output) if self.kept_output else default_kept_path(self.output)

    def math_config(self) -> MathConfig:
        """The dataset's reading and grading options."""
        return MathConfig(
            path=str(self.data),
            preset=self.preset,
            prompt_field=self.prompt_field,
            answer_field=self.answer_field,
            prompt_template=self.prompt_template,
            on_error=self.on_error,  # type: ignore[arg-type]
            grading_timeout=self.grading_timeout,
        )

    def run_config(self) -> TrainConfig:
        """The model, its prompt format and the dataset as a ``math`` task."""
        model = _model(self.model, self.dtype, self.device, self.chat_template)
        return TrainConfig(model=model, task=TaskConfig(name="math", math=self.math_config()))
