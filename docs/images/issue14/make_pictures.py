"""Render the before/after pictures of issue 14 with the package of one source tree.

    python docs/images/issue14/make_pictures.py SRC_TREE OUT_DIR RUN_DIR

- ``run_*.png``: the run plots (``plot_run``) of RUN_DIR's ``metrics.jsonl`` and ``config.yaml``
  (a real default run: ``entropy-dynamics train``, 200 steps);
- ``report_*.png``: the report figures (``write_report``) of a synthetic fixture of 8 methods × 2
  seeds × 60 steps (smooth decays with noise; the numbers mean nothing, the layout is the point).

Each PNG is scaled down to at most 720 px wide and 256 colours to keep the repository small. Used with
``git worktree add /tmp/before f5a449e~1`` (before the plot restyle) and HEAD (after).
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from pathlib import Path

src, out, real_run = (Path(a).resolve() for a in sys.argv[1:4])
sys.path.insert(0, str(src / "src"))

from PIL import Image  # noqa: E402

from entropy_dynamics.study.report import write_report  # noqa: E402
from entropy_dynamics.study.run_plots import plot_run  # noqa: E402
from entropy_dynamics.training.config import load_config, save_config  # noqa: E402
from entropy_dynamics.training.metrics import MetricsWriter  # noqa: E402

METHODS = {  # method: how fast its entropy falls (1 = GRPO)
    "grpo": 1.0,
    "clip_b": 2.0,
    "clip_v": 1.8,
    "clip_higher": 1.5,
    "entropy_bonus": 3.0,
    "clip_cov": 1.3,
    "kl_cov": 1.4,
    "high_entropy": 1.2,
}
STEPS = 60
WIDTH = 720


def _row(step: int, scale: float, seed: int) -> dict[str, float]:
    wiggle = math.sin(1.7 * step + 3 * seed + scale)
    actual = 0.01 * math.cos(0.4 * step) / scale + 0.002 * wiggle
    row = {
        "entropy/mean": 0.3 * math.exp(-step / (40 * scale)) + 0.03 * wiggle + 0.01 * seed,
        "reward/mean": 0.1 + 0.004 * step + 0.02 * wiggle,
        "reward/accuracy": 0.1 + 0.004 * step + 0.02 * wiggle,
        "dynamics/delta_h_actual": actual,
        "dynamics/delta_h_first_order": 1.1 * actual,
        "dynamics/delta_h_thm33": 0.8 * actual + 0.001,
        "actor/frac_kept": 1.0 - 0.01 * (scale - 1),
        "actor/pg_clipfrac": 0.02 + 0.001 * wiggle,
    }
    for i, name in enumerate(("pos_adv_pos_dev", "pos_adv_neg_dev", "neg_adv_pos_dev")):
        row[f"dynamics/quadrant/{name}"] = actual * (i + 1) / 6
    row["dynamics/quadrant/neg_adv_neg_dev"] = -actual / 6
    if step % 20 == 0:
        rate = 0.25 + 0.002 * step * scale
        row |= {"eval/entropy": row["entropy/mean"] + 0.05, "eval/avg@8": rate}
        row |= {"eval/pass@1": rate, "eval/pass@8": min(1.0, 2.4 * rate)}
    return row


def _fixture(root: Path) -> None:
    for method, scale in METHODS.items():
        for seed in (0, 1):
            overrides = [f"algorithm.method={method}", f"seed={seed}", f"steps={STEPS}"]
            config = load_config(None, [*overrides, f"output_dir={root}"])
            config.run_dir.mkdir(parents=True)
            save_config(config, config.run_dir / "config.yaml")
            with MetricsWriter(config.run_dir, tensorboard=False) as writer:
                for step in range(1, STEPS + 1):
                    writer.write(step, _row(step, scale, seed))


def _shrink(path: Path, target: Path) -> None:
    image = Image.open(path).convert("RGB")
    if image.width > WIDTH:
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(colors=256).save(target, optimize=True)  # a plot needs no more colours


def main() -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "grpo-seed0"
        run.mkdir()
        for name in ("metrics.jsonl", "config.yaml"):
            shutil.copy(real_run / name, run / name)
        for path in plot_run(run):
            _shrink(path, out / f"run_{path.name}")
        _fixture(Path(tmp) / "runs")
        result = write_report([Path(tmp) / "runs"], Path(tmp) / "report", ks=(1, 8))
        for path in result.figures:
            _shrink(path, out / f"report_{path.name}")


if __name__ == "__main__":
    main()
