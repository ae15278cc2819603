"""``bench/consistency_cost.py`` runs on CPU (tiny preset) and reports every setting of both stages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "consistency_cost.py"


def test_cost_bench_reports_both_stages(capsys):
    spec = importlib.util.spec_from_file_location("consistency_cost", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--config", "tiny", "--repeats", "1", "--warmup", "0"])
    assert report["rows"] == 4 and set(report["stages"]) == {1, 2}
    for stage in (1, 2):
        cells = report["stages"][stage]
        assert set(cells) == set(bench.SETTINGS) and cells["none"]["ratio"] == 1.0
        assert all(c["median_s"] > 0 for c in cells.values())
        assert all(c["skipped"] == [] for c in cells.values())  # nothing constant is left in any setting
    out = capsys.readouterr().out
    assert "| 2 |" in out and "both (default)" in out
