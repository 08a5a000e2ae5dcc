"""``pretrain`` (``cli/pretrain.py``): a directory that already holds a model is refused before
any training, with the fix named; ``--overwrite`` moves it aside (never deletes it) and says
where."""

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
