"""``bench/index_scale.py``: grown files are valid releases of the asked size, and the probe measures a real index."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fclm_data.sources import get_source

BENCH = Path(__file__).resolve().parents[2] / "bench" / "index_scale.py"


def _bench():
    spec = importlib.util.spec_from_file_location("index_scale", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_grown_release_and_probe(data_root: Path, tmp_path: Path) -> None:
    bench = _bench()
    rel = bench.SIZES["osprey_short_form"][0]
    size = bench.write_release_size(data_root, tmp_path, rel, 0.05)  # 50 kB
    records = json.loads((tmp_path / rel).read_text())
    small = json.loads((data_root / rel).read_text())
    assert size >= 50_000 and records == bench.grow(small, len(records) // len(small))  # written copy by copy
    assert len({r["id"] for r in records}) == len(records)  # every copy has fresh ids
    (tmp_path / "coco").mkdir()
    result = bench.probe(str(BENCH.parents[1]), "osprey_short_form", tmp_path)
    assert result["units"] == len(get_source("osprey_short_form", tmp_path).index().units) > 0
    assert result["peak_mib"] >= result["base_mib"] > 0 and result["seconds"] > 0
    reader = bench.probe(str(BENCH.parents[1]), "osprey_short_form", tmp_path, rel, reader_only=True)
    assert reader["units"] == len(records)
