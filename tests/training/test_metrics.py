"""Metric sinks: JSONL contents, resume truncation, malformed files, plots."""

from __future__ import annotations

import math

import pytest
import torch

from entropy_dynamics.training.metrics import MetricsWriter, read_metrics, to_floats


def test_to_floats_syncs_tensors_and_maps_non_finite_to_nan() -> None:
    out = to_floats({"a": torch.tensor(1.5), "b": 2, "c": torch.tensor(float("inf"))})
    assert out["a"] == 1.5 and out["b"] == 2.0 and math.isnan(out["c"])


def test_writer_resume_drops_lines_after_the_checkpoint(tmp_path) -> None:
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        for step in range(1, 6):
            writer.write(step, {"x": float(step)})
    with MetricsWriter(tmp_path, tensorboard=False, resume_step=3) as writer:
        writer.write(4, {"x": 40.0})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["x"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_fresh_writer_never_replaces_an_old_file(tmp_path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 9}\n')
    with pytest.raises(FileExistsError, match="never deleted"):
        MetricsWriter(tmp_path, tensorboard=False)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 9}\n'


def test_resume_drops_a_line_torn_by_a_kill(tmp_path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "x"')
    with MetricsWriter(tmp_path, tensorboard=False, resume_step=2) as writer:
        writer.write(3, {"x": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):  # only a torn *end* is repaired
        MetricsWriter(tmp_path, tensorboard=False, resume_step=2)


def test_tensorboard_events_are_written(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    with MetricsWriter(tmp_path, tensorboard=True) as writer:
        writer.write(1, {"entropy/mean": 1.0})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_malformed_line_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2"):
        read_metrics(path)
