"""GRPO with Clip_B / Clip_V in TRL: the embedded Countdown model on CPU by default.

Needs the ``trl`` extra: ``pip install -e ".[trl]"`` (``bash scripts/test-engines.sh`` builds such
an environment in ``.venvs/trl``). Every ``EntropyGRPOConfig`` field (TRL's ``GRPOConfig`` plus
``entropy_filter``, ``entropy_filter_options``, ``entropy_valid_vocab``, ``entropy_control``,
``entropy_dynamics_monitor_every``) is a flag or a key of ``--config``.

CPU, the embedded model (verified, a few seconds per step on 2 cores)::

    python examples/trl_grpo.py --config configs/trl/clip_b.yaml --max_steps 3
    python examples/trl_grpo.py --config configs/trl/clip_v.yaml --max_steps 3
    python examples/trl_grpo.py --config configs/trl/entropy_target.yaml --max_steps 5

One GPU with vLLM colocated (NOT verified here: vLLM could not be installed on the test machine)::

    python examples/trl_grpo.py --config configs/trl/clip_b.yaml \\
        --model_path /models/Qwen2.5-1.5B --use_vllm true --vllm_mode colocate --bf16 true

Several GPUs with DeepSpeed ZeRO-3 or FSDP2 (NOT verified here: one CPU machine; TRL's example
accelerate configs ship in its repository under ``examples/accelerate_configs/``)::

    accelerate launch --config_file zero3.yaml examples/trl_grpo.py \\
        --config configs/trl/clip_v.yaml --model_path /models/Qwen2.5-7B-Instruct --bf16 true
    accelerate launch --config_file fsdp2.yaml examples/trl_grpo.py \\
        --config configs/trl/clip_v.yaml --model_path /models/Qwen2.5-7B-Instruct --bf16 true

The reward is the Countdown task's (1 for an expression that hits the target, a small format
reward otherwise); swap ``countdown_dataset`` / ``countdown_reward`` for your task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import TrlParser

from entropy_dynamics.integrations.trl import EntropyGRPOConfig, EntropyGRPOTrainer
from entropy_dynamics.models import default_model_path
from entropy_dynamics.tasks.countdown import CountdownProblem, CountdownTask


@dataclass
class ScriptArguments:
    model_path: str = field(
        default="", metadata={"help": "A local Hugging Face model directory (default: embedded)."}
    )
    num_prompts: int = field(default=256, metadata={"help": "Countdown training prompts."})


def countdown_dataset(num_prompts: int) -> Dataset:
    """Countdown's training problems as TRL prompts; numbers and target ride along as columns."""
    problems = CountdownTask().train_problems()[:num_prompts]
    return Dataset.from_list(
        [
            {
                "prompt": p.prompt,
                "numbers": list(p.numbers),
                "target": p.target,
                "num_solutions": p.num_solutions,
            }
            for p in problems
        ]
    )


def countdown_reward(completions, numbers, target, num_solutions, **kwargs) -> list[float]:
    """TRL reward function: the Countdown task's reward of each completion."""
    task = CountdownTask()
    return [
        task.score(CountdownProblem(tuple(n), t, s), c).reward
        for c, n, t, s in zip(completions, numbers, target, num_solutions, strict=True)
    ]


def build_trainer(
    args: EntropyGRPOConfig, script: ScriptArguments, trainer_class=EntropyGRPOTrainer
) -> EntropyGRPOTrainer:
    """The trainer of ``args`` on Countdown (``trainer_class=trl.GRPOTrainer``: plain TRL, the
    baseline of ``benchmarks/engine_overhead.py``)."""
    path = script.model_path or str(default_model_path())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return trainer_class(
        model=model,
        reward_funcs=countdown_reward,
        args=args,
        train_dataset=countdown_dataset(script.num_prompts),
        processing_class=tokenizer,
    )


def main() -> None:
    parser = TrlParser((EntropyGRPOConfig, ScriptArguments))
    args, script = parser.parse_args_and_config()
    trainer = build_trainer(args, script)
    trainer.train()
    for row in trainer.state.log_history:
        groups = ("clip_b", "clip_v", "entropy", "entropy_target", "dynamics")
        keys = [k for k in row if k.split("/")[0] in groups]
        print({"step": row.get("step"), "reward": row.get("reward"), **{k: row[k] for k in keys}})


if __name__ == "__main__":
    main()
