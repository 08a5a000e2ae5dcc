"""Bad input, one parametrised case each: exit code 2, a message on stderr that names the culprit
(stdout free of it), and no traceback — before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from entropy_dynamics.cli import app
from entropy_dynamics.models import default_model_path


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty": tmp_path / "empty.jsonl",
        "malformed": tmp_path / "malformed.jsonl",
        "fields": tmp_path / "fields.jsonl",
        "a_file": tmp_path / "a_file",
    }
    files["empty"].write_text("")
    files["malformed"].write_text("not json\n{also not\n")
    files["fields"].write_text('{"q": "1 + 1", "a": "2"}\n')
    files["a_file"].write_text("")
    files["broken"] = tmp_path / "broken-run"
    files["broken"].mkdir()
    (files["broken"] / "metrics.jsonl").write_text('{"step": 1}\n')
    (files["broken"] / "config.yaml").write_text("a: [\n")
    return files


CASES = {  # name → (arguments, words the message must contain)
    "lr zero": (["train", "--dry-run", "optim.lr=0"], ["optim.lr", "> 0"]),
    "group of one": (["train", "--dry-run", "rollout.group_size=1"], ["rollout.group_size"]),
    "negative mu": (
        ["train", "--dry-run", "--method", "clip_b", "algorithm.loss.filter_options.mu=-1"],
        ["mu", ">= 0"],
    ),
    "max_frac above 1": (
        ["train", "--dry-run", "--method", "clip_v", "algorithm.loss.filter_options.max_frac=2"],
        ["max_frac", "[0, 1]"],
    ),
    "unknown method": (["train", "--dry-run", "--method", "nope"], ["unknown 'nope'", "grpo"]),
    "unknown loss option": (
        ["train", "--dry-run", "algorithm.loss={{bogus: 1}}"],  # braces doubled: .format
        ["unknown loss option 'bogus'"],
    ),
    "unknown field": (["train", "--dry-run", "model.max_len=3"], ["model.max_len", "unknown"]),
    "missing dataset": (
        ["train", "--dry-run", "task.name=math", "task.math.path=nowhere.jsonl"],
        ["task.math.path", "does not exist"],
    ),
    "empty dataset": (
        ["train", "--dry-run", "task.name=math", "task.math.path={empty}"],
        ["empty.jsonl", "no usable problem"],
    ),
    "malformed dataset": (
        ["train", "--dry-run", "task.name=math", "task.math.path={malformed}"],
        ["malformed.jsonl", "no usable problem"],
    ),
    "missing fields": (
        ["train", "--dry-run", "task.name=math", "task.math.path={fields}"],
        ["fields.jsonl:1", "task.math.prompt_field"],
    ),
    "missing model": (["train", "--dry-run", "model.path=/no/such/model"], ["model.path"]),
    "prompt past the context": (
        ["train", "--dry-run", "rollout.max_new_tokens=100000"],
        ["rollout.max_new_tokens", "context"],
    ),
    "unwritable output": (["train", "output_dir={a_file}/runs"], ["output_dir", "is a file"]),
    "tokenizer of another model": (
        ["train", "--dry-run", "model.path={random}", f"model.tokenizer={default_model_path()}"],
        ["model.tokenizer", "output layer"],
    ),
    "eval without checkpoint": (["eval", "--run", "{tmp}"], ["--run", "no checkpoint"]),
    "report of nothing": (["report", "{tmp}/none", "-o", "{tmp}/r"], ["does not exist"]),
    "report of a broken config": (
        ["report", "{broken}", "-o", "{tmp}/r"],
        ["broken-run", "not valid YAML"],
    ),
    "analyze empty data": (["analyze", "--data", "{empty}", "-n", "1"], ["no usable problem"]),
    "filter-data bad rate": (
        ["filter-data", "--model", "{random}", "--data", "{fields}", "-o", "{tmp}/o", "--low", "2"],
        ["--low"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_a_readable_message(case, tmp_path, random_model_dir):
    arguments, words = CASES[case]
    values = {k: str(v) for k, v in _files(tmp_path).items()}
    values |= {"random": str(random_model_dir), "tmp": str(tmp_path)}
    done = CliRunner().invoke(app, [a.format(**values) for a in arguments])
    text = " ".join(done.stderr.split())  # a diagnostic: on stderr, so `> log` keeps it seen
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output and not isinstance(done.exception, Exception | None)
    assert "error" not in done.stdout.lower(), done.stdout
    for word in words:
        assert word in text, (word, text)


def test_a_report_over_runs_sharing_a_seed_reports_one_and_names_both(tmp_path, random_model_dir):
    from entropy_dynamics.training.config import load_config
    from entropy_dynamics.training.trainer import Trainer

    for name in ("a", "b"):
        config = load_config(
            None,
            [f"model.path={random_model_dir}", f"output_dir={tmp_path}", f"name={name}", "steps=1",
             "eval.every=0", "tensorboard=false", "rollout.prompts_per_step=1",
             "rollout.group_size=2", "rollout.max_new_tokens=4"],
        )  # fmt: skip
        Trainer(config, config.run_dir).train()
    done = CliRunner().invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "-o",
                                    str(tmp_path / "r")])  # fmt: skip
    # the rest is reported (here a), the second left out with a warning naming both
    assert done.exit_code == 0, done.output
    warning = next(line for line in done.stderr.splitlines() if line.startswith("warning:"))
    assert str(tmp_path / "a") in warning and str(tmp_path / "b") in warning
    assert "same config and seed" in warning and "left out" in warning
