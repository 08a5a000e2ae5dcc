"""The comparison report on hand-made runs whose every table entry is derived by hand."""

from __future__ import annotations

import base64
import json
import re

import pytest
from PIL import Image

from entropy_dynamics.study.report import FIGURES, write_report
from entropy_dynamics.study.runs import Group, group_runs, load_runs, swept_keys
from entropy_dynamics.training.config import load_config, save_config

DELTA = (0.01, -0.02, 0.005)  # actual ΔH of steps 1..3 (times a per-run scale)


def _rows(seed: int, scale: float, clip: float | None) -> list[dict]:
    rows = [{"step": 0, "eval/avg@4": 0.1, "eval/pass@1": 0.1, "eval/pass@4": 0.2}]
    for t, delta in enumerate(DELTA, start=1):
        a = scale * delta
        row = {
            "step": t,
            "entropy/mean": 1.0 - 0.1 * t + 0.01 * seed,
            "reward/accuracy": 0.1 * t,
            "dynamics/delta_h_actual": a,
            "dynamics/delta_h_first_order": 2 * a,  # actual = 0.5 · first order, r = 1
            "dynamics/delta_h_thm33": -a,  # actual = -1 · Thm 3.3, r = -1
            "dynamics/quadrant/pos_adv_pos_dev": a / 2,
            "dynamics/quadrant/pos_adv_neg_dev": a / 2,
            "dynamics/quadrant/neg_adv_pos_dev": 0.0,
            "dynamics/quadrant/neg_adv_neg_dev": 0.0,
            "actor/frac_kept": 1.0 - (clip or 0.0),
        }
        if clip is not None:
            row["clip_b/frac_clipped"] = clip
        rows.append(row)
    rows[-1].update({"eval/avg@4": 0.3, "eval/pass@1": 0.3, "eval/pass@4": 0.6})
    return rows


def _write_run(root, name, overrides, rows, correct=None):
    config = load_config(None, [f"name={name}", f"output_dir={root}", "steps=3", *overrides])
    run = config.run_dir
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if correct is not None:
        (run / "final_eval.json").write_text(json.dumps({"step": 3, "k": 4, "correct": correct}))
    return run


GRPO_CORRECT = {0: [0, 4, 4, 0], 1: [0, 4, 2, 0]}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        _write_run(
            root, f"grpo-seed{seed}", [f"seed={seed}"], _rows(seed, 1.0, None), GRPO_CORRECT[seed]
        )
        for mu in (2.0, 3.0):
            overrides = [
                f"seed={seed}",
                "algorithm.method=clip_b",
                f"algorithm.loss.filter_options.mu={mu}",
            ]
            rows = _rows(seed, mu, clip=0.01 * mu)
            _write_run(root, f"clip_b-mu={mu}-seed{seed}", overrides, rows, [1, 2, 3, 4])
    # The run order of a `compare` grid (without it, a folder's runs are read in name order).
    names = [f"grpo-seed{s}" for s in (0, 1)]
    names += [f"clip_b-mu={mu}-seed{s}" for mu in (2.0, 3.0) for s in (0, 1)]
    (root / "grid.json").write_text(json.dumps({"runs": [{"name": n} for n in names]}))
    return root


def _tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables by their section heading: a list of {column: cell} rows."""
    tables, heading, lines = {}, None, markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("| ") and heading not in tables:
            header = [c.strip() for c in line.strip("|").split(" | ")]
            rows = []
            for body in lines[i + 2 :]:
                if not body.startswith("| "):
                    break
                cells = [c.strip() for c in body.strip("|").split(" | ")]
                rows.append(dict(zip(header, cells, strict=True)))
            tables[heading] = rows
    return tables


def test_groups_by_config_over_seeds(runs) -> None:
    groups = group_runs(load_runs([runs]))
    assert [g.label for g in groups] == ["grpo", "clip_b (mu=2.0)", "clip_b (mu=3.0)"]
    assert [[r.seed for r in g.runs] for g in groups] == [[0, 1]] * 3
    assert groups[1].settings == {"algorithm.loss.filter_options.mu": 2.0}


def test_report_has_every_figure_and_table(runs, tmp_path) -> None:
    out = tmp_path / "report"
    result = write_report([runs], out, ks=(1, 2, 4, 8))
    names = sorted(p.name for p in result.figures)
    assert names == sorted([*(f"{f}.png" for f in FIGURES), "sweep_mu.png"])
    for path in result.figures:
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 100

    markdown = result.markdown.read_text()
    for path in result.figures:
        assert f"](figures/{path.name})" in markdown
    tables = _tables(markdown)
    expected_sections = [
        "Runs",
        "Final evaluation",
        "Against grpo: final scores",  # the tables' numbers: test_vs_baseline.py
        "Against grpo: entropy",
        "Against grpo: dropped share",
        "Against grpo: pass-rate histogram",
        "Predicted vs actual entropy change",
        "Entropy change by quadrant",
        "Per-problem pass rates",
        "Filter fractions",
        "Sweep over mu",
    ]
    assert list(tables) == expected_sections

    final = {row["group"]: row for row in tables["Final evaluation"]}
    # grpo, correct out of 4: seed 0 [0,4,4,0] → Avg 0.5; seed 1 [0,4,2,0] → Avg 0.375.
    # mean 0.4375, sample std 0.125/√2 = 0.0884. Pass@2 of c=2 of 4: 1 - C(2,2)/C(4,2) = 5/6,
    # so seed 1: (0 + 1 + 5/6 + 0)/4 = 0.4583 and seed 0: 0.5 → 0.479 ± 0.029.
    assert final["grpo"]["Avg@4"] == "0.438 ± 0.088"
    assert final["grpo"]["Pass@1"] == "0.438 ± 0.088"
    assert final["grpo"]["Pass@2"] == "0.479 ± 0.029"
    assert final["grpo"]["Pass@4"] == "0.500 ± 0.000"
    assert final["grpo"]["Pass@8"] == "—"  # more than the 4 samples per problem
    # Final entropy = step 3: 1 - 0.3 + 0.01·seed → 0.70, 0.71.
    assert final["grpo"]["final entropy"] == "0.705 ± 0.007"
    # clip_b [1,2,3,4]: Avg 10/16; Pass@4 = 1 for every problem.
    assert final["clip_b (mu=2.0)"]["Avg@4"] == "0.625 ± 0.000"
    assert final["clip_b (mu=2.0)"]["Pass@4"] == "1.000 ± 0.000"

    prediction = {row["group"]: row for row in tables["Predicted vs actual entropy change"]}
    everything = prediction["all runs"]
    assert everything["points"] == "18"  # 6 runs × 3 steps
    assert everything["r (first order (measured Δz))"] == "1.000"
    assert everything["slope (first order (measured Δz))"] == "0.5"
    assert everything["r (Theorem 3.3)"] == "-1.000"
    assert everything["slope (Theorem 3.3)"] == "-1"

    quadrants = {row["group"]: row for row in tables["Entropy change by quadrant"]}
    # Σ DELTA = -0.005; clip_b mu=3 scales by 3 → -0.015, half in each positive-advantage bin.
    assert quadrants["clip_b (mu=3.0)"]["total actual ΔH"] == "-1.50e-02 ± 0.00e+00"
    assert quadrants["clip_b (mu=3.0)"]["A > 0, S_k > E_p[S]"] == "-7.50e-03 ± 0.00e+00"

    rates = {row["group"]: row for row in tables["Per-problem pass rates"]}
    # grpo pooled rates: 0, 1, 1, 0, 0, 1, 0.5, 0 → 4/8 all wrong, 1/8 mixed, 3/8 all right.
    assert rates["grpo"] == {
        "group": "grpo",
        "problems": "8",
        "all wrong (0)": "50.0%",
        "mixed": "12.5%",
        "all right (1)": "37.5%",
    }

    filters = {row["group"]: row for row in tables["Filter fractions"]}
    assert filters["clip_b (mu=3.0)"]["clip_b/frac_clipped"] == "0.030 ± 0.000"
    assert filters["grpo"]["clip_b/frac_clipped"] == "—"

    sweep = tables["Sweep over mu"]
    assert [(row["method"], row["mu"]) for row in sweep] == [("clip_b", "2.0"), ("clip_b", "3.0")]
    assert sweep[0]["pass@4"] == "1.000 ± 0.000"

    page = result.html.read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(result.figures)
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "figures/" not in page  # self-contained: no links to files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prediction"]["all runs"]["Theorem 3.3"]["slope"] == pytest.approx(-1.0)


def test_scores_fall_back_to_the_last_logged_evaluation(tmp_path) -> None:
    run = _write_run(tmp_path, "grpo-seed0", [], _rows(0, 1.0, None))  # no final_eval.json
    result = write_report([run], tmp_path / "report", ks=(1, 4))
    tables = _tables(result.markdown.read_text())
    final = tables["Final evaluation"][0]
    assert (final["Avg@4"], final["Pass@1"], final["Pass@4"]) == ("0.300", "0.300", "0.600")
    assert tables["Per-problem pass rates"][0]["all wrong (0)"] == "—"
    assert "No data: no run has per-problem counts yet." in result.markdown.read_text()
    assert "Sweep over mu" not in tables
    # eval --run's per-problem counts (eval.json) fill the histogram and its table
    record = {"split": "test", "k": 4, "per_problem_correct": [4, 0, 2, 1]}
    (run / "eval.json").write_text(json.dumps(record))
    result = write_report([run], tmp_path / "report2", ks=(1, 4))
    row = _tables(result.markdown.read_text())["Per-problem pass rates"][0]
    assert (row["problems"], row["all wrong (0)"], row["all right (1)"]) == ("4", "25.0%", "25.0%")
    assert "No data" not in result.markdown.read_text()


def test_report_input_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        write_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a run directory"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    run = _write_run(tmp_path, "grpo-seed0", [], _rows(0, 1.0, None))
    with pytest.raises(ValueError, match="ks"):
        write_report([run], tmp_path / "out", ks=(0,))


def test_settings_that_differ_only_between_methods_are_no_sweep() -> None:
    groups = [
        Group("grpo", "grpo", {"steps": 200}),
        Group("clip_b", "clip_b", {"steps": 20}),
    ]
    assert swept_keys(groups) == []
    groups.append(Group("clip_b (steps=40)", "clip_b", {"steps": 40}))
    assert swept_keys(groups) == ["steps"]
