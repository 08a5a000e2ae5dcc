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


def test_entropy_target_recipe_runs_our_controller_and_the_monitor() -> None:
    config = _compose("entropy_target")  # its keys outside the node: checked above, every recipe
    settings = FilterSettings.from_config(config)
    assert settings.method == "entropy_target" and settings.monitor_every == 1
    assert settings.control == {"schedule": "constant", "ki": 0.1, "integral_limit": 0.1}
    assert config.actor_rollout_ref.rollout.n == 16


def _compose_verl():
    from verl.trainer import config as verl_config

    directory = Path(verl_config.__file__).parent
    with initialize_config_dir(config_dir=str(directory), version_base=None):
        return compose(config_name="ppo_trainer")


def _prepare_module():
    import importlib.util

    path = CONFIGS.parents[1] / "examples" / "verl_prepare_data.py"
    spec = importlib.util.spec_from_file_location("verl_prepare_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_splits_kept_records_into_verls_parquet_files(tmp_path) -> None:
    import json

    import pandas as pd

    records = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "ability": "MATH",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"index": str(i)},
        }
        for i in range(5)
    ]
    kept = tmp_path / "dapo.decisions.kept.jsonl"
    kept.write_text("".join(json.dumps(r) + "\n" for r in records))
    split = _prepare_module().split
    train, val = split(kept, tmp_path / "out", holdout=2, force=False)
    assert (train.name, val.name) == ("dapo.train.parquet", "dapo.dapo500.parquet")
    held, rest = pd.read_parquet(val), pd.read_parquet(train)
    assert list(held["reward_model"].map(lambda r: r["ground_truth"])) == ["1", "2"]
    assert list(rest["prompt"].map(lambda p: p[0]["content"])) == [
        f"What is {i} + 1?" for i in (2, 3, 4)
    ]
    with pytest.raises(SystemExit, match="exists"):  # nothing is overwritten unasked
        split(kept, tmp_path / "out", holdout=2, force=False)
    kept.write_text(json.dumps({"question": "1 + 1"}) + "\n" * 3)
    with pytest.raises(SystemExit, match="lack data_source, prompt, reward_model"):
        split(kept, tmp_path / "bad", holdout=0, force=False)
