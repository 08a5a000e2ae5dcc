"""``pretrain`` (``cli/pretrain.py``): a directory that already holds a model is refused before
any training, with the fix named; ``--overwrite`` moves it aside (never deletes it) and says
where; ``--config`` reads a YAML of ``PretrainConfig`` fields, the options over it."""

from __future__ import annotations

from typer.testing import CliRunner

from entropy_dynamics.cli import app


def test_an_existing_model_is_refused_unless_overwrite_which_moves_it_aside(tmp_path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}\n")  # a model someone made
    done = CliRunner().invoke(app, ["pretrain", "--output", str(out), "--steps", "1"])
    assert done.exit_code == 2, done.output
    assert "error: --output:" in done.stderr and "holds a model" in done.stderr
    assert "--overwrite" in done.stderr and done.stdout == ""
    assert (out / "config.json").read_text() == "{}\n"  # untouched
    small = ["--steps", "1", "--batch-size", "2", "--hidden-size", "32", "--num-layers", "1",
             "--eval-problems", "0"]  # fmt: skip
    done = CliRunner().invoke(app, ["pretrain", "--output", str(out), *small, "--overwrite"])
    assert done.exit_code == 0, done.output
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("model.old-")]
    assert len(moved) == 1 and (moved[0] / "config.json").read_text() == "{}\n"
    assert f"aside to {moved[0]}" in " ".join(done.stderr.split())
    assert (out / "config.json").read_text() != "{}\n"  # the new model


def test_a_file_as_output_is_refused(tmp_path) -> None:
    out = tmp_path / "a-file"
    out.write_text("x")
    done = CliRunner().invoke(app, ["pretrain", "--output", str(out)])
    assert done.exit_code == 2 and "is a file; give a directory" in done.stderr


def test_a_config_file_sets_the_task_and_the_options_override_it(tmp_path) -> None:
    import json

    config = tmp_path / "search.yaml"
    config.write_text(
        "task_name: countdown_search\n"
        "task: {n_train: 16, n_validation: 2, n_test: 2}\n"
        "model: {hidden_size: 32, num_layers: 1, max_position_embeddings: 576}\n"
        "steps: 5\nbatch_size: 2\neval_problems: 0\n"
    )
    out = tmp_path / "model"
    done = CliRunner().invoke(
        app, ["pretrain", "--config", str(config), "--output", str(out), "--steps", "1"]
    )
    assert done.exit_code == 0, done.output
    record = json.loads((out / "pretrain_metrics.json").read_text())
    assert record["config"]["task_name"] == "countdown_search"
    assert record["config"]["steps"] == 1  # the option over the file
    assert record["config"]["model"]["max_position_embeddings"] == 576
    assert "--config" in record["command"] and "--task countdown_search" in record["command"]


def test_a_bad_config_file_or_task_is_refused_with_the_field_named(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("task_nme: countdown_search\n")
    done = CliRunner().invoke(app, ["pretrain", "--config", str(config), "-o", str(tmp_path / "m")])
    assert done.exit_code == 2 and "task_nme" in done.stderr and "task_name" in done.stderr
    done = CliRunner().invoke(app, ["pretrain", "--task", "math", "-o", str(tmp_path / "m")])
    assert done.exit_code == 2 and "task_name" in done.stderr


def test_the_shipped_search_config_loads() -> None:
    from pathlib import Path

    from entropy_dynamics.training.config_io import from_dict, load_yaml
    from entropy_dynamics.training.pretrain import PretrainConfig

    path = Path(__file__).parents[2] / "configs" / "pretrain_countdown_search.yaml"
    config = from_dict(PretrainConfig, load_yaml(path))
    assert config.task_name == "countdown_search"
    # a full-length response fits the model's positions
    assert config.max_new_tokens == config.search.max_response_chars
    assert config.model.max_position_embeddings >= config.max_new_tokens + 32
