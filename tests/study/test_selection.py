"""Selection on the validation split (``study/selection.py``): a sweep whose validation and test
numbers disagree picks the validation-best value; the test split is refused; runs without a
validation record are named with the fix."""

from __future__ import annotations

import json

import pytest

from entropy_dynamics.study.report import write_report
from entropy_dynamics.study.runs import group_runs, load_runs
from entropy_dynamics.study.selection import (
    check_select_split,
    parse_select_metric,
    select,
)
from report_helpers import write_sweep_run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for mu in (1.0, 2.0):
        for seed in range(3):
            write_sweep_run(root, mu, seed)
    return root


def test_selection_uses_validation_not_test(sweep) -> None:
    groups = group_runs(load_runs([sweep]))
    (choice,) = select(groups, "Pass@1")
    assert choice.method == "clip_b" and choice.split == "validation"
    assert choice.chosen.settings == {"algorithm.loss.filter_options.mu": 2.0}
    means = {c.settings["algorithm.loss.filter_options.mu"]: c.mean for c in choice.candidates}
    assert means == pytest.approx({1.0: 0.25, 2.0: 0.75})  # the validation numbers
    assert choice.chosen.n == 3
    assert choice.sentence == (
        "clip_b: mu = 2.0 chosen on validation by mean pass@1 over 3 seeds; "
        "test numbers are not used to choose"
    )
    # Pass@4 = share of problems with a correct sample: 1 for both; a tie keeps the first value.
    (tie,) = select(groups, "pass@4")
    assert tie.chosen.settings["algorithm.loss.filter_options.mu"] == 1.0
    # Entropy: validation .1 + shift (mu 1) vs .5 + shift (mu 2); test says the opposite.
    (by_entropy,) = select(groups, "entropy")
    assert by_entropy.chosen.settings["algorithm.loss.filter_options.mu"] == 2.0
    assert by_entropy.chosen.mean == pytest.approx(0.51)


def test_report_records_the_selection(sweep, tmp_path) -> None:
    result = write_report([sweep], tmp_path / "report", ks=(1, 4), select_metric="pass@1")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    selection = summary["selection"]
    assert (selection["metric"], selection["split"]) == ("pass@1", "validation")
    (method,) = selection["methods"]
    assert method["chosen"] == {"algorithm.loss.filter_options.mu": 2.0}
    assert [(v["mean"], v["n"]) for v in method["values"]] == [(0.25, 3), (0.75, 3)]
    text = result.markdown.read_text()
    assert "## Selection on the validation split" in text
    assert "clip_b: mu = 2.0 chosen on validation by mean pass@1 over 3 seeds" in text


def test_the_test_split_and_bad_metrics_are_refused(sweep) -> None:
    groups = group_runs(load_runs([sweep]))
    with pytest.raises(ValueError, match="--select-split validation"):
        select(groups, "pass@1", split="test")
    with pytest.raises(ValueError, match="--select-split validation"):
        check_select_split("test")
    with pytest.raises(ValueError, match="--select-split: expected validation"):
        check_select_split("train")
    assert parse_select_metric("Pass@8") == "pass@8"
    assert parse_select_metric(" entropy ") == "entropy"
    for bad in ("pass@0", "pass@", "accuracy"):
        with pytest.raises(ValueError, match="--select: expected pass@K"):
            parse_select_metric(bad)
    with pytest.raises(ValueError, match="drew only 4 samples per problem"):
        select(groups, "pass@8")


def test_runs_without_a_validation_record_cannot_be_selected_on(tmp_path) -> None:
    root = tmp_path / "old"
    for mu in (1.0, 2.0):
        write_sweep_run(root, mu, 0, validation=mu == 1.0)
    groups = group_runs(load_runs([root]))
    with pytest.raises(ValueError) as error:
        select(groups, "pass@1")
    message = str(error.value)
    assert "clip_b-mu=2.0-seed0" in message and "no validation record" in message
    assert "--evaluate-missing" in message


def test_no_sweep_nothing_to_select(tmp_path) -> None:
    root = tmp_path / "one"
    write_sweep_run(root, 1.0, 0)
    with pytest.raises(ValueError, match="no method was run at several values"):
        select(group_runs(load_runs([root])), "pass@1")
