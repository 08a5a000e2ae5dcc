"""The peers' fused LM heads, imported for the benchmarks only when importable.

Install them outside the project's environment (docs/performance.md): a venv created with
``--system-site-packages``, then ``pip install trl==1.16.0 liger-kernel`` and
``pip install --no-deps verl==0.9.1``. Each loader raises ``ImportError`` with the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TRL_CHUNK_SIZE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE in TRL 1.16


def trl_chunked_logprob():
    """``(trl.kernels.ChunkedLogProbFunction, the chunk size TRL's GRPOTrainer passes it)``;
    ``trl.kernels`` needs only transformers, ``trl.trainer`` also accelerate and datasets."""
    from trl.kernels import ChunkedLogProbFunction

    try:
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE as chunk
    except ImportError:
        chunk = TRL_CHUNK_SIZE
    return ChunkedLogProbFunction, chunk


def verl_fused_linear_for_ppo():
    """verl's ``FusedLinearForPPO`` class (plain torch). verl's package ``__init__`` imports ray;
    without it the module file is loaded on its own."""
    try:
        from verl.utils.experimental.torch_functional import FusedLinearForPPO
    except ImportError:
        spec = importlib.util.find_spec("verl")
        if spec is None or not spec.submodule_search_locations:
            raise
        path = Path(spec.submodule_search_locations[0]) / "utils/experimental/torch_functional.py"
        module_spec = importlib.util.spec_from_file_location("_verl_torch_functional", path)
        if module_spec is None or module_spec.loader is None or not path.exists():
            raise ImportError(f"verl has no {path}") from None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.FusedLinearForPPO
    return FusedLinearForPPO
