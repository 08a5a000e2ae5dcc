"""Metric values and sinks: one JSON line per step, TensorBoard, W&B offline, MLflow.

Metric keys are slash-namespaced (``entropy/mean``, ``clip_b/frac_clipped``,
``dynamics/delta_h_actual``). Library code returns metrics as tensors; :func:`to_floats` is the
single place where they are synchronised to Python floats, once per step.

:class:`MetricsWriter` hands each step's floats to its sinks, anything with
``write(step, metrics)`` and ``close(failed)`` (:class:`Sink`): ``metrics.jsonl`` always (the
file every command of this package reads), TensorBoard, and the optional back-ends of
:class:`~entropy_dynamics.training.config.LoggingConfig`, each written under the run directory
so that a run never needs the network.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import LoggingConfig

__all__ = [
    "JsonlSink",
    "MetricsWriter",
    "MlflowSink",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "check_backends",
    "mlflow_metric_name",
    "read_metrics",
    "to_floats",
    "tracking_summary",
    "wandb_mode",
]


def to_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Convert tensors / numbers to floats (non-finite values become ``nan``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().item()  # float64 metrics keep their digits
        value = float(value)
        out[key] = value if math.isfinite(value) else float("nan")
    return out


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a ``metrics.jsonl`` file; a malformed line is an error naming file and line."""
    path = Path(path)
    return _parse(path.read_text().splitlines(), path)


def _parse(lines: list[str], path: Path) -> list[dict[str, float]]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def _rows_before_a_torn_end(path: Path) -> list[dict[str, float]]:
    """The rows of ``path``; a last line cut short by a kill during its write is dropped, any
    other malformed line is an error."""
    lines = path.read_text().splitlines()
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return _parse(lines, path)


class Sink(Protocol):
    """Where a step's metrics go; ``close(failed=True)`` when the run ended with an exception."""

    def write(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class JsonlSink:
    """``run_dir/metrics.jsonl``: one JSON line per step, flushed as it is written.

    On resume from step ``s``, lines of steps after ``s`` (written after the checkpoint) and a line
    torn by a kill are dropped, so the file holds exactly one line per step, as an uninterrupted
    run would. A fresh sink never replaces a file that holds metrics (:class:`FileExistsError`).
    """

    def __init__(self, run_dir: Path, resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        if resume_step > 0 and self.path.exists():
            rows = _rows_before_a_torn_end(self.path)
            kept = [r for r in rows if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name("metrics.jsonl.tmp")  # atomic: a kill keeps the old file
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        elif resume_step == 0 and self.path.exists() and self.path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.path} already holds metrics of a run; resume that run or move it aside "
                "(Trainer's overwrite) — it is never deleted"
            )
        self._file = self.path.open("a")

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self, failed: bool = False) -> None:
        self._file.close()


class TensorBoardSink:
    """TensorBoard scalars in ``run_dir/tensorboard``; a resumed run purges the steps after its
    checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(
            log_dir=str(run_dir / "tensorboard"),
            purge_step=resume_step + 1 if resume_step else None,
        )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._tb.add_scalar(key, value, step)

    def close(self, failed: bool = False) -> None:
        self._tb.close()


_BACKENDS = {"wandb": "logging.wandb", "mlflow": "logging.mlflow"}
"""Optional back-end: its package, which is also the name of its extra, and its option."""


def _missing(module: str) -> str:
    return (
        f"{_BACKENDS[module]}=true needs the {module} package: pip install "
        f"'entropy-dynamics[{module}]' (or set {_BACKENDS[module]}=false)"
    )


def _import_extra(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(_missing(module)) from None


def check_backends(options: LoggingConfig) -> None:
    """Refuse, before any work, a back-end whose package is not installed
    (:class:`ConfigError` naming the extra to install)."""
    for module in _BACKENDS:
        if getattr(options, module) and importlib.util.find_spec(module) is None:
            raise ConfigError(_missing(module))


class _RunIds:
    """``run_dir/tracking.json``: the W&B / MLflow run id of this run, so that a resumed run
    continues the same run in each back-end."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "tracking.json"

    def get(self, backend: str) -> str | None:
        return json.loads(self.path.read_text()).get(backend) if self.path.exists() else None

    def set(self, backend: str, run_id: str) -> None:
        ids = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.path.write_text(json.dumps({**ids, backend: run_id}, indent=1) + "\n")


def wandb_mode() -> str:
    """W&B's mode: the user's ``WANDB_MODE`` when set (``online`` uploads as the run goes),
    else ``offline`` — nothing leaves the machine unless asked."""
    return os.environ.get("WANDB_MODE") or "offline"


def tracking_summary(run_dir: str | Path, options: LoggingConfig) -> list[tuple[str, list[str]]]:
    """Where the W&B and MLflow runs of ``options`` went: per back-end one sentence and the
    command that uploads or opens it (empty when there is none to run)."""
    run_dir, ids, out = Path(run_dir), _RunIds(Path(run_dir)), []
    mode, run_id, local = wandb_mode(), ids.get("wandb"), Path(run_dir) / "wandb"
    if options.wandb and mode in ("offline", "dryrun"):
        runs = [str(r) for r in sorted(local.glob(f"offline-run-*-{run_id}"))] if run_id else []
        out.append((f"W&B: offline run {run_id} written to {local} (WANDB_MODE={mode}; "
                    "WANDB_MODE=online uploads as the run goes); upload it with:",
                    ["wandb", "sync", *runs] if runs else []))  # fmt: skip
    elif options.wandb:
        out.append((f"W&B: run {run_id} of project {options.wandb_project}, WANDB_MODE={mode} "
                    f"(local files in {local})", []))  # fmt: skip
    if options.mlflow:
        uri = options.mlflow_tracking_uri or (run_dir / "mlruns").absolute().as_uri()
        out.append((f"MLflow: run {ids.get('mlflow')} written to {uri}; browse it with:",
                    ["mlflow", "ui", "--backend-store-uri", uri]))  # fmt: skip
    return out


class WandbSink:
    """Weights & Biases, offline unless ``WANDB_MODE`` says otherwise (:func:`wandb_mode`): the
    run is written to
    ``run_dir/wandb/offline-run-*/run-*.wandb`` and uploaded later with
    ``wandb sync run_dir/wandb/offline-run-*``. The config is the run's config; W&B's console
    capture is off (the CLI's own lines stay as they are). A resumed run continues the same W&B
    run id; steps re-run after the checkpoint appear as a second offline directory.
    """

    def __init__(
        self,
        run_dir: Path,
        options: LoggingConfig,
        name: str,
        config: Mapping[str, Any],
        resume_step: int = 0,
    ):
        wandb = _import_extra("wandb")
        ids = _RunIds(run_dir)
        run_id = ids.get("wandb") if resume_step else None
        self.run = wandb.init(
            project=options.wandb_project,
            name=name,
            config=dict(config),
            dir=str(run_dir),
            mode=wandb_mode(),
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(console="off", silent=True),
        )
        ids.set("wandb", self.run.id)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def mlflow_metric_name(key: str) -> str:
    """``key`` in MLflow's alphabet (letters, digits, ``_ - . / : `` and space):
    ``eval/pass@8`` → ``eval/pass_at_8``; other characters become ``_``."""
    return re.sub(r"[^\w./\- :]", "_", key.replace("@", "_at_"))


class MlflowSink:
    """MLflow tracking through :class:`mlflow.tracking.MlflowClient` (no global active run):
    params = the run's flattened config, one metric batch per step. The default store is the
    local file store ``file:run_dir/mlruns`` (``MLFLOW_ALLOW_FILE_STORE=true`` unless set: MLflow
    3 keeps that store in maintenance mode; give ``logging.mlflow_tracking_uri`` such as
    ``sqlite:///RUN/mlflow.db`` for another). A resumed run continues the same MLflow run; the
    history of steps re-run after the checkpoint then holds both values.
    """

    def __init__(
        self,
        run_dir: Path,
        options: LoggingConfig,
        name: str,
        config: Mapping[str, Any],
        resume_step: int = 0,
    ):
        _import_extra("mlflow")
        from mlflow.entities import Metric, Param, RunStatus
        from mlflow.tracking import MlflowClient

        self._metric, self._status = Metric, RunStatus
        self.tracking_uri = options.mlflow_tracking_uri or (run_dir / "mlruns").absolute().as_uri()
        if self.tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        ids = _RunIds(run_dir)
        run_id = ids.get("mlflow") if resume_step else None
        if run_id is None:
            exp = self.client.get_experiment_by_name(options.mlflow_experiment)
            exp_id = (
                exp.experiment_id
                if exp
                else self.client.create_experiment(options.mlflow_experiment)
            )
            run_id = self.client.create_run(exp_id, run_name=name).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in _flatten(config).items()]
            for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(run_id, params=params[start : start + 100])
            ids.set("mlflow", run_id)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        now = _milliseconds()
        batch = [
            self._metric(mlflow_metric_name(k), float(v), now, step) for k, v in metrics.items()
        ]
        for start in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _milliseconds() -> int:
    return int(time.time() * 1000)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class MetricsWriter:
    """Hand each step's metrics to every sink: ``metrics.jsonl`` (:class:`JsonlSink`, always,
    first: a fresh writer refuses a file that holds metrics before any other back-end starts a
    run), TensorBoard when ``tensorboard`` and installed, W&B and MLflow as ``logging`` asks,
    then ``sinks`` given by the caller.

    Args:
        run_dir: the run directory (created if missing).
        tensorboard: also write TensorBoard events (skipped when tensorboard is not installed).
        resume_step: the checkpoint step a resumed run continues from (0: a fresh run).
        logging: optional back-ends; a missing package is a :class:`ConfigError` naming its extra.
        run_name: the run's name in W&B / MLflow (default: the directory's name).
        run_config: the run's config (nested dict), filed with the W&B / MLflow run.
        sinks: further sinks, written after the built-in ones.
    """

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        resume_step: int = 0,
        *,
        logging: LoggingConfig | None = None,
        run_name: str = "",
        run_config: Mapping[str, Any] | None = None,
        sinks: Sequence[Sink] = (),
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = JsonlSink(self.run_dir, resume_step)
        self.path = self.jsonl.path
        self.sinks: list[Sink] = [self.jsonl]
        try:
            if tensorboard and _tensorboard_installed():
                self.sinks.append(TensorBoardSink(self.run_dir, resume_step))
            options = logging or LoggingConfig()
            context = (self.run_dir, options, run_name or self.run_dir.name, run_config or {})
            if options.wandb:
                self.sinks.append(WandbSink(*context, resume_step=resume_step))
            if options.mlflow:
                self.sinks.append(MlflowSink(*context, resume_step=resume_step))
        except BaseException:
            self.close(failed=True)
            raise
        self.sinks.extend(sinks)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.write(step, metrics)

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)


def _tensorboard_installed() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:  # tensorboard not installed: the other sinks only
        return False
    return True
