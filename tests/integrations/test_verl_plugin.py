"""How verl loads the plug-in (``integrations/verl/__init__.py``; issue 13): through the
``verl.plugins`` entry point in a fresh process (and only then, or through
``VERL_USE_EXTERNAL_MODULES``), patching verl's modules lazily, the real v1 trainer and engine
included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("verl")


PROBE = (  # is our loss registered before this process imports our module itself?
    "import verl, verl.trainer.ppo.core_algos as c; r = 'ed_ppo' in c.POLICY_LOSS_REGISTRY; "
    "import entropy_dynamics.integrations.verl as p; print(int(r), sorted(p.PATCHED))"
)


def _probe(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_verl_loads_the_plugin_through_its_entry_point_in_a_fresh_process() -> None:
    assert _probe().startswith("1 ['verl.trainer.ppo.core_algos']")
    # verl's switch turns entry points off; VERL_USE_EXTERNAL_MODULES loads it on any verl
    assert _probe(VERL_USE_EXTERNAL_PLUGINS="none").startswith("0")
    modules = "entropy_dynamics.integrations.verl"
    assert _probe(VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES=modules)[0] == "1"


def test_the_real_v1_trainer_and_engine_are_patched() -> None:
    from verl.trainer.ppo.v1 import trainer_base
    from verl.workers.engine.fsdp import transformer_impl

    for method in ("_compute_old_log_prob", "_compute_advantage"):
        assert getattr(trainer_base.PPOTrainer, method)._entropy_dynamics
    assert transformer_impl.FSDPEngineWithLMHead.prepare_model_outputs._entropy_dynamics
