"""DAPO-Math-17k, pass-rate filtered, as the parquet files verl's trainer reads.

``entropy-dynamics filter-data`` keeps the *original records* of the problems whose pass rate lies
in (1/16, 15/16) (the paper's filter) in ``<output>.kept.jsonl``. DAPO-Math-17k's records are
already in verl's RL format (``data_source: math_dapo``, chat ``prompt``, ``reward_model.
ground_truth``, scored by verl's built-in ``math_dapo`` reward), so this only splits them: the
first ``--holdout`` kept problems (500: the paper's DAPO500) to the validation file, the rest to
the training file. Nothing is overwritten unless ``--force``.

    python examples/verl_prepare_data.py data/dapo-math-17k.decisions.kept.jsonl --out-dir data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def split(kept: Path, out_dir: Path, holdout: int, force: bool) -> tuple[Path, Path]:
    records = pd.read_json(kept, lines=True)
    if len(records) <= holdout:
        raise SystemExit(
            f"{kept}: {len(records)} kept problems, need more than --holdout {holdout}"
        )
    missing = {"prompt", "reward_model", "data_source"} - set(records.columns)
    if missing:
        raise SystemExit(
            f"{kept}: records lack {', '.join(sorted(missing))}; verl's RL format needs "
            "data_source, prompt (chat messages) and reward_model.ground_truth (DAPO-Math-17k "
            "has them)"
        )
    stem = kept.name.removesuffix(".kept.jsonl").removesuffix(".decisions")
    train, val = out_dir / f"{stem}.train.parquet", out_dir / f"{stem}.dapo500.parquet"
    for path in (train, val):
        if path.exists() and not force:
            raise SystemExit(f"{path} exists; pass --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    records.iloc[:holdout].to_parquet(val)
    records.iloc[holdout:].to_parquet(train)
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", type=Path, help="the *.kept.jsonl written by filter-data")
    parser.add_argument("--out-dir", type=Path, default=Path("data"))
    parser.add_argument("--holdout", type=int, default=500, help="validation problems (DAPO500)")
    parser.add_argument("--force", action="store_true", help="overwrite existing parquet files")
    args = parser.parse_args()
    train, val = split(args.kept, args.out_dir, args.holdout, args.force)
    print(f"train: {train}\nvalidation: {val}")


if __name__ == "__main__":
    main()
