"""The command line's public surface: every command with its flags, and the shared error exit."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from entropy_dynamics.cli import app

FLAGS = {
    "train": "--config -c --method -m --name --resume --overwrite --dry-run --quiet -q",
    "eval": "--model --run --k --problems --seed --temperature --ks --output -o --final-eval",
    "pretrain": "--output -o --steps --seed --batch-size --lr --hidden-size --num-layers "
    "--eval-problems --eval-samples",
    "compare": "--methods -m --seeds --config -c --output-dir -o --workers -j --dry-run "
    "--final-eval --no-final-eval --report --no-report --ks",
    "validate-signs": "--config -c --seeds --output-dir -o --workers -j",
    "report": "--output -o --ks --evaluate-missing",
    "verify-theory": "--vocab-size --positions --seed",
    "analyze": "--model --data --preset -n --problems --samples --output -o --advantage-sign "
    "--constant-advantage --chat-template --device --dtype --lr --max-new-tokens --seed "
    "--temperature --forecast --no-forecast",
    "filter-data": "--model --data --output -o --preset --samples --low --high --kept-only "
    "--kept-output --answer-field --prompt-field --prompt-template --batch-prompts "
    "--chat-template --device --dtype --grading-timeout --max-new-tokens --max-problems "
    "--on-error --seed --temperature --top-p",
    "methods": "",
}
"""Documented commands and their flags (README, DESIGN.md): users' scripts rely on them."""


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


def test_a_bad_value_exits_2_with_the_message_shown_verbatim(tmp_path) -> None:
    # the shared fail(): markup-like text in a message (a path with brackets) is printed as typed
    missing = tmp_path / "[not-there].yaml"
    done = CliRunner().invoke(app, ["train", "--config", str(missing), "--dry-run"])
    assert done.exit_code == 2
    assert "error:" in done.output and "[not-there].yaml" in done.output


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
    out = " ".join(capsys.readouterr().out.split())
    assert "internal error: RuntimeError: boom" in out and "--debug" in out
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


@pytest.mark.parametrize("command", [None, *sorted(FLAGS)])
def test_help_shows_flags_as_flags_and_values_with_their_type(command: str | None) -> None:
    # Typer prints `--resume <bool>` unless told otherwise, as if the flag took a value
    wide = {"COLUMNS": "160"}  # at 80 columns a long option name is cut short (`--constant-a…`)
    done = CliRunner().invoke(app, [*([command] if command else []), "--help"], env=wide)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    group = typer.main.get_command(app)
    params = group.commands[command].params if command else group.params  # type: ignore[attr-defined]
    for param in params:
        if not param.opts[0].startswith("--"):
            continue
        line = next(x for x in lines if f" {param.opts[0]} " in x)  # the option's first line
        if param.is_flag:
            assert "<" not in line, line
        elif param.metavar is None:  # an option that takes a value says which kind
            assert "<" in line, line
    help_line = next(x for x in lines if " --help " in x)
    assert "<bool>" not in help_line
