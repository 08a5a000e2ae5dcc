"""verl's FSDP2 engine on CPU, for tests only (not part of the package).

verl 0.9 has no CPU platform: auto-detection falls back to 'nvidia' and the engine calls
``torch.cuda``. A test-only platform registered through verl's own ``PlatformRegistry`` (device
"cpu", backend gloo, ``current_device() == "cpu"`` so that ``model.to(device)`` stays on CPU)
lets the real ``FSDPEngineWithLMHead`` build, run forwards and train in one gloo process, with
sdpa attention (no flash-attention) and float32 throughout. Everything else is verl's code.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist

import entropy_dynamics

MODEL = Path(entropy_dynamics.__file__).parent / "models" / "assets" / "countdown-tiny"


def use_cpu_platform() -> None:
    """Register and select the CPU platform (idempotent)."""
    from verl.plugin.platform import PlatformBase, PlatformRegistry, platform_manager, set_platform

    if PlatformRegistry.get("cpu_test") is None:

        @PlatformRegistry.register("cpu_test")
        class CPUTestPlatform(PlatformBase):
            device_name = "cpu"
            vendor_name = "cpu"
            device_module = torch.cpu

            def is_available(self) -> bool:
                return True

            def current_device(self):  # type: ignore[override]
                return "cpu"  # model.to(device=...) must stay on CPU

            def device_count(self) -> int:
                return 1

            def set_device(self, device_index) -> None:
                pass

            def synchronize(self, device_index=None) -> None:
                pass

            def manual_seed(self, seed: int) -> None:
                torch.manual_seed(seed)

            manual_seed_all = manual_seed

            def communication_backend_name(self) -> str:
                return "gloo"

            def empty_cache(self) -> None:
                pass

            def set_allocator_settings(self, settings: str) -> None:
                pass

            def get_device_capability(self, device_index: int = 0):
                return (None, None)

            def visible_devices_envvar(self) -> str:
                return "CPU_VISIBLE_DEVICES"

            def nvtx_range(self, msg: str):
                return contextlib.nullcontext()

            def profiler_start(self) -> None:
                pass

            def profiler_stop(self) -> None:
                pass

            def ray_resource_name(self) -> str:
                return "CPU"

            def ray_noset_envvars(self) -> list[str]:
                return []

            def is_ipc_supported(self) -> bool:
                return False

            def cudart(self):
                return None

    for name in ("max_memory_allocated", "max_memory_reserved"):  # verl's metrics read them
        if not hasattr(torch.cpu, name):
            setattr(torch.cpu, name, lambda *args, **kwargs: 0)
    current = platform_manager._current_platform
    if current is None or current.device_name != "cpu":
        set_platform(PlatformRegistry.get("cpu_test")())


def init_gloo(port: int = 29541) -> None:
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(port))
        dist.init_process_group("gloo", rank=0, world_size=1)


def engine_configs(
    lr: float = 1e-3,
    micro_batch: int = 4,
    use_remove_padding: bool = True,
    bf16: bool = False,
    fused: bool = False,
):
    """verl's model, engine and optimizer configs for the embedded model (FSDP2, sdpa, float32
    weights; ``bf16``: verl's bf16 mixed precision), as ``(model, engine, optimizer)``."""
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig

    model_config = HFModelConfig(
        path=str(MODEL),
        override_config={"attn_implementation": "sdpa"},
        use_remove_padding=use_remove_padding,
        use_fused_kernels=fused,
    )
    engine_config = FSDPEngineConfig(
        strategy="fsdp2",
        use_torch_compile=False,
        model_dtype="fp32",
        dtype="bfloat16" if bf16 else "float32",
        mixed_precision={
            "param_dtype": "bf16" if bf16 else "fp32",
            "reduce_dtype": "fp32",
            "buffer_dtype": "fp32",
        },
        use_dynamic_bsz=False,
        micro_batch_size_per_gpu=micro_batch,
        infer_micro_batch_size_per_gpu=micro_batch,
        use_remove_padding=use_remove_padding,
        use_fused_kernels=fused,
    )
    optimizer_config = FSDPOptimizerConfig(lr=lr, total_training_steps=100, clip_grad=1e9)
    return model_config, engine_config, optimizer_config


def new_engine(**options):
    """A real, initialised ``FSDPEngineWithLMHead`` on the current platform
    (:func:`engine_configs` ``options``)."""
    from verl.trainer.config import CheckpointConfig
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    model_config, engine_config, optimizer_config = engine_configs(**options)
    engine = FSDPEngineWithLMHead(
        model_config=model_config,
        engine_config=engine_config,
        optimizer_config=optimizer_config,
        checkpoint_config=CheckpointConfig(),
    )
    engine.initialize()
    return engine


def build_engine(lr: float = 1e-3, micro_batch: int = 4, use_remove_padding: bool = True):
    """A real ``FSDPEngineWithLMHead`` (FSDP2, one gloo process, the CPU platform) on the
    embedded model."""
    use_cpu_platform()
    init_gloo()
    return new_engine(lr=lr, micro_batch=micro_batch, use_remove_padding=use_remove_padding)


def actor_config(batch: int, micro_batch: int, **overrides):
    """verl's ``ActorConfig`` for one mini-batch of ``batch`` sequences, fixed micro-batches."""
    from verl.workers.config import ActorConfig

    return ActorConfig(
        strategy="fsdp2",
        ppo_mini_batch_size=batch,
        ppo_micro_batch_size_per_gpu=micro_batch,
        rollout_n=1,
        use_dynamic_bsz=False,
        **overrides,
    )


def padded_batch(prompts, prompt_mask, responses, response_mask, advantages, old_log_probs):
    """verl's left-right padded batch (prompts left-, responses right-padded) → its no-padding
    TensorDict (jagged ``input_ids``, ``position_ids``; ``loss_mask = response_mask``)."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    attention_mask = torch.cat([prompt_mask, response_mask], 1).long()
    data = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0),
            "response_mask": response_mask.long(),
            "advantages": advantages.float(),
            "old_log_probs": old_log_probs.float(),
        },
        batch_size=prompts.shape[0],
    )
    return left_right_2_no_padding(data)


def flags(data, **values) -> None:
    """Set verl's non-tensor flags on a batch (what its worker and trainer set)."""
    from verl.utils import tensordict_utils as tu

    defaults = {
        "temperature": 1.0,
        "use_remove_padding": True,
        "use_dynamic_bsz": False,
        "micro_batch_size_per_gpu": 4,
        "max_token_len_per_gpu": None,
        "use_fused_kernels": False,
        "global_batch_size": int(data.batch_size[0]),
    }
    tu.assign_non_tensor(data, **{**defaults, **values})
