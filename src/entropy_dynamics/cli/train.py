"""``entropy-dynamics train``, ``eval`` and ``pretrain``: the trainer with its progress, summary and
dry run; a model's or a run's scores on a named split; the embedded model's pretraining."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from entropy_dynamics.cli._console import console, fail, print_command
from entropy_dynamics.cli._help import live_help
from entropy_dynamics.cli._paths import check_outputs
from entropy_dynamics.cli._progress import TrainDisplay
from entropy_dynamics.cli._run_log import start_console_log
from entropy_dynamics.cli.methods import method_help, show_effective_options
from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.checkpoint import CheckpointError
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.guards import NonFiniteError
from entropy_dynamics.training.interrupts import TrainingInterrupted

__all__ = ["eval_command", "pretrain_command", "train_command"]

SUMMARY_KEYS = (
    ("entropy/mean", "rollout entropy"),
    ("reward/accuracy", "train accuracy"),
    ("dynamics/delta_h_actual", "ΔH actual"),
    ("dynamics/delta_h_first_order", "ΔH first order"),
    ("dynamics/delta_h_thm33", "ΔH Thm 3.3"),
    ("perf/tokens_per_s", "tokens/s"),
)


def _summary(history: list[dict[str, float]], eval_rows: list[dict[str, float]]) -> Table:
    eval_keys = sorted({k for row in eval_rows for k in row if k.startswith("eval/")})
    table = Table(title="Run summary" + (" (eval/*: the validation split)" if eval_keys else ""))
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key, label in SUMMARY_KEYS:
        values = [row[key] for row in history if key in row]
        if values:
            table.add_row(label, f"{values[0]:.4g}", f"{values[-1]:.4g}")
    for key in eval_keys:
        values = [row[key] for row in eval_rows if key in row]
        table.add_row(key, f"{values[0]:.4g}", f"{values[-1]:.4g}")
    return table


def train_command(
    overrides: list[str] = typer.Argument(
        None, help="Config overrides, e.g. rollout.group_size=16"
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file."),
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

    extra = list(overrides or [])
    if method:
        extra.append(f"algorithm.method={method}")
    if name:
        extra.append(f"name={name}")
    try:
        cfg = load_config(config, extra)
    except (ConfigError, FileNotFoundError) as exc:
        fail(str(exc))
    if dry_run:
        _dry_run(cfg)
        return
    from entropy_dynamics.study.run_plots import plot_run
    from entropy_dynamics.training.filter_activity import idle_filter_notice
    from entropy_dynamics.training.metrics import check_backends
    from entropy_dynamics.training.trainer import Trainer

    try:
        check_backends(cfg.logging)
        trainer = Trainer(cfg, cfg.run_dir, resume=resume, overwrite=overwrite,
                          resume_from=resume_from)  # fmt: skip
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    start_console_log(cfg.run_dir)  # from here on, run_dir/console.log gets what is printed
    if trainer.notice:
        console.print(trainer.notice)
    if resume or resume_from:
        console.print(f"resuming {cfg.run_dir} from step {trainer.step} of {cfg.steps}")
    console.print(f"run directory: [bold]{cfg.run_dir}[/]  method: [bold]{cfg.algorithm.method}[/]")
    history: list[dict[str, float]] = []
    eval_rows: list[dict[str, float]] = []
    loss_cfg = cfg.algorithm.policy_loss()
    idle_said = False
    with TrainDisplay(cfg.steps, trainer.step, quiet=quiet) as progress:

        def callback(event: str, step: int, metrics: dict[str, float]) -> None:
            nonlocal idle_said
            if any(k.startswith("eval/") for k in metrics):
                eval_rows.append(metrics)
            if event == "step":
                history.append(metrics)
                progress.step(step, metrics)
                notice = None if idle_said else idle_filter_notice(history, loss_cfg)
                if notice:  # once per run; the summary repeats it if it still holds
                    idle_said = True
                    console.print(f"[yellow]step {step}: {escape(notice)}[/]", soft_wrap=True)

        try:
            trainer.train(callback)
        except TrainingInterrupted as stop:
            progress.stop()
            _interrupted(stop)
        except NonFiniteError as exc:
            progress.stop()
            console.print(f"[bold red]stopped:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        except CheckpointError as exc:  # a full disk: the run stops, its last checkpoint intact
            progress.stop()
            fail(str(exc))
        finally:
            trainer.close()
    if history:  # the summary first: the plots take a second more
        console.print(_summary(history, eval_rows))
        notice = idle_filter_notice(history, loss_cfg)
        if notice:
            console.print(f"[yellow]note: {escape(notice)}[/]", soft_wrap=True)
    console.print(f"metrics: {cfg.run_dir / 'metrics.jsonl'}")
    with console.status("writing the plots"):
        plots = plot_run(cfg.run_dir)
    console.print("plots: " + ", ".join(str(p) for p in plots))


def _interrupted(stop) -> None:
    """Say where the run stopped and how to continue it; exit 128 + the signal number."""
    import sys

    args = [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")]
    args = [a for a in args if not a.startswith("--resume-from=")]
    if "--resume-from" in args:  # the run's own newest checkpoint from now on
        at = args.index("--resume-from")
        del args[at : at + 2]
    console.print(
        f"[yellow]{stop.signal_name}[/]: stopped after step {stop.step}; checkpoint "
        f"{escape(str(stop.checkpoint))}"
    )
    print_command("resume with:", ["entropy-dynamics", *args, "--resume"])
    raise typer.Exit(stop.exit_code)


def _dry_run(cfg) -> None:
    from entropy_dynamics.training.prompts import uses_chat
    from entropy_dynamics.training.run_dir import unwritable
    from entropy_dynamics.training.setup import RunSetup

    try:
        setup = RunSetup.build(cfg, device="cpu")
        problem = setup.context_problem() or unwritable(cfg.run_dir)
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
    show_effective_options(cfg.algorithm)


def eval_command(
    model: Path = typer.Option(
        None, "--model", help="Model directory or .gguf file (default: embedded)."
    ),
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

    defaults = _eval_defaults(run)
    k = defaults.k if k is None else k
    problems = defaults.problems if problems is None else problems
    temperature = defaults.temperature if temperature is None else temperature
    try:
        k_list = tuple(k_value for k_value in parse_ks(ks or f"1,{k}") if k_value <= k)
    except ValueError as exc:
        fail(str(exc))
    if final_eval and run is None:
        fail("--final-eval needs --run (it writes the run's final_eval.json)")
    setup = _eval_setup(model, run)
    settings = EvalSettings(problems, k, temperature, seed, k_list, split=split)
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
    for key, value in result.to_metrics("eval").items():
        table.add_row(key, f"{value:.4f}")
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


def _eval_setup(model: Path | None, run: Path | None):
    """``eval``'s setup: the run's newest checkpoint with the run's config, else ``model`` (or
    the embedded one) with the default task and prompt format."""
    from entropy_dynamics.training.config import ModelConfig, TrainConfig
    from entropy_dynamics.training.setup import RunSetup

    try:
        if run is not None:
            return RunSetup.from_run(run)
        return RunSetup.build(TrainConfig(model=ModelConfig(path=str(model or ""))))
    except FileNotFoundError as exc:
        fail(f"--run: {exc}" if run is not None else str(exc))
    except ValueError as exc:
        fail(str(exc))


def pretrain_command(
    output: Path = typer.Option(
        Path("countdown-tiny"), "--output", "-o", help="Directory to write the model into."
    ),
    steps: int = typer.Option(None, "--steps", min=1, help="Optimiser steps (default: config)."),
    seed: int = typer.Option(None, "--seed", help="Seed of init, data order and eval sampling."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Examples per step."),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Peak AdamW learning rate."),
    hidden_size: int = typer.Option(None, "--hidden-size", min=1, help="Model width."),
    num_layers: int = typer.Option(None, "--num-layers", min=1, help="Transformer blocks."),
    eval_problems: int = typer.Option(
        None, "--eval-problems", min=0, help="Validation problems to evaluate (0: none)."
    ),
    eval_samples: int = typer.Option(
        None, "--eval-samples", min=1, help="Samples per evaluated problem (Pass@k)."
    ),
) -> None:
    """Pretrain the embedded tiny Qwen2 on Countdown (supervised) and evaluate pass@1, Pass@k."""
    import shlex
    from dataclasses import replace

    from entropy_dynamics.training.pretrain import PretrainConfig, pretrain

    overrides = {
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "eval_problems": eval_problems,
        "eval_samples": eval_samples,
    }
    sizes = {"hidden_size": hidden_size, "num_layers": num_layers}
    try:
        config = PretrainConfig()
        config = replace(
            config,
            model=replace(config.model, **{k: v for k, v in sizes.items() if v is not None}),
            **{k: v for k, v in overrides.items() if v is not None},
        )
    except ValueError as exc:
        fail(str(exc))
    # the effective options (defaults included), so the command reproduces the run exactly
    effective = {
        "--output": output,
        "--seed": config.seed,
        "--steps": config.steps,
        "--batch-size": config.batch_size,
        "--lr": config.lr,
        "--hidden-size": config.model.hidden_size,
        "--num-layers": config.model.num_layers,
        "--eval-problems": config.eval_problems,
        "--eval-samples": config.eval_samples,
    }
    command = shlex.join(
        ["entropy-dynamics", "pretrain", *(str(x) for item in effective.items() for x in item)]
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        bars: dict[str, int] = {}

        def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total, status="")
            status = " ".join(f"{key}={value:.3f}" for key, value in info.items())
            bar.update(bars[phase], completed=done, total=total, status=status)

        metrics = pretrain(config, output, progress=progress, provenance={"command": command})
    table = Table(title=f"Pretrained {output} (eval/*: the validation split)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
