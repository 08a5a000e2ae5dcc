"""The README's examples run as written on a fresh machine.

Every ```bash and ```python block of README.md is extracted. Each shell command is either run or
deliberately left out: ``pip install`` (the environment is installed already) and the test
command itself (CI runs it), and any command or Python block that names an external model or
dataset (``/models/``, ``/data/``), which a fresh machine does not have. Every other command and
Python block runs in a subprocess from an empty directory, as a user would run it.

Fast variant (the normal suite, in this process to spare each command the seconds of starting
Python, torch and transformers): each ``entropy-dynamics`` command gets the arguments of
:data:`FAST` appended, which shrink its work (``steps=2`` wins over an earlier ``steps=60``, and
a repeated option takes its last value: ``-n 16 ... -n 1``); nothing else is changed. Slow
variant (``-m slow``): the commands exactly as written, through the installed console script in
a subprocess (minutes each on 2 cores), and the Python blocks as scripts.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
EXTERNAL = ("/models/", "/data/")
"""Paths of the user's own models and data in the README's examples."""
NOT_RUN = (("pip", "install"), ("python", "-m", "pytest"), ("bash", "scripts/test-engines.sh"))
"""Commands a test does not repeat: installation, and the test command itself."""
FAST = {
    "train": ["steps=2", "eval.every=0", "checkpoint_every=2"],
    "analyze": ["-n", "1", "--samples", "2"],
}
"""Arguments appended to an ``entropy-dynamics`` command in the fast variant."""


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


def _commands() -> list[list[str]]:
    """Every shell command of the README as argv, ``a && b`` split into two."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:end])
                words = words[end + 1 :]
    return commands


def _external(text: str) -> bool:
    code = re.sub(r"#.*", "", text)  # a comment may name a model the example does not load
    return any(path in code for path in EXTERNAL)


CLI_COMMANDS = [c for c in _commands() if c[0] == "entropy-dynamics" and not _external(" ".join(c))]
PYTHON_BLOCKS = [b for b in _blocks("python") if not _external(b)]


def test_every_readme_command_is_run_or_deliberately_left_out() -> None:
    for command in _commands():
        left_out = any(tuple(command[: len(p)]) == p for p in NOT_RUN) or _external(
            " ".join(command)
        )
        assert left_out or command in CLI_COMMANDS, f"README command not covered: {command}"
    assert len(CLI_COMMANDS) >= 4 and len(PYTHON_BLOCKS) >= 2  # the extraction found them


def _entry_point() -> list[str]:
    script = shutil.which("entropy-dynamics")
    main = "from entropy_dynamics.cli import main; main()"
    return [script] if script else [sys.executable, "-c", main]


def _run(argv: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _ids(commands: list[list[str]]) -> list[str]:
    return [shlex.join(c)[:60] for c in commands]


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=_ids(CLI_COMMANDS))
def test_readme_command_runs_with_fewer_steps(command: list[str], tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from entropy_dynamics.cli import app

    monkeypatch.chdir(tmp_path)  # a fresh user's empty directory
    done = CliRunner().invoke(app, [*command[1:], *FAST.get(command[1], [])])
    assert done.exit_code == 0, f"{shlex.join(command)}\n{done.output[-3000:]}"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.split("\n")[0][:40] for b in PYTHON_BLOCKS])
def test_readme_python_block_runs(block: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


@pytest.mark.slow
@pytest.mark.parametrize("command", CLI_COMMANDS, ids=_ids(CLI_COMMANDS))
def test_readme_command_runs_as_written(command: list[str], tmp_path) -> None:
    _run([*_entry_point(), *command[1:]], tmp_path, timeout=3600)


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.split("\n")[0][:40] for b in PYTHON_BLOCKS])
def test_readme_python_block_runs_as_a_script(block: str, tmp_path) -> None:
    _run([sys.executable, "-c", block], tmp_path, timeout=600)
