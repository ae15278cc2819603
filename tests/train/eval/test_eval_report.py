"""Reports keep fractions and x100 side by side, counts apart, and print one row per entry."""

from __future__ import annotations

import json

import pytest

from fclm_train.eval.report import format_table, make_report, write_report


def _report():
    return make_report(
        {
            "refcoco/val": {"ciou": 0.8125, "giou": 0.79, "n": 8},
            "grandf/val": {
                "ap50": 0.3,
                "meteor": None,
                "cider": None,
                "n_images": 2,
                "skipped": "meteor, cider: no Java",
            },
        },
        meta={"checkpoint": "ckpt-1"},
    )


def test_report_splits_metrics_counts_and_notes():
    report = _report()
    refcoco = report["results"]["refcoco/val"]
    assert refcoco["metrics"] == {"ciou": 0.8125, "giou": 0.79}
    assert refcoco["x100"] == {"ciou": pytest.approx(81.25), "giou": pytest.approx(79.0)}
    assert refcoco["counts"] == {"n": 8}
    grandf = report["results"]["grandf/val"]
    assert grandf["x100"]["meteor"] is None and grandf["notes"] == {"skipped": "meteor, cider: no Java"}
    assert report["meta"] == {"checkpoint": "ckpt-1"}
    with pytest.raises(TypeError):
        make_report({"x": {"flag": True}})


def test_table_prints_x100_with_blank_and_na_cells():
    lines = format_table(_report()).splitlines()
    assert lines[0].split() == ["entry", "ciou", "giou", "ap50", "meteor", "cider", "n", "n_images"]
    assert lines[2].split() == ["refcoco/val", "81.2", "79.0", "8"]  # 81.25 rounds half to even
    assert lines[3].split() == ["grandf/val", "30.0", "n/a", "n/a", "2"]
    assert lines[4] == "grandf/val: skipped: meteor, cider: no Java"


def test_written_report_round_trips_and_refuses_nan(tmp_path):
    path = write_report(_report(), tmp_path / "out" / "report.json")
    assert json.loads(path.read_text()) == _report()
    with pytest.raises(ValueError):
        write_report(make_report({"x": {"ciou": float("nan")}}), tmp_path / "nan.json")
