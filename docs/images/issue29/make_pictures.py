"""Render the before/after pictures of issue 29 item 7 with the package of one source tree.

    python docs/images/issue29/make_pictures.py SRC_TREE OUT_DIR RUNS_DIR

RUNS_DIR holds three short runs of the embedded model (see README.md here): ``grpo-short`` and
``target-short`` (12 steps, evaluated every 6) and ``one-step`` (1 step). Written to OUT_DIR:

- ``<run>_entropy.png``, ``<run>_reward.png``, ``<run>_dynamics.png``: the run plots
  (``plot_run``) of each run;
- ``report_reward.png``, ``report_delta_h_scatter.png``: the report figures (``write_report``)
  over ``grpo-short`` and ``one-step``.

Each PNG is scaled down to at most 900 px wide and 256 colours to keep the repository small.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from pathlib import Path

src, out, runs = (Path(a).resolve() for a in sys.argv[1:4])
sys.path.insert(0, str(src / "src"))

from PIL import Image  # noqa: E402

from entropy_dynamics.study.report import write_report  # noqa: E402
from entropy_dynamics.study.run_plots import plot_run  # noqa: E402


def _small(path: Path, target: Path) -> None:
    image = Image.open(path).convert("RGB")
    if image.width > 900:
        image = image.resize((900, round(image.height * 900 / image.width)), Image.LANCZOS)
    image.quantize(256).save(target, optimize=True)


out.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    for run in ("grpo-short", "target-short", "one-step"):
        for png in plot_run(runs / run, Path(tmp) / run):
            _small(png, out / f"{run}_{png.name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = write_report([runs / "grpo-short", runs / "one-step"], Path(tmp) / "report")
    for name in ("reward", "delta_h_scatter"):
        _small(result.markdown.parent / "figures" / f"{name}.png", out / f"report_{name}.png")
    shutil.rmtree(Path(tmp) / "report")
