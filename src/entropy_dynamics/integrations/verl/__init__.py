"""verl plug-in: the token filters of arXiv 2602.03392 (Clip_B, Clip_V, ... by name) in verl 0.9.

Loaded in every process that imports verl — the driver and each Ray worker — through verl's
``verl.plugins`` entry point (declared in this package's ``pyproject.toml``; verl >= 0.9 imports
it at the end of ``import verl`` unless ``VERL_USE_EXTERNAL_PLUGINS=none``), or through
``VERL_USE_EXTERNAL_MODULES=entropy_dynamics.integrations.verl`` (every verl version; pass it to
the workers with ``ray_kwargs.ray_init.runtime_env.env_vars``). Loading changes nothing until a
run asks for a filter; it patches each verl module right after verl imports it
(:mod:`._post_import`), so ``import verl`` stays as fast as without it:

- ``verl.workers.engine.fsdp.transformer_impl`` (every worker): the FSDP engine's forward adds
  ``H``, ``S_k`` and ``E_p[S]`` to its model output when asked (:mod:`.engine`);
- ``verl.trainer.ppo.v1.trainer_base`` (the driver): with ``+entropy_dynamics.filter=clip_b``
  (and ``+entropy_dynamics.filter_options.mu=2.5``, ...), the statistics come from verl's
  old-log-prob pass and the keep-mask is decided on the whole batch after advantages, narrowing
  ``response_mask`` and ``loss_mask`` (:mod:`.trainer`); with ``+entropy_dynamics.filter=
  entropy_target`` (``+entropy_dynamics.control.*``) or ``+entropy_dynamics.method=
  adaptive_entropy``, our trainer's controller decides each step, and
  ``+entropy_dynamics.monitor_every=N`` measures the actual entropy change after the update;
  the controller's state goes into each ``global_step_N`` checkpoint (:mod:`.control`);
- ``verl.trainer.ppo.core_algos``: each of our policy losses as ``ed_<name>`` (``ed_ppo``,
  ``ed_kl_cov``; ``ed_entropic`` refuses to run, as its controller runs in our trainer only;
  :mod:`.policy_losses`);
- ``verl.workers.engine_workers``: the loss-time fallback for verl's legacy trainer, when
  ``ENTROPY_DYNAMICS_VERL_LOSS_TIME_FILTER`` is set (:mod:`.policy_losses`).

A patch that fails (a verl version whose internals moved) is reported with a warning naming the
module, and :data:`PATCHED` lists the ones in force; no formula is re-written here: statistics,
filters and losses are :mod:`entropy_dynamics.stats`, ``filters`` and ``losses``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

from entropy_dynamics.integrations.verl._post_import import when_imported
from entropy_dynamics.integrations.verl.engine import STAT_KEYS, STATS_FLAG, patch_engine
from entropy_dynamics.integrations.verl.filtering import CONFIG_KEY, FilterSettings, decide_keep
from entropy_dynamics.integrations.verl.policy_losses import (
    LOSS_TIME_ENV,
    loss_time_ppo_loss,
    patch_engine_workers,
    register_policy_losses,
)
from entropy_dynamics.integrations.verl.trainer import patch_v1_trainer

__all__ = [
    "CONFIG_KEY",
    "LOSS_TIME_ENV",
    "PATCHED",
    "STATS_FLAG",
    "STAT_KEYS",
    "FilterSettings",
    "decide_keep",
    "install",
    "loss_time_ppo_loss",
]

PATCHED: set[str] = set()
"""verl modules the plug-in has patched in this process."""

_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "verl.trainer.ppo.core_algos": register_policy_losses,
    "verl.workers.engine.fsdp.transformer_impl": patch_engine,
    "verl.trainer.ppo.v1.trainer_base": patch_v1_trainer,
    "verl.workers.engine_workers": patch_engine_workers,
}


def _guarded(name: str, patch: Callable[[ModuleType], None]) -> Callable[[ModuleType], None]:
    def apply(module: ModuleType) -> None:
        try:
            patch(module)
        except Exception as exc:  # verl imports plug-ins quietly: say it here
            warnings.warn(
                f"entropy_dynamics: could not patch {name} ({type(exc).__name__}: {exc}); the "
                f"verl plug-in is tested with verl>=0.9,<0.10",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            PATCHED.add(name)

    return apply


def install() -> None:
    """Patch each verl module when (or if already) imported; idempotent."""
    for name, patch in _PATCHES.items():
        when_imported(name, _guarded(name, patch))


install()
