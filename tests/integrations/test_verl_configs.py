"""The verl launch recipes (``configs/verl``) compose with verl's own trainer config (issue 13).

Hydra composes each recipe over verl 0.9's ``ppo_trainer`` exactly as ``python -m
verl.trainer.main_ppo --config-path configs/verl --config-name <recipe>`` does; every key a recipe
sets must exist in verl's config (a typo would otherwise be merged silently), the paper's settings
must come out, the plug-in must read the filter, and verl must build its actor config from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("verl")

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from entropy_dynamics.integrations.verl import CONFIG_KEY, FilterSettings

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "verl"
RECIPES = {  # recipe: (filter, options, group size)
    "grpo": ("none", {}, 16),
    "clip_b": ("clip_b", {"mu": 2.5}, 16),
    "clip_v": ("clip_v", {"mu": 8.5, "max_frac": 1e-4}, 8),
}


def _compose(name: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=name)


def _leaves(node, prefix=""):
    if OmegaConf.is_dict(node):
        for key in node:
            yield from _leaves(node._get_node(key), f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_composes_over_verls_trainer_config(name: str) -> None:
    from verl.utils.config import omega_conf_to_dataclass

    config = _compose(name)
    verl_keys = set(_leaves(_compose_verl()))
    for path in CONFIGS.glob("*.yaml"):
        own = OmegaConf.load(path)
        own.pop("hydra", None), own.pop("defaults", None), own.pop(CONFIG_KEY, None)
        unknown = [k for k in _leaves(own) if k not in verl_keys]
        assert not unknown, f"{path.name} sets keys verl does not have: {unknown}"
    filter_name, options, group = RECIPES[name]
    settings = FilterSettings.from_config(config)
    if filter_name == "none":
        assert settings is None
    else:
        assert settings == FilterSettings(filter_name, options)
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.rollout.n == group
    assert config.data.train_batch_size == 64
    assert config.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    assert config.actor_rollout_ref.model.use_fused_kernels is False
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # verl's own validation
    assert actor.loss_agg_mode == "token-mean" and actor.use_kl_loss is False


def _compose_verl():
    from verl.trainer import config as verl_config

    directory = Path(verl_config.__file__).parent
    with initialize_config_dir(config_dir=str(directory), version_base=None):
        return compose(config_name="ppo_trainer")
