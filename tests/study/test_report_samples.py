"""The report's sample completions: the last logged step of each run's ``samples.jsonl``, one
table row per completion; the report shows them (in a browser: ``test_pages_in_browser.py``)."""

from __future__ import annotations

import json

from entropy_dynamics.study.report import write_report
from entropy_dynamics.study.report_samples import SAMPLES_HEADER, last_samples, sample_table
from report_helpers import write_run


def write_samples(run_dir, steps=(2, 4), per_step: int = 2) -> None:
    records = [
        {"step": step, "prompt": f"1 2 3 -> {i}: ", "completion": f"1+2*{i}=", "reward": 1.0 * i,
         "advantage": 0.5 - i, "tokens": ["1", "+", "2"], "entropy": [0.1, 0.9, 0.4],
         "s_k": [0.01, -0.2, 0.05]}
        for step in steps for i in range(per_step)
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "pro'  # a torn line
    (run_dir / "samples.jsonl").write_text(text)


def test_last_samples_and_their_rows(tmp_path) -> None:
    assert last_samples(tmp_path) == []  # no file: nothing
    write_samples(tmp_path, per_step=3)
    last = last_samples(tmp_path, limit=2)
    assert [r["step"] for r in last] == [4, 4] and last[1]["completion"] == "1+2*1="
    rows = sample_table([tmp_path], limit=2)
    assert len(rows) == 2 and len(rows[0]) == len(SAMPLES_HEADER)
    assert rows[0][1:7] == ["4", "1 2 3 -> 0: ", "1+2*0=", "0", "+0.5", "0.467"]
    assert rows[0][7].startswith("'+' (0.90, -0.200), '2' (0.40, +0.050)")  # highest H first


def test_the_report_shows_the_samples_of_runs_that_logged_them(tmp_path) -> None:
    root = tmp_path / "runs"
    logged = write_run(root, "grpo", 0)
    write_run(root, "grpo", 1)
    write_samples(logged)
    result = write_report([root], tmp_path / "report", ks=(1, 4))
    page, markdown = result.html.read_text(), result.markdown.read_text()
    assert "Sample completions" in page and "1+2*1=" in page
    assert "## Sample completions" in markdown and "| grpo-seed0 | 4 |" in markdown
    plain = write_report([root / "grpo-seed1"], tmp_path / "plain", ks=(1, 4))
    assert "Sample completions" not in plain.html.read_text()  # no samples, no section
