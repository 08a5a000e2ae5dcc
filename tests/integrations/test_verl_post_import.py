"""A callback when a module is first imported (``integrations/verl/_post_import.py``): right after
the module's body ran, once; at once for a module already imported. Needs no verl."""

from __future__ import annotations

import importlib
import sys

from entropy_dynamics.integrations.verl._post_import import when_imported


def test_a_callback_runs_once_right_after_the_modules_body(tmp_path, monkeypatch) -> None:
    name = "ed_post_import_probe"
    (tmp_path / f"{name}.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(tmp_path)
    seen = []
    when_imported(name, lambda module: seen.append(module.VALUE + 1))
    assert seen == []  # not imported yet: nothing ran
    try:
        module = importlib.import_module(name)
        assert seen == [42] and module.VALUE == 41
        when_imported(name, lambda module: seen.append("now"))  # already imported: at once
        assert seen == [42, "now"]
        del sys.modules[name]
        importlib.import_module(name)  # a second import: the callback ran once, not again
        assert seen == [42, "now"]
    finally:
        sys.modules.pop(name, None)
