"""Optional metric back-ends of MetricsWriter: W&B offline and MLflow, read back from disk.

Each test uses the real package (skipped when it is not installed: the ``wandb`` / ``mlflow``
extras, both in ``dev``) and reads what was written with a reader independent of the writer:
the W&B run file through its record format (LevelDB log blocks of protobuf ``Record``s, as
``wandb sync`` reads it) and MLflow through a fresh ``MlflowClient`` on the tracking URI.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import pytest

from entropy_dynamics.errors import ConfigError
from entropy_dynamics.training.config import LoggingConfig, load_config
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.metrics import (
    MetricsWriter,
    check_backends,
    mlflow_metric_name,
    read_metrics,
    tracking_summary,
    wandb_mode,
)
from entropy_dynamics.training.trainer import Trainer

STEPS = {1: {"entropy/mean": 0.5, "eval/pass@8": 0.25}, 2: {"entropy/mean": 0.4}}


def _wandb_records(run_file: Path) -> list:
    """Protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        chunks = data if kind in (1, 2) else chunks + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _complete_records(run_file: Path, timeout: float = 60.0) -> list:
    """The records of ``run_file`` once it holds its exit record: W&B's core process may still be
    writing the file when ``finish()`` returns (seen on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = _wandb_records(run_file)
        except Exception:  # a chunk cut short by the writer
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{run_file} never got its exit record"
        time.sleep(0.2)


def _wandb_run(run_dir: Path, index: int = 0) -> tuple[str, dict, list[dict]]:
    """(run id, config, history rows) of the ``index``-th offline run written into ``run_dir``."""
    run_files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    records = _complete_records(run_files[index])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {_key(i): json.loads(i.value_json) for i in run.config.update if _key(i) != "_wandb"}
    history = [
        {"step": r.history.step.num}
        | {_key(i): json.loads(i.value_json) for i in r.history.item if not _key(i).startswith("_")}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    return run.run_id, config, history


def test_wandb_offline_run_holds_config_and_every_step(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    options = LoggingConfig(wandb=True)
    config = {"seed": 3, "algorithm": {"method": "grpo"}}
    with MetricsWriter(tmp_path, False, logging=options, run_config=config) as writer:
        for step, metrics in STEPS.items():
            writer.write(step, metrics)
    run_id, saved, history = _wandb_run(tmp_path)
    assert saved["seed"] == 3 and saved["algorithm"] == {"method": "grpo"}
    assert history == [{"step": s, **m} for s, m in STEPS.items()]
    assert json.loads((tmp_path / "tracking.json").read_text())["wandb"] == run_id

    with MetricsWriter(tmp_path, False, resume_step=1, logging=options) as writer:
        writer.write(2, {"entropy/mean": 0.3})
    resumed_id, _, history = _wandb_run(tmp_path, index=1)
    assert resumed_id == run_id  # `wandb sync` files both directories under one run
    assert history == [{"step": 2, "entropy/mean": 0.3}]


def test_mlflow_file_store_holds_params_and_history(tmp_path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    options = LoggingConfig(mlflow=True)
    config = {"seed": 3, "algorithm": {"method": "grpo", "loss": {"mu": 2.0}}}
    with MetricsWriter(tmp_path, False, logging=options, run_config=config) as writer:
        for step, metrics in STEPS.items():
            writer.write(step, metrics | {"nan": float("nan")})
    run_id = json.loads((tmp_path / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params == {"seed": "3", "algorithm.method": "grpo", "algorithm.loss.mu": "2.0"}
    history = client.get_metric_history(run_id, "entropy/mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.4)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "eval/pass_at_8")] == [
        (1, 0.25)
    ]
    assert all(math.isnan(m.value) for m in client.get_metric_history(run_id, "nan"))

    with pytest.raises(RuntimeError), MetricsWriter(tmp_path, False, 1, logging=options) as writer:
        writer.write(2, {"entropy/mean": 0.3})
        raise RuntimeError("the run fails")
    run = client.get_run(run_id)  # the resumed run continued the same MLflow run, then failed
    assert run.info.status == "FAILED"
    assert [m.value for m in client.get_metric_history(run_id, "entropy/mean")] == [0.5, 0.4, 0.3]


def test_mlflow_metric_names_keep_only_mlflow_characters() -> None:
    assert mlflow_metric_name("eval/pass@8") == "eval/pass_at_8"
    assert mlflow_metric_name("dynamics/ΔH (kept)") == "dynamics/ΔH _kept_"  # \w is Unicode
    assert mlflow_metric_name("a:b-c.d e/f_g") == "a:b-c.d e/f_g"


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_missing_package_names_its_extra(tmp_path, monkeypatch, backend) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # import of the package fails
    options = LoggingConfig(**{backend: True})
    with pytest.raises(ConfigError, match=rf"entropy-dynamics\[{backend}\]"):
        check_backends(options)
    with pytest.raises(ConfigError, match=rf"entropy-dynamics\[{backend}\]"):
        MetricsWriter(tmp_path, False, logging=options)
    assert (tmp_path / "metrics.jsonl").read_text() == ""  # closed; nothing written
    check_backends(LoggingConfig())  # nothing asked, nothing needed


def test_train_refuses_a_missing_backend_before_any_work(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    monkeypatch.setitem(sys.modules, "wandb", None)
    done = CliRunner().invoke(app, ["train", f"output_dir={tmp_path}", "logging.wandb=true"])
    assert done.exit_code == 2, done.output
    assert "entropy-dynamics[wandb]" in " ".join(done.output.split())
    assert not any(tmp_path.iterdir())  # no run directory was started


def test_training_run_fills_every_backend_alike(tmp_path, random_model_dir, monkeypatch) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("WANDB_MODE", raising=False)
    config = load_config(
        None,
        [
            f"model.path={random_model_dir}",
            f"output_dir={tmp_path}",
            "steps=2",
            "eval.every=0",
            "dynamics=false",
            "tensorboard=false",
            "rollout.prompts_per_step=1",
            "rollout.group_size=2",
            "rollout.max_new_tokens=4",
            "logging.wandb=true",
            "logging.mlflow=true",
        ],
    )
    Trainer(config, config.run_dir).train()
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    _, saved, history = _wandb_run(config.run_dir)
    assert history == rows
    assert saved == to_dict(config)
    run_id = json.loads((config.run_dir / "tracking.json").read_text())["mlflow"]
    client = MlflowClient((config.run_dir / "mlruns").as_uri())
    for key in ("entropy/mean", "reward/mean"):
        values = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert values == [(r["step"], r[key]) for r in rows]


def test_wandb_mode_is_offline_unless_the_user_sets_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode() == "offline"  # nothing leaves the machine unless asked
    (tmp_path / "tracking.json").write_text(json.dumps({"wandb": "abc"}))
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    [(sentence, command)] = tracking_summary(tmp_path, LoggingConfig(wandb=True))
    assert f"offline run abc written to {tmp_path / 'wandb'}" in sentence
    assert command == ["wandb", "sync", str(tmp_path / "wandb/offline-run-20260101_000000-abc")]
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode() == "online"
    [(sentence, command)] = tracking_summary(tmp_path, LoggingConfig(wandb=True))
    assert "run abc of project" in sentence and "WANDB_MODE=online" in sentence
    assert command == []  # uploaded as it went: nothing to sync
    assert tracking_summary(tmp_path, LoggingConfig()) == []


def test_train_says_where_its_tracking_runs_went_and_how_to_open_them(tmp_path, monkeypatch,
                                                                     random_model_dir) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    monkeypatch.delenv("WANDB_MODE", raising=False)
    args = ["train", f"model.path={random_model_dir}", f"output_dir={tmp_path}", "name=t",
            "steps=1", "eval.every=0", "tensorboard=false", "rollout.prompts_per_step=1",
            "rollout.group_size=2", "rollout.max_new_tokens=4", "logging.wandb=true",
            "logging.mlflow=true"]  # fmt: skip
    done = CliRunner().invoke(app, args, env={"COLUMNS": "40"})
    assert done.exit_code == 0, done.output
    run = tmp_path / "t"
    ids = json.loads((run / "tracking.json").read_text())
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("W&B: offline run"))
    assert ids["wandb"] in lines[at] and "WANDB_MODE=offline" in lines[at]
    [offline] = sorted((run / "wandb").glob("offline-run-*"))
    assert lines[at + 1] == f"wandb sync {offline}"  # one line to copy, however narrow
    at = next(i for i, line in enumerate(lines) if line.startswith("MLflow: run"))
    uri = (run / "mlruns").absolute().as_uri()
    assert ids["mlflow"] in lines[at] and uri in lines[at]
    assert lines[at + 1] == f"mlflow ui --backend-store-uri {uri}"
