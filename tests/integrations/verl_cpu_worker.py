"""Imported in each Ray worker (``VERL_USE_EXTERNAL_MODULES=verl_cpu_worker``, during ``import
verl``, before verl imports its workers) for the Ray test: the test-only CPU platform and one
gloo backend for the worker's process group (verl asks for ``cpu:gloo,<device>:<backend>``,
which names cpu twice on a CPU platform). The engine is looked up under verl's cuda registration
(``VERL_ENGINE_DEVICE=cuda``: the same FSDP engine class). It does not import the plug-in: the
worker must load that through verl's entry point on its own."""

from __future__ import annotations

import verl.utils.distributed as distributed
from verl_cpu import use_cpu_platform

use_cpu_platform()
_init = distributed.initialize_global_process_group_ray


def _gloo_only(timeout_second=None, backend=None):
    return _init(timeout_second=timeout_second, backend=backend or "gloo")


# engine_workers binds the name at its own import, which comes later
distributed.initialize_global_process_group_ray = _gloo_only
