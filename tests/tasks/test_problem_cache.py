"""Generated problem sets cached on disk: read back equal, regenerated when damaged or foreign,
never in the way when the cache cannot be written."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from entropy_dynamics.tasks._problem_cache import cache_dir, cached
from entropy_dynamics.tasks.base import SPLITS
from entropy_dynamics.tasks.countdown import CountdownConfig, CountdownTask, generate_problems


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ENTROPY_DYNAMICS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _refuse():
    raise AssertionError("generated although a valid copy was cached")


def test_a_cached_set_is_read_back_and_a_bad_one_regenerated(folder) -> None:
    assert cache_dir() == folder
    calls = []

    def generate():
        calls.append(1)
        return [[[1, 2], 3, 1]]

    assert cached("kind", {"a": 1}, generate) == [[[1, 2], 3, 1]]
    assert cached("kind", {"a": 1}, _refuse) == [[[1, 2], 3, 1]]  # from the file
    assert cached("kind", {"a": 2}, generate) == [[[1, 2], 3, 1]] and len(calls) == 2
    (path,) = [p for p in folder.iterdir() if json.loads(p.read_text())["key"]["key"] == {"a": 1}]
    path.write_text('{"key": ')  # damaged
    assert cached("kind", {"a": 1}, generate) == [[[1, 2], 3, 1]] and len(calls) == 3
    path.write_text(json.dumps({"key": {"other": 1}, "records": []}))  # not this key's
    assert cached("kind", {"a": 1}, generate) == [[[1, 2], 3, 1]] and len(calls) == 4
    assert not list(folder.glob("*.tmp"))


def test_an_unwritable_cache_only_costs_the_time(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ENTROPY_DYNAMICS_CACHE", str(blocker / "cache"))  # under a file
    assert cached("kind", {"a": 1}, lambda: [[1]]) == [[1]]


def test_countdown_problems_from_the_cache_equal_generated_ones(folder) -> None:
    config = CountdownConfig(n_train=30, n_validation=10, n_test=10)
    first = CountdownTask(config)
    splits = {split: getattr(first, f"{split}_problems")() for split in SPLITS}
    assert splits == {split: generate_problems(config, split) for split in SPLITS}
    assert len(list(folder.iterdir())) == 3  # one file per split
    again = CountdownTask(config)
    assert again.train_problems() == first.train_problems()  # read back
    reward_only = CountdownTask(replace(config, format_weight=0.5))
    assert reward_only.train_problems() == first.train_problems()
    assert len(list(folder.iterdir())) == 3  # the reward's options do not change the problems
    more_test = CountdownTask(replace(config, n_test=12))
    assert more_test.train_problems() == splits["train"]
    assert more_test.validation_problems() == splits["validation"]
    assert len(list(folder.iterdir())) == 3  # nor do the other splits' sizes
    assert more_test.test_problems()[:10] == splits["test"]  # a longer draw of the same stream
    assert len(list(folder.iterdir())) == 4
