"""Same shards whatever the executor or worker count; a killed build resumes to identical bytes."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import build

from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.synthetic import generate_data_root

LEDGER = ("manifest.json", "rejects.jsonl", "manifest.parquet", "shardindex.json", "README.md")


def _recipe() -> Recipe:
    return Recipe(
        "exec", [RecipeEntry("refcoco"), RecipeEntry("refcocog"), RecipeEntry("dam_sam")], seed=11, shard_size=5
    )


def _assert_identical(a: Path, b: Path) -> None:
    shards = sorted(p.name for p in a.glob("shard-*.tar"))
    assert len(shards) >= 4 and shards == sorted(p.name for p in b.glob("shard-*.tar"))
    for name in shards + list(LEDGER):
        assert filecmp.cmp(a / name, b / name, shallow=False), name


@pytest.fixture(scope="module")
def serial_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial")
    build(_recipe(), data_root, out, executor="serial")
    return out


def test_processes_match_serial(data_root: Path, serial_build: Path, tmp_path: Path) -> None:
    build(_recipe(), data_root, tmp_path, executor="processes", workers=2)
    _assert_identical(serial_build, tmp_path)


@pytest.mark.ray
def test_ray_matches_serial(data_root: Path, serial_build: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    build(_recipe(), data_root, tmp_path, executor="ray", workers=2)
    _assert_identical(serial_build, tmp_path)


def test_wids_reads_the_shard_index(serial_build: Path) -> None:
    wids = pytest.importorskip("wids")
    import json

    dataset = wids.ShardListDataset(str(serial_build / "shardindex.json"))
    manifest = json.loads((serial_build / "manifest.json").read_text())
    assert len(dataset) == manifest["totals"]["written"]
    sample = dataset[len(dataset) - 1]
    assert sample[".json"]["key"] == sample["__key__"] and sample[".jpg"] is not None


def _cli(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fclm_data.cli", "build", "--source", "refcoco", "--source", "refcocog",
            "--source", "dam_sam", "--data-root", str(root), "--out", str(out), "--shard-size", "1",
            "--seed", "2", "--executor", "processes", "--workers", "2"]  # fmt: skip


def test_kill_9_then_rerun_gives_the_uninterrupted_bytes(tmp_path: Path) -> None:
    root = generate_data_root(tmp_path / "root", families=["refcoco", "dam"], scale=3)
    reference = tmp_path / "reference"
    subprocess.run(_cli(root, reference), check=True, capture_output=True)
    total = len(list(reference.glob("shard-*.tar")))
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(root, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(list((out / ".parts").glob("*.json")) if (out / ".parts").exists() else []) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "build ended before it could be killed"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-build
    proc.wait()
    finished = len(list((out / ".parts").glob("*.json")))
    assert proc.returncode == -signal.SIGKILL and finished < total and not (out / "manifest.json").exists()
    subprocess.run(_cli(root, out), check=True, capture_output=True)
    assert not list(out.glob("*.tmp"))
    _assert_identical(reference, out)
