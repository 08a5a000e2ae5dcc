"""Typed training configuration: one default per option, documented with its source.

A config is built from defaults, then an optional YAML file, then ``section.field=value``
overrides (``rollout.group_size=16``, ``algorithm.loss.eps_high=0.28``). Invalid values are refused
before any work starts, with a message naming the field. The policy-loss options live in one place,
:class:`entropy_dynamics.losses.PolicyLossConfig`; ``algorithm.loss`` holds only the user's
overrides of the chosen method's preset.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.finite import check_finite_fields
from entropy_dynamics.tasks.countdown import CountdownConfig
from entropy_dynamics.tasks.countdown_search import CountdownSearchConfig
from entropy_dynamics.tasks.math import MathConfig
from entropy_dynamics.theory import MIN_TEMPERATURE
from entropy_dynamics.training.config_io import apply_overrides, from_dict, load_yaml, to_dict
from entropy_dynamics.training.reference import KLConfig

__all__ = [
    "AlgorithmConfig",
    "EvalConfig",
    "ForecastConfig",
    "KLConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "RolloutConfig",
    "TaskConfig",
    "TrainConfig",
    "load_config",
    "save_config",
]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class ModelConfig:
    path: str = ""
    """Local Hugging Face model directory or ``.gguf`` file; empty: the task's embedded
    model (``countdown-search-tiny`` for ``countdown_search``, else ``countdown-tiny``)."""
    tokenizer: str = ""
    """Tokenizer directory for a ``.gguf`` model whose own tokenizer should not be used; empty:
    the model's (a GGUF file carries its tokenizer)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """Wrap each task prompt as one user message of the tokenizer's chat template: ``auto`` when
    the tokenizer has one (instruct models), ``always`` refuses a tokenizer without one,
    ``never`` sends plain prompts."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype; ``auto`` = bfloat16 on CUDA, float32 on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when present."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward (transformers'
    ``gradient_checkpointing_enable``): about one extra forward per update for a fraction of the
    activation memory of long responses."""
    fused_stats: Literal["auto", "always", "never"] = "auto"
    """Token statistics from hidden states and ``lm_head`` without materialising logits:
    ``auto`` when the model allows it (plain ``nn.Linear`` head, logits = ``lm_head(decoder(x))``),
    ``always`` refuses a model that does not, ``never`` materialises the logits."""

    def resolved_path(self, task: str = "countdown") -> Path:
        """``path``, or when empty the embedded model of ``task`` (``models.EMBEDDED_MODELS``)."""
        if self.path:
            return Path(self.path).expanduser()
        from entropy_dynamics.models import default_model_path

        return default_model_path(task)


@dataclass
class TaskConfig:
    name: Literal["countdown", "countdown_search", "math"] = "countdown"
    """The task: ``countdown`` (TinyZero, the embedded default), ``countdown_search`` (the same
    problems answered by a search trace ending in ``answer: expression``) or ``math`` (a dataset
    file, graded with math-verify; set ``task.math.path``)."""
    countdown: CountdownConfig = field(default_factory=CountdownConfig)
    """Countdown generator and reward options (``countdown_search``'s problems too)."""
    countdown_search: CountdownSearchConfig = field(default_factory=CountdownSearchConfig)
    """Trace options of ``countdown_search``: response cap, trace length, the solver's caps."""
    math: MathConfig = field(default_factory=MathConfig)
    """Math dataset and grading options (GSM8K / MATH / DAPO-Math-17k layouts)."""

    def __post_init__(self) -> None:
        _require(
            self.name != "math" or bool(self.math.path),
            "task.math.path: task.name=math needs a data file (.jsonl, .json or .parquet)",
        )

    @staticmethod
    def upgrade_older(data: dict[str, Any]) -> dict[str, Any]:
        """An older config's one held-out split as today's validation and test (today's fields,
        if given too, win), so an older ``config.yaml`` loads: ``countdown.n_eval`` as
        ``n_validation = n_test = n_eval`` (training depends on neither); ``math.eval_size`` (held
        out of the training file) as ``validation_size = eval_size // 2``, ``test_size`` the rest
        (the same training problems as before)."""
        data = dict(data)
        for section, name, default in (("countdown", "n_eval", 200), ("math", "eval_size", 64)):
            fields = data.get(section)
            if not isinstance(fields, dict) or name not in fields:
                continue
            n = fields[name]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"task.{section}.{name}: expected an integer >= 0, got {n!r}")
            sizes = (
                {"n_validation": n, "n_test": n} if section == "countdown"
                else {"validation_size": n // 2, "test_size": n - n // 2}
            )  # fmt: skip
            if n != default:  # the older default is in every older config.yaml: no noise
                reading = ", ".join(f"{key}={value}" for key, value in sizes.items())
                warnings.warn(f"task.{section}.{name}={n} (an older field) is read as {reading}",
                              FutureWarning, stacklevel=2)  # fmt: skip
            data[section] = {**sizes, **{k: v for k, v in fields.items() if k != name}}
        return data


@dataclass
class RolloutConfig:
    prompts_per_step: int = 16
    """Prompts per step ``B`` (paper: 64)."""
    group_size: int = 8
    """Samples per prompt ``G`` (paper: 16 for Clip_B, 8 for Clip_V)."""
    temperature: float = 1.0
    """Sampling temperature; all statistics are of the scaled distribution (paper: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (paper: 1.0)."""
    max_new_tokens: int = 24
    """Maximum response length in tokens (paper: 7,168; a Countdown answer needs < 20)."""
    generation_batch_size: int = 0
    """Most sequences per ``generate`` call, in whole groups (0: the whole step at once); bounds
    the KV cache of long responses (64 × 16 × 7k tokens do not fit one GPU)."""
    statistics: Literal["auto", "teacher_forcing"] = "auto"
    """Where the rollout policy's ``log p_k``, ``H``, ``S_k`` and ``E_p[S]`` (the filters' input
    and the PPO ratio's denominator) come from: ``auto`` takes those recorded while sampling when
    the update is on-policy (one epoch of one mini-batch, a model without dropout), which saves a
    teacher-forced forward per step, and runs that pass otherwise (as ``teacher_forcing``
    always does). The two agree to float32 rounding; metric ``stats/from_sampling`` says which."""

    def __post_init__(self) -> None:
        _require(self.prompts_per_step >= 1, "rollout.prompts_per_step must be >= 1")
        _require(self.generation_batch_size >= 0, "rollout.generation_batch_size must be >= 0")
        _require(self.group_size >= 2, "rollout.group_size must be >= 2 (GRPO needs a group)")
        _require(
            MIN_TEMPERATURE <= self.temperature < math.inf,
            f"rollout.temperature must be a finite number >= {MIN_TEMPERATURE}",
        )
        _require(0 < self.top_p <= 1, "rollout.top_p must be in (0, 1]")
        _require(self.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW peak learning rate, after warm-up (paper: 1e-6 for 7B; tiny models need more).
    On the embedded model 1e-4 raises held-out pass@1 over 200 steps; 2e-4 already lowers it."""
    beta1: float = 0.9
    """AdamW β1 (PyTorch default)."""
    beta2: float = 0.999
    """AdamW β2 (PyTorch default)."""
    eps: float = 1e-8
    """AdamW ε (PyTorch default)."""
    weight_decay: float = 0.0
    """AdamW weight decay (paper: none)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (paper: 1.0)."""
    warmup_steps: int = 0
    """Linear warm-up optimizer steps (paper: none)."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Learning rate after the warm-up: ``constant`` (paper; verl's default), or decaying to
    ``min_lr_ratio · lr`` over the run's optimizer steps, ``linear`` (TRL's default) or
    ``cosine`` (verl's ``warmup_style: cosine``)."""
    min_lr_ratio: float = 0.0
    """Floor of a decaying schedule, a fraction of ``lr`` (verl's ``min_lr_ratio``, 0)."""

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr must be > 0")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1/beta2 must be in [0, 1)")
        _require(self.grad_clip > 0, "optim.grad_clip must be > 0")
        _require(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        _require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")
        _require(
            self.schedule in ("constant", "linear", "cosine"),
            f"optim.schedule: must be one of 'constant', 'linear', 'cosine', got {self.schedule!r}",
        )


@dataclass
class AlgorithmConfig:
    method: str = "grpo"
    """Registered method: a policy-loss preset, with a controller for the closed-loop ones
    (``entropy-dynamics methods`` lists each with what it does and its options; the table is
    ``entropy_dynamics.methods``)."""
    loss: dict[str, Any] = field(default_factory=dict)
    """Overrides of the method's loss options (fields of ``losses.PolicyLossConfig``)."""
    control: dict[str, Any] = field(default_factory=dict)
    """Options of a closed-loop method's controller (``entropy_target``: the target and its
    schedule; ``adaptive_entropy``, ``entropic``: target and gains), fields of its options class
    (``options_type`` of the method's controller in ``entropy_dynamics.control``)."""
    advantage: str = "grpo"
    """Advantage estimator: grpo (paper), dr_grpo, batch."""
    updates_per_step: int = 1
    """Epochs over each rollout batch ``K`` (paper: 1)."""
    mini_batches: int = 1
    """Optimizer steps per epoch; >1 makes the PPO ratio and clipping active (paper: 1)."""
    micro_batch_size: int = 0
    """Sequences per forward/backward; gradients of a mini-batch are accumulated exactly over
    its micro-batches (0: the whole mini-batch at once). Bounds activation memory for long
    responses. KL-Cov selects its top tokens within each micro-batch."""
    micro_batch_tokens: int = 0
    """Padded response tokens per forward/backward (0: off): the mini-batch's rows, sorted by
    length, packed into micro-batches of at most this many ``rows × longest response`` tokens
    (at most ``micro_batch_size`` rows, when set), each run only up to its longest response —
    verl's dynamic batch size. Saves the padding of long, uneven responses."""
    skip_idle_rows: bool = True
    """Leave out of the loss's forward + backward the rows that add nothing to its gradient: no
    kept token with a nonzero advantage (a group whose rewards are all equal), on a loss where
    each token's term is a multiple of its advantage (``ppo``; no entropy bonus, KL penalty or
    forecast). The gradient is the same up to float rounding; ``actor/entropy``,
    ``actor/ppo_kl``, ``actor/pg_loss`` and the clip fractions are then over the rows that ran
    (``actor/frac_rows_skipped`` says how many did not)."""
    kl: KLConfig = field(default_factory=KLConfig)
    """The KL penalty to the initial model (off by default)."""

    def __post_init__(self) -> None:
        from entropy_dynamics.advantages import available_advantages

        _require(self.updates_per_step >= 1, "algorithm.updates_per_step must be >= 1")
        _require(self.mini_batches >= 1, "algorithm.mini_batches must be >= 1")
        _require(self.micro_batch_size >= 0, "algorithm.micro_batch_size must be >= 0")
        _require(self.micro_batch_tokens >= 0, "algorithm.micro_batch_tokens must be >= 0")
        _require(
            self.advantage in available_advantages(),
            f"algorithm.advantage: unknown {self.advantage!r}; use one of "
            f"{', '.join(available_advantages())}",
        )
        self.policy_loss()  # validates method and loss overrides now, not mid-run

    def policy_loss(self):
        """The resolved :class:`~entropy_dynamics.losses.PolicyLossConfig`: resolved once and
        kept on the instance (not a field, so ``config.yaml`` and the resume check do not see it;
        resolved again only if ``method`` or ``loss`` changed since)."""
        from entropy_dynamics.methods import resolve_method

        key = (self.method, repr(self.loss))
        resolved = self.__dict__.get("_policy_loss")
        if resolved is not None and resolved[0] == key:
            return resolved[1]
        try:
            config = resolve_method(self.method, **self.loss)
        except (KeyError, TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise ConfigError(f"algorithm.method / algorithm.loss: {message}") from None
        self._policy_loss = (key, config)
        return config


@dataclass
class EvalConfig:
    """The run's evaluations. In-run (the ``eval/*`` metrics): the first ``problems`` of the
    task's *validation* split, for monitoring; the final evaluation (``final_eval.json``): the
    same settings on the test split, with the validation split's record beside it."""

    every: int = 50
    """Evaluate every N steps, at step 0 and at the end (0 disables)."""
    problems: int = 128
    """Problems evaluated: the first this many of the validation split in-run (``eval/*``), of
    the test split and of the validation split in the final evaluation."""
    k: int = 8
    """Samples per problem: Avg@k and unbiased Pass@k (paper: 32)."""
    temperature: float = 1.0
    """Evaluation sampling temperature (paper: 0.7 on real benchmarks)."""

    def __post_init__(self) -> None:
        _require(self.every >= 0, "eval.every must be >= 0")
        _require(self.problems >= 1, "eval.problems must be >= 1")
        _require(self.k >= 1, "eval.k must be >= 1")
        _require(
            MIN_TEMPERATURE <= self.temperature < math.inf,
            f"eval.temperature must be a finite number >= {MIN_TEMPERATURE}",
        )


@dataclass
class ForecastConfig:
    """Forecast of each optimizer step's entropy change before it is taken (parameter space,
    :mod:`entropy_dynamics.training.forecast`; beyond the paper)."""

    enabled: bool = False
    """Forecast ``⟨∇θ H̄, Δθ⟩`` of the batch and probe entropy (needs ``dynamics``)."""
    probe_prompts: int = 32
    """Validation prompts of the fixed probe set, one response each (0: no probe forecast)."""
    second_order: bool = False
    """Also the second-order forecast along the step (two more gradients per target)."""
    groups: bool = False
    """Split the forecast by token group: four extra backward passes of the loss (about 4× the
    learn phase on the embedded default, ``benchmarks/forecast_cost.py``)."""

    def __post_init__(self) -> None:
        _require(self.probe_prompts >= 0, "forecast.probe_prompts must be >= 0")


@dataclass
class LoggingConfig:
    """Metric back-ends besides ``metrics.jsonl`` (always written) and TensorBoard
    (``tensorboard``): each writes under the run directory, needs no network, and is an optional
    extra (:mod:`entropy_dynamics.training.metrics`)."""

    wandb: bool = False
    """Weights & Biases in offline mode (``WANDB_MODE=offline`` unless set): the run is written to
    ``RUN/wandb/offline-run-*`` and uploaded later with ``wandb sync``; needs
    ``pip install 'entropy-dynamics[wandb]'``."""
    wandb_project: str = "entropy-dynamics"
    """W&B project the run is filed under when synced."""
    mlflow: bool = False
    """MLflow tracking: the run's config as params and every step's metrics (``@`` in a metric
    name becomes ``_at_``: ``eval/pass_at_8``); needs ``pip install 'entropy-dynamics[mlflow]'``."""
    mlflow_tracking_uri: str = ""
    """MLflow tracking URI; empty: the local file store ``file:RUN/mlruns``
    (``mlflow ui --backend-store-uri RUN/mlruns``)."""
    mlflow_experiment: str = "entropy-dynamics"
    """MLflow experiment the run is filed under."""
    samples_every: int = 50
    """Log sample completions every N steps (0: never; TRL ``log_completions``): prompt, reward,
    advantage, each token's ``H`` and ``S_k`` in ``RUN/samples.jsonl``, TensorBoard, the report."""
    samples: int = 4
    """Completions logged per logged step: one per prompt first, then the following ones."""

    def __post_init__(self) -> None:
        _require(
            not self.wandb or bool(self.wandb_project.strip()), "logging.wandb_project is empty"
        )
        _require(
            not self.mlflow or bool(self.mlflow_experiment.strip()),
            "logging.mlflow_experiment is empty",
        )
        _require(self.samples_every >= 0, "logging.samples_every must be >= 0")
        _require(self.samples >= 0, "logging.samples must be >= 0")


@dataclass
class TrainConfig:
    name: str = ""
    """Run name; empty: ``<method>-seed<seed>``. The run lives in ``output_dir/name``."""
    output_dir: str = "runs"
    """Parent directory of run directories."""
    seed: int = 0
    """Seed of sampling, data order and everything random."""
    steps: int = 200
    """Training steps (one rollout batch each)."""
    checkpoint_every: int = 50
    """Write a checkpoint every N steps and at the end."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept per run."""
    dynamics: bool = True
    """Re-measure the batch after each update: actual vs predicted ΔH (costs one forward)."""
    dynamics_max_tokens: int = 4096
    """Response positions used by the dynamics measurement."""
    dynamics_every: int = 1
    """Measure the dynamics every N steps (1: each step; the others skip its no-grad forward of
    the batch, and a forecast or a controller's κ refit waits for a measured step)."""
    max_bad_steps: int = 3
    """Updates with a non-finite loss or gradient are skipped; this many in a row stop the run
    (with a checkpoint of the last good weights)."""
    tensorboard: bool = True
    """Also write TensorBoard event files (``RUN/tensorboard``); other back-ends: ``logging``."""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        # every float of every section finite (a rate, a coefficient, a threshold, a temperature)
        check_finite_fields(self, error=ConfigError, nested=True)
        _require(
            not ({"/", "\\", "\0"} & set(self.name)) and self.name not in (".", ".."),
            f"name: {self.name!r} is a path, not a run name (the run lives in output_dir/name); "
            "give a plain name without '/', '\\' or '..', and the directory as output_dir=<dir>",
        )
        _require(self.steps >= 1, "steps must be >= 1")
        _require(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        _require(self.dynamics_max_tokens >= 1, "dynamics_max_tokens must be >= 1")
        _require(self.dynamics_every >= 1, "dynamics_every must be >= 1")
        _require(self.max_bad_steps >= 1, "max_bad_steps must be >= 1")
        _require(self.threads >= 0, "threads must be >= 0")
        _require(
            self.dynamics or not self.forecast.enabled,
            "forecast.enabled needs dynamics=true (the forecast is checked against the measured "
            "ΔH of the step's batch)",
        )
        from entropy_dynamics.methods import check_control

        algorithm = self.algorithm
        try:
            check_control(algorithm.method, algorithm.control, algorithm.policy_loss(), self.steps)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"algorithm.control: {exc}") from None

    @property
    def run_name(self) -> str:
        return self.name or f"{self.algorithm.method}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, task: str | None = None
) -> TrainConfig:
    """Defaults ← task preset (``--task``) ← YAML file ← ``key=value`` overrides, validated."""
    data = load_yaml(path) if path else {}
    if task is not None:
        from entropy_dynamics.training.presets import task_preset, under

        data = under(data, task_preset(task))
    data = apply_overrides(data, list(overrides or []))
    named = data.get("task", {}).get("name") if isinstance(data.get("task"), dict) else None
    if task is not None and named != task:
        where = f"{path} or " if path else ""
        raise ConfigError(f"--task {task}: {where}an override sets task.name={named}; drop one")
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from None


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
