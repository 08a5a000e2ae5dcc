"""The command line's public surface (``cli/app.py``): every command with its flags, ``--debug``,
``--version``, and an unexpected error in one line. The error exit: ``test_console.py``; the
``--help`` format: ``test_help.py``."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli import app

FLAGS = {
    "train": "--config -c --task -t --method -m --name --resume --resume-from --overwrite "
    "--dry-run --quiet -q",
    "eval": "--model --task -t --run --split --k --problems --seed --temperature --ks --output -o "
    "--final-eval",
    "pretrain": "--output -o --config -c --task --steps --seed --batch-size --lr --hidden-size "
    "--num-layers --eval-problems --eval-samples --overwrite",
    "compare": "--methods -m --seeds --config -c --output-dir -o --workers -j --dry-run "
    "--final-eval --no-final-eval --report --no-report --ks --baseline --select --select-split",
    "validate-signs": "--config -c --seeds --output-dir -o --workers -j",
    "report": "--output -o --ks --evaluate-missing --baseline --select --select-split",
    "verify-theory": "--vocab-size --positions --seed",
    "analyze": "--model --data --preset -n --problems --samples --output -o --advantage-sign "
    "--constant-advantage --chat-template --device --dtype --lr --max-new-tokens --seed "
    "--temperature --forecast --no-forecast",
    "filter-data": "--model --data --output -o --preset --samples --low --high --kept-only "
    "--kept-output --answer-field --prompt-field --prompt-template --batch-prompts "
    "--chat-template --device --dtype --grading-timeout --max-new-tokens --max-problems "
    "--on-error --seed --temperature --top-p",
    "methods": "",
    "config": "",
}
"""Documented commands and their flags (the README's): users' scripts rely on them."""


def _commands() -> dict:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_every_documented_command_is_registered_and_nothing_else() -> None:
    assert set(_commands()) == set(FLAGS)


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_each_command_keeps_its_flags(command: str) -> None:
    params = _commands()[command].params
    options = {o for p in params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")}
    assert options == set(FLAGS[command].split())


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_each_command_has_help(command: str) -> None:
    done = CliRunner().invoke(app, [command, "--help"])
    assert done.exit_code == 0, done.output
    assert "Usage" in done.output


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys) -> None:
    # main() is the console script: a bug prints one line and exits 1; --debug re-raises it
    import importlib

    app_module = importlib.import_module("entropy_dynamics.cli.app")  # the module, not the app

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app_module, "app", broken)
    monkeypatch.setitem(app_module._OPTIONS, "debug", False)
    with pytest.raises(SystemExit) as stop:
        app_module.main()
    assert stop.value.code == 1
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())  # a diagnostic: on stderr, stdout left clean
    assert "internal error: RuntimeError: boom" in err and "--debug" in err
    assert captured.out == ""
    monkeypatch.setitem(app_module._OPTIONS, "debug", True)
    with pytest.raises(RuntimeError, match="boom"):
        app_module.main()


def test_debug_is_a_global_flag() -> None:
    done = CliRunner().invoke(app, ["--debug", "verify-theory", "--vocab-size", "10"])
    assert done.exit_code == 0, done.output


def test_version() -> None:
    from entropy_dynamics import __version__

    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0 and done.output.strip() == f"entropy-dynamics {__version__}"
