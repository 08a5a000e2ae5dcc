"""Dataset records as a stream: line numbers, undecodable lines and over-long lines."""

from __future__ import annotations

import json

import pytest

from entropy_dynamics.tasks._records import DataIssue, read_records
from entropy_dynamics.tasks.math import MathConfig, load_problems


def test_an_over_long_line_is_an_issue_with_its_line_number(tmp_path) -> None:
    short = json.dumps({"question": "1+1", "answer": "#### 2"})
    limit = len(short)  # a line of exactly the limit is read; one byte more is not
    long = json.dumps({"question": "x" * 300, "answer": "#### 1"})
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([short, long, short, long]))  # the last line has no newline
    records = list(read_records(path, max_record_bytes=limit))
    assert [source.rsplit(":", 1)[1] for source, _ in records] == ["1", "2", "3", "4"]
    assert records[0][1] == records[2][1] == json.loads(short)
    for (_, issue), size in ((records[1], len(long) + 1), (records[3], len(long))):
        assert isinstance(issue, DataIssue)  # the size counts the newline where there is one
        assert f"record of {size:,} bytes, longer than the limit of {limit:,}" in issue.reason
        assert "max_record_bytes" in issue.reason
    with pytest.raises(ValueError, match="max_record_bytes must be >= 1"):
        list(read_records(path, max_record_bytes=0))


def test_the_limit_reaches_the_loader_and_the_config(tmp_path) -> None:
    lines = [json.dumps({"question": f"1+{i}", "answer": f"#### {i + 1}"}) for i in range(3)]
    lines.insert(1, json.dumps({"question": "y" * 5000, "answer": "#### 0"}))  # 5,036 + "\n"
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"d\.jsonl:2: record of 5,037 bytes"):
        problems, issues = load_problems(path, max_record_bytes=1000)
    assert len(problems) == 3 and len(issues) == 1
    with pytest.raises(ValueError, match=r"d\.jsonl:2: record of"):
        load_problems(path, on_error="refuse", max_record_bytes=1000)
    assert len(load_problems(path)[0]) == 4  # the default 1 MiB reads it
    with pytest.raises(ValueError, match="max_record_bytes"):
        MathConfig(path=str(path), max_record_bytes=0)
