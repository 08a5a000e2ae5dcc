"""Run a callback when a module is first imported (or now, if it already is).

verl imports its plug-ins at the end of ``import verl``, in every process, before it has imported
the modules the plug-in patches (the FSDP engine, the v1 trainer, the engine workers). Importing
them eagerly would add ~2.5 s to every ``import verl`` and pull the trainer's dependencies
(TransferQueue) into processes that never train; a finder on ``sys.meta_path`` instead patches
each module right after its own body ran, before any caller can use it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType

__all__ = ["when_imported"]

_CALLBACKS: dict[str, list[Callable[[ModuleType], None]]] = {}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, name: str) -> None:
        self._wrapped = wrapped
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        for callback in _CALLBACKS.pop(self._name, []):
            callback(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in _CALLBACKS:
            return None
        for finder in sys.meta_path:  # the spec the rest of the import system would find
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, name)
                return spec
        return None


_FINDER = _Finder()


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once module ``name`` has been executed: now if it is already in
    ``sys.modules``, else right after its first import."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _CALLBACKS.setdefault(name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
