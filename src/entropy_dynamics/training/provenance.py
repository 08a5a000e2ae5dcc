"""Where a run came from, recorded in its directory: what ``config.yaml`` alone does not say.

- ``config.yaml`` starts with comment lines (YAML ignores them: the file loads and resumes as
  before) naming the package version, the git commit of its source tree when it is a checkout
  (with ``+modified`` when it has uncommitted changes), the torch, transformers and Python
  versions, the command line, and the values the config leaves to be resolved: the run name
  (``name`` itself is written resolved), the model an empty ``model.path`` stands for, and the
  method's full policy-loss options
  (``algorithm.loss`` holds only the user's overrides of them);
- ``provenance.json`` holds the same, for tools.

The resolved loss stays out of ``algorithm.loss``: that field is the user's overrides, which the
resume check and ``report``'s grouping compare between runs.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from entropy_dynamics.training.config import TrainConfig
from entropy_dynamics.training.config_io import to_dict

__all__ = ["PROVENANCE_FILE", "git_commit", "provenance", "write_config"]

PROVENANCE_FILE = "provenance.json"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(directory: str | Path) -> str | None:
    """``HEAD``'s commit of the git checkout at ``directory`` (``+modified`` when its tracked
    files have uncommitted changes), or ``None`` when it is none or git is missing."""
    directory = Path(directory)
    if not (directory / ".git").exists():  # only the checkout itself, not a folder above it
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+modified" if changed else head


def provenance(config: TrainConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The run's provenance: versions, commit, command line (``argv``, default ``sys.argv``) and
    the resolved values of ``config``."""
    import entropy_dynamics

    argv = sys.argv if argv is None else argv
    source = Path(entropy_dynamics.__file__).resolve().parents[2]  # src/entropy_dynamics → root
    return {
        "entropy_dynamics": _version("entropy-dynamics") or entropy_dynamics.__version__,
        "git_commit": git_commit(source),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "command": shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else "",
        "resolved": {
            "name": config.run_name,
            "model.path": str(config.model.resolved_path(config.task.name)),
            "algorithm.loss": asdict(config.algorithm.policy_loss()),
        },
    }


def write_config(config: TrainConfig, run_dir: str | Path, argv: list[str] | None = None) -> dict:
    """Write ``run_dir/config.yaml`` (``name`` resolved, the provenance as leading comments) and
    ``run_dir/provenance.json``; return the provenance."""
    run_dir = Path(run_dir)
    info = provenance(config, argv)
    resolved = info["resolved"]
    loss = yaml.safe_dump(resolved["algorithm.loss"], default_flow_style=True, width=1e9)
    header = [
        f"# entropy-dynamics {info['entropy_dynamics']}"
        + (f" (git {info['git_commit']})" if info["git_commit"] else "")
        + f", torch {info['torch']}, transformers {info['transformers']}, "
        f"Python {info['python']}",
        f"# command: {info['command']}",
        f"# algorithm.loss resolved from method {config.algorithm.method}: {loss.strip()}",
        *([] if config.model.path else [f"# model.path resolved: {resolved['model.path']}"]),
        f"# more in {PROVENANCE_FILE}",
    ]
    data = {**to_dict(config), "name": config.run_name}
    body = yaml.safe_dump(data, sort_keys=False)
    (run_dir / "config.yaml").write_text("\n".join(header) + "\n" + body)
    (run_dir / PROVENANCE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info
