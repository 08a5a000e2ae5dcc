"""Finished runs written to disk with known numbers, for the tests of the report's statistics
(``tests/study/test_vs_baseline.py``, ``test_selection.py``, ``tests/cli/test_reporting.py``):
a config, training rows and a ``final_eval.json`` with a test record and, where asked, a
validation record, as the final evaluation writes them."""

from __future__ import annotations

import json

from entropy_dynamics.training.config import load_config, save_config

__all__ = [
    "CORRECT",
    "HELD_OUT_ENTROPY",
    "KEPT",
    "ROLLOUT_ENTROPY",
    "STEPS",
    "TEST",
    "VALIDATION",
    "write_run",
    "write_sweep_run",
]

# Per seed 0, 1, 2: correct samples out of 4 on the same 4 test problems.
CORRECT = {
    "grpo": [[0, 4, 2, 0], [0, 4, 4, 0], [0, 2, 2, 0]],
    "clip_b": [[1, 4, 2, 1], [1, 4, 4, 0], [1, 3, 2, 1]],
}
HELD_OUT_ENTROPY = {"grpo": [0.25, 0.25, 0.25], "clip_b": [0.30, 0.28, 0.32]}
ROLLOUT_ENTROPY = {"grpo": [0.20, 0.22, 0.24], "clip_b": [0.30, 0.31, 0.35]}  # last 20 steps
KEPT = {"grpo": [1.0, 1.0, 1.0], "clip_b": [0.99, 0.98, 0.97]}
STEPS = 25

# A sweep: correct samples out of 4 on 4 problems, per mu (every seed). On validation mu = 2.0 is
# better (pass@1 .75 vs .25); on test mu = 1.0 is (1.0 vs .25): a choice must not see test.
VALIDATION = {1.0: [1, 1, 1, 1], 2.0: [3, 3, 3, 3]}
TEST = {1.0: [4, 4, 4, 4], 2.0: [1, 1, 1, 1]}


def _new_run(root, name: str, overrides: list[str]):
    config = load_config(None, [f"name={name}", f"output_dir={root}", *overrides])
    config.run_dir.mkdir(parents=True)
    save_config(config, config.run_dir / "config.yaml")
    return config.run_dir


def _record(split: str | None, correct: list[int], entropy: float, steps: int) -> dict:
    record = {"step": steps, "k": 4, "problems": len(correct), "temperature": 1.0}
    record.update(correct=correct, mean_entropy=entropy)
    if split is not None:  # an older file has no "split": its numbers are the held-out split's
        record["split"] = split
    return record


def write_run(root, method: str, seed: int, split: str | None = "test"):
    """A finished run of ``method`` (``grpo`` or ``clip_b``): 25 training rows (the first 5 at
    entropy 9, outside the last 20) and ``final_eval.json`` with the test record of
    :data:`CORRECT` (``split=None``: an older file without ``"split"``)."""
    overrides = [f"steps={STEPS}", f"seed={seed}", f"algorithm.method={method}"]
    run = _new_run(root, f"{method}-seed{seed}", overrides)
    rows = [
        {
            "step": t,
            "entropy/mean": 9.0 if t <= 5 else ROLLOUT_ENTROPY[method][seed],
            "actor/frac_kept": KEPT[method][seed],
        }
        for t in range(1, STEPS + 1)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = _record(split, CORRECT[method][seed], HELD_OUT_ENTROPY[method][seed], STEPS)
    (run / "final_eval.json").write_text(json.dumps(record))
    return run


def write_sweep_run(root, mu: float, seed: int, validation: bool = True):
    """A one-step Clip_B run at ``mu`` whose test record has :data:`TEST` and validation record
    :data:`VALIDATION` (none when not ``validation``); the mean entropy is .5 (test) / .1
    (validation) at mu 1 and the reverse at mu 2, plus .01 · seed."""
    overrides = ["steps=1", f"seed={seed}", "algorithm.method=clip_b",
                 f"algorithm.loss.filter_options.mu={mu}"]  # fmt: skip
    run = _new_run(root, f"clip_b-mu={mu}-seed{seed}", overrides)
    row = {"step": 1, "entropy/mean": 0.3, "actor/frac_kept": 0.99}
    (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    shift = 0.01 * seed
    final = _record("test", TEST[mu], (0.5 if mu == 1.0 else 0.1) + shift, 1)
    if validation:
        entropy = (0.1 if mu == 1.0 else 0.5) + shift
        final["validation"] = _record("validation", VALIDATION[mu], entropy, 1)
    (run / "final_eval.json").write_text(json.dumps(final))
    return run
