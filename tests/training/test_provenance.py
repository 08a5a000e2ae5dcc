"""A run's provenance: ``config.yaml`` with the resolved name and a comment header that loads as
before, ``provenance.json`` with versions, commit, command and the resolved loss."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict

import pytest
import torch

from entropy_dynamics.training.config import load_config
from entropy_dynamics.training.config_io import to_dict
from entropy_dynamics.training.provenance import PROVENANCE_FILE, git_commit, write_config


def test_config_yaml_records_resolved_values_and_loads_back(tmp_path) -> None:
    config = load_config(None, ["algorithm.method=clip_higher", "algorithm.loss={eps_low: 0.1}"])
    assert config.name == "" and config.algorithm.loss == {"eps_low": 0.1}
    info = write_config(config, tmp_path, ["/usr/bin/entropy-dynamics", "train", "-m", "x y"])
    text = (tmp_path / "config.yaml").read_text()
    assert "\nname: clip_higher-seed0\n" in text  # not name: ''
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert f"torch {torch.__version__}" in header[0]
    assert header[1] == "# command: entropy-dynamics train -m 'x y'"
    assert "eps_high: 0.28" in header[2] and "eps_low: 0.1" in header[2]  # method + override
    again = load_config(tmp_path / "config.yaml")  # the comments are ignored
    assert to_dict(again) == {**to_dict(config), "name": "clip_higher-seed0"}
    assert again.algorithm.loss == {"eps_low": 0.1}  # still the user's overrides
    saved = json.loads((tmp_path / PROVENANCE_FILE).read_text())
    assert saved == json.loads(json.dumps(info))
    assert saved["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert saved["transformers"] and saved["python"] and saved["entropy_dynamics"]
    assert saved["resolved"]["algorithm.loss"] == asdict(config.algorithm.policy_loss())
    assert saved["resolved"]["algorithm.loss"]["eps_high"] == 0.28


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_of_a_checkout(tmp_path) -> None:
    assert git_commit(tmp_path) is None  # not a checkout

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("2")
    assert git_commit(tmp_path) == f"{head}+modified"
