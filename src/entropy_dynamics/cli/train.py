"""``entropy-dynamics train`` and ``eval``: the trainer with its progress, summary and dry run
(both after the same pre-flight checks); a model's or a run's scores on a named split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from entropy_dynamics.cli._console import console, fail, notice, print_command
from entropy_dynamics.cli._help import live_help
from entropy_dynamics.cli._paths import check_outputs
from entropy_dynamics.cli._progress import TrainDisplay, eval_cells, eval_labels
from entropy_dynamics.cli._run_log import start_console_log
from entropy_dynamics.cli.methods import method_help, show_effective_options
from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.checkpoint import CheckpointError
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.guards import NonFiniteError
from entropy_dynamics.training.interrupts import TrainingInterrupted

__all__ = ["eval_command", "print_tracking", "train_command"]

TASK_HELP = (
    "A task with its settings (training/presets.py), under --config and key=value: countdown "
    "(the default), countdown_search (search traces, its embedded model, 512-token answers), "
    "math (set task.math.path)."
)
SUMMARY_KEYS = (
    ("entropy/mean", "rollout entropy"),
    ("reward/accuracy", "train accuracy"),
    ("dynamics/delta_h_actual", "ΔH actual"),
    ("dynamics/delta_h_first_order", "ΔH first order"),
    ("dynamics/delta_h_thm33", "ΔH Thm 3.3"),
    ("perf/tokens_per_s", "tokens/s"),
)


def _summary(history: list[dict[str, float]], eval_rows: list[dict[str, float]]) -> Table:
    eval_keys = eval_labels(k for row in eval_rows for k in row)
    table = Table(title="Run summary" + (" (eval/*: the validation split)" if eval_keys else ""))
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key, label in SUMMARY_KEYS:
        values = [row[key] for row in history if key in row]
        if values:
            table.add_row(label, f"{values[0]:.4g}", f"{values[-1]:.4g}")
    for key, label in eval_keys:
        values = [row[key] for row in eval_rows if key in row]
        table.add_row(f"eval/{label}", f"{values[0]:.4g}", f"{values[-1]:.4g}")
    return table


def train_command(
    overrides: list[str] = typer.Argument(
        None, help="Config overrides, e.g. rollout.group_size=16"
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file."),
    task: str = typer.Option(None, "--task", "-t", help=TASK_HELP),
    method: str = typer.Option(None, "--method", "-m", help=live_help(method_help)),
    name: str = typer.Option(None, "--name", help="Run name (directory under output_dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run's last checkpoint."),
    resume_from: Path = typer.Option(
        None, "--resume-from", help="Continue this checkpoint (or run directory's newest one)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Move a run already in the run directory aside, start afresh."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate config, model and data only."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No per-step progress; only the run directory and summary."
    ),
) -> None:
    """Train with GRPO (or any registered method) and show entropy dynamics live."""
    from entropy_dynamics.training.config import load_config
    from entropy_dynamics.training.preflight import preflight

    extra = list(overrides or [])
    if method:
        extra.append(f"algorithm.method={method}")
    if name:
        extra.append(f"name={name}")
    try:  # the dry run and the real start make the same checks (preflight)
        cfg = load_config(config, extra, task=task)
        plan = preflight(cfg, resume=resume, overwrite=overwrite, resume_from=resume_from)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    for note in plan.notes:
        notice(note)
    if plan.complete:
        console.print(
            f"{cfg.run_dir} is complete: its last checkpoint is step {plan.step} of "
            f"steps={cfg.steps}; nothing to resume (to train further, raise steps)",
            soft_wrap=True,
        )
        return
    if dry_run:
        _dry_run(cfg, plan, overwrite)
        return
    _train(cfg, resume, overwrite, quiet, resume_from)


def _train(cfg, resume: bool, overwrite: bool, quiet: bool, resume_from=None) -> None:
    from entropy_dynamics.study.run_plots import plot_run
    from entropy_dynamics.training.filter_activity import idle_filter_notice
    from entropy_dynamics.training.step_metrics import zero_variance_notice
    from entropy_dynamics.training.trainer import Trainer

    try:
        trainer = Trainer(cfg, cfg.run_dir, resume=resume, overwrite=overwrite,
                          resume_from=resume_from)  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    start_console_log(cfg.run_dir)  # from here on, run_dir/console.log gets what is printed
    for line in filter(None, trainer.notice.splitlines()):
        notice(line)
    if resume or resume_from:
        console.print(f"resuming {cfg.run_dir} from step {trainer.step} of {cfg.steps}")
    console.print(f"run directory: [bold]{cfg.run_dir}[/]  method: [bold]{cfg.algorithm.method}[/]")
    history: list[dict[str, float]] = []
    eval_rows: list[dict[str, float]] = []
    loss_cfg = cfg.algorithm.policy_loss()
    checks = {  # each notice once during the run; the summary repeats it if it still holds
        "idle": lambda rows: idle_filter_notice(rows, loss_cfg),
        "zero": lambda rows: zero_variance_notice(rows, min(5, cfg.steps)),
    }
    said: set[str] = set()
    display = TrainDisplay(
        cfg.steps, trainer.step, quiet=quiet, eval_every=cfg.eval.every,
        reward_is_accuracy=_reward_is_accuracy(cfg),
    )  # fmt: skip
    with display as progress:

        def callback(event: str, step: int, metrics: dict[str, float]) -> None:
            if any(k.startswith("eval/") for k in metrics):
                eval_rows.append(metrics)
            if event == "evaluating":
                progress.evaluating(step)
            elif event == "eval":
                progress.evaluated(step, metrics)
            elif event == "step":
                history.append(metrics)
                progress.step(step, metrics)
                for kind, check in checks.items():
                    text = None if kind in said else check(history)
                    if text:
                        said.add(kind)
                        notice(text, label=f"step {step}")

        try:
            trainer.train(callback)
        except TrainingInterrupted as stop:
            progress.stop()
            _interrupted(stop)
        except NonFiniteError as exc:
            progress.stop()
            notice(str(exc), label="stopped", style="bold red")
            raise typer.Exit(1) from None
        except CheckpointError as exc:  # a full disk: the run stops, its last checkpoint intact
            progress.stop()
            fail(str(exc))
        finally:
            trainer.close()
    if history:  # the summary first: the plots take a second more
        console.print(_summary(history, eval_rows))
        for check in checks.values():
            text = check(history)
            if text:
                notice(text)
    console.print(f"metrics: {cfg.run_dir / 'metrics.jsonl'}")
    with console.status("writing the plots"):
        plots = plot_run(cfg.run_dir)
    console.print("plots: " + ", ".join(str(p) for p in plots), soft_wrap=True)
    print_tracking(cfg)


def print_tracking(cfg) -> None:
    """Where the run's W&B / MLflow runs were written, and the command that uploads or opens
    each (:func:`~entropy_dynamics.training.metrics.tracking_summary`)."""
    from entropy_dynamics.training.metrics import tracking_summary

    for sentence, command in tracking_summary(cfg.run_dir, cfg.logging):
        if command:
            print_command(sentence, command)
        else:
            console.print(sentence, soft_wrap=True, highlight=False, markup=False)


def _reward_is_accuracy(cfg) -> bool:
    """Whether the task's reward is its accuracy by construction (no partial credit)."""
    return getattr(getattr(cfg.task, cfg.task.name, None), "format_weight", None) == 0


def _interrupted(stop) -> None:
    """Say where the run stopped and how to continue it; exit 128 + the signal number."""
    import sys

    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    args = [a for a in args if not a.startswith("--resume-from=")]
    if "--resume-from" in args:  # the run's own newest checkpoint from now on
        at = args.index("--resume-from")
        del args[at : at + 2]
    where = f"stopped after step {stop.step}; checkpoint {stop.checkpoint}"
    notice(where, label=stop.signal_name)
    print_command("resume with:", ["entropy-dynamics", *args, "--resume"], err=True)
    raise typer.Exit(stop.exit_code)


def _dry_run(cfg, plan, overwrite: bool) -> None:
    """What ``train`` would load and do, after the same :func:`preflight` as the real start."""
    from entropy_dynamics.training.prompts import uses_chat
    from entropy_dynamics.training.run_dir import holds_run
    from entropy_dynamics.training.setup import RunSetup

    try:
        setup = RunSetup.build(cfg, device="cpu")
        problem = setup.context_problem()
        if problem:
            fail(problem)
        chat = uses_chat(setup.tokenizer, cfg.model.chat_template)
        stats = setup.stats
        fused = "fused" if stats.fused else f"materialised logits ({stats.reason})"
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    params = sum(p.numel() for p in setup.model.parameters())
    console.print(
        f"[green]ok[/]: model {setup.model_path} ({params:,} parameters), "
        f"task {cfg.task.name} ({len(setup.train_problems)} train / "
        f"{len(setup.validation_problems)} validation / {len(setup.test_problems)} test "
        f"problems), prompts {'in the chat template' if chat else 'plain'}, token "
        f"statistics {fused}, valid vocabulary {setup.valid_vocab or 'all rows'}, "
        f"policy loss {cfg.algorithm.policy_loss()}"
    )
    if plan.checkpoint is not None:
        start = f"resumes {plan.checkpoint} (step {plan.step} of {cfg.steps})"
    elif overwrite and holds_run(cfg.run_dir):
        start = "its run is moved aside to <name>.old-<time> (--overwrite), then a fresh start"
    else:
        start = "a fresh start"
    console.print(f"run directory {cfg.run_dir}: {start}", soft_wrap=True)
    show_effective_options(cfg.algorithm)


def eval_command(
    overrides: list[str] = typer.Argument(
        None,
        help="Config overrides of a --model's setup, e.g. task.name=countdown_search "
        "rollout.max_new_tokens=512 (a --run has its config.yaml).",
    ),
    model: Path = typer.Option(
        None, "--model", help="Model directory or .gguf file (default: the task's embedded one)."
    ),
    task: str = typer.Option(None, "--task", "-t", help=TASK_HELP),
    run: Path = typer.Option(None, "--run", help="Run directory: evaluate its last checkpoint."),
    k: int = typer.Option(
        None, "--k", min=1, help="Samples per problem (Avg@k, Pass@k); default: eval.k."
    ),
    split: Literal["test", "validation"] = typer.Option(
        "test",
        "--split",
        help="The split evaluated: test (results) or validation (monitoring, choices).",
    ),
    problems: int = typer.Option(
        None, "--problems", min=1, help="The split's first N problems; default: eval.problems."
    ),
    temperature: float = typer.Option(
        None, "--temperature", min=1e-6, help="Sampling temperature; default: eval.temperature."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    ks: str = typer.Option(None, "--ks", help="Pass@k values, e.g. 1,4,16 (default: 1 and --k)."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Write the scores as JSON here (default with --run: RUN/eval.json).",
    ),
    final_eval: bool = typer.Option(
        False,
        "--final-eval",
        help="With --run: also write RUN/final_eval.json, per-problem pass counts at the run's "
        "eval settings on the test split, and the validation split's beside them.",
    ),
) -> None:
    """Evaluate a model on the test (or validation) split: Avg@k and unbiased Pass@k, with the
    run's own eval settings (eval.k, eval.problems, eval.temperature of its config.yaml; a
    default run's without --run) unless given."""
    from entropy_dynamics.cli.experiments import parse_ks
    from entropy_dynamics.study.evaluation import EVAL_FILE, EvalSettings, held_out_evaluation
    from entropy_dynamics.training.evaluate import DEFAULT_MAX_NEW_TOKENS

    defaults = _eval_defaults(run)
    k = defaults.k if k is None else k
    problems = defaults.problems if problems is None else problems
    temperature = defaults.temperature if temperature is None else temperature
    try:
        k_list = tuple(parse_ks(ks or f"1,{k}"))
    except ValueError as exc:
        fail(str(exc))
    above = [k_value for k_value in k_list if k_value > k]
    if above:  # Pass@k' needs k' samples per problem: refused, never dropped silently
        fail(
            f"--ks: Pass@{above[0]} needs at least {above[0]} samples per problem but --k is {k}; "
            f"raise --k to {above[-1]} or leave {','.join(map(str, above))} out of --ks"
        )
    if final_eval and run is None:
        fail("--final-eval needs --run (it writes the run's final_eval.json)")
    if (overrides or task) and run is not None:
        fail("--task and key=value overrides apply to --model; a --run has its config.yaml")
    setup = _eval_setup(model, run, list(overrides or []), task)
    # the longest answer: eval's default, or the setup's response cap if longer (countdown_search)
    max_new_tokens = max(DEFAULT_MAX_NEW_TOKENS, setup.config.rollout.max_new_tokens)
    settings = EvalSettings(problems, k, temperature, seed, k_list, max_new_tokens, split)
    output = output or (run / EVAL_FILE if run is not None else None)
    try:  # the scores never go over a file of the model they score
        check_outputs({"--output": output}, {"--model": setup.model_path})
    except ValueError as exc:
        fail(str(exc))
    n = min(problems, len(setup.problems(split)))
    with console.status(f"sampling {n} {split} problems × {k} answers"):
        result = held_out_evaluation(setup, settings, eval_file=output)
    console.print(f"model: {escape(str(setup.model_path))}")
    table = Table(title=f"Evaluation on the {split} split ({n} problems × {k} samples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in eval_cells(result.to_metrics("eval")):
        table.add_row(f"eval/{label}", f"{value:.4f}")
    console.print(table)
    if output is not None:
        console.print(f"scores: {escape(str(output))}")
    if final_eval:
        from entropy_dynamics.study.evaluation import FINAL_EVAL_FILE, final_evaluation

        with console.status(f"final evaluation of {run} (test and validation splits)"):
            final_evaluation(run, setup=setup)
        where = escape(str(run / FINAL_EVAL_FILE))
        console.print(f"final evaluation (test split, validation beside it): {where}")


def _eval_defaults(run: Path | None):
    """The :class:`~entropy_dynamics.training.config.EvalConfig` of ``run``'s ``config.yaml``
    (the defaults' without a run, or a run without one)."""
    from entropy_dynamics.training.config import EvalConfig, load_config

    saved = None if run is None else run / "config.yaml"
    if saved is None or not saved.is_file():
        return EvalConfig()
    try:
        return load_config(saved).eval
    except (ConfigError, OSError, ValueError) as exc:
        fail(f"--run: {exc}")


def _eval_setup(model: Path | None, run: Path | None, overrides: list[str], task: str | None):
    """``eval``'s setup: the run's newest checkpoint with the run's config, else ``model`` (or
    the task's embedded one) with the default config, the ``task`` preset and ``overrides``."""
    from entropy_dynamics.training.config import load_config
    from entropy_dynamics.training.setup import RunSetup

    try:
        if run is not None:
            return RunSetup.from_run(run)
        config = load_config(None, [f"model.path={model or ''}", *overrides], task=task)
        return RunSetup.build(config)
    except FileNotFoundError as exc:
        fail(f"--run: {exc}" if run is not None else str(exc))
    except ValueError as exc:
        fail(str(exc))
