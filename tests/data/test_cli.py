"""The fclm-data command line: exit codes, stdout JSON, stderr progress, overlays."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from typer.testing import CliRunner

from fclm_data.cli import app

runner = CliRunner()


def test_build_inspect_render(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["build", "--recipe", "stage2", "--data-root", str(data_root), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["totals"]["written"] == 49 and (out / "shard-000000.tar").exists()
    assert "samples" in result.stderr  # progress and the summary table go to stderr

    shard = str(out / "shard-000000.tar")
    result = runner.invoke(app, ["inspect", shard, "--json", "-n", "3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 3 and all(line["task"] == "dlc_dlres" for line in lines)

    result = runner.invoke(app, ["inspect", str(out), "--strict", "--render", str(tmp_path / "png"), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "49 samples" in result.stdout
    assert len(list((tmp_path / "png").glob("*.png"))) == 2


def test_inspect_reports_a_damaged_shard(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["build", "-s", "dam_sam", "-d", str(data_root), "-o", str(out)]).exit_code == 0
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(out / "shard-000000.tar") as src, tarfile.open(damaged, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()
            if member.name.endswith(".json"):
                sample = json.loads(data)
                sample["seg_targets"] = [5]
                data = json.dumps(sample).encode()
                member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    result = runner.invoke(app, ["inspect", str(damaged)])
    assert result.exit_code == 1
    assert "seg_targets has 1 entries for 0 placeholders" in result.stderr


def test_dry_run_prints_the_plan(data_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["build", "-r", "stage2", "-d", str(data_root), "-o", str(tmp_path / "x"), "--dry-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    sam = next(s for s in plan["sources"] if s["source"] == "dam_sam")
    assert (sam["requested"], sam["available"], sam["taken"]) == (592822, 16, 16)
    assert not (tmp_path / "x").exists()


def test_dry_run_names_what_is_missing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "-r", "stage2", "-d", str(tmp_path), "--dry-run", "--json"])
    plan = json.loads(result.stdout)
    assert plan["sources"][0]["missing"] == ["describe-anything-dataset/COCOStuff/images"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["build", "-r", "stage2", "-s", "dam_sam"]).exit_code == 2
    missing = runner.invoke(app, ["build", "-r", "stage2", "-d", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "--data-root" in missing.stderr and "does not exist" in missing.stderr
    assert runner.invoke(app, ["build", "-r", "no-such-recipe", "-d", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["inspect", str(tmp_path / "none.tar")]).exit_code == 2


def test_sources_and_recipes_listing() -> None:
    result = runner.invoke(app, ["sources", "--json"])
    names = {s["name"] for s in json.loads(result.stdout)}
    assert {
        "refcoco",
        "refcoco_plus",
        "refcocog",
        "dam_cocostuff",
        "dam_mapillary",
        "dam_openimages",
        "dam_sam",
    } <= names
    result = runner.invoke(app, ["recipes", "--json"])
    assert "stage2" in {r["name"] for r in json.loads(result.stdout)}


def test_demo_data(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo-data", str(tmp_path / "root")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "root/refer_seg/refcoco/refs(unc).p").exists()


def test_stage1_dry_run_plan(data_root: Path) -> None:
    """Every Table-7 stage-1 source is found on the generated root; ReasonSeg is repeated to its count."""
    from fclm_data.recipes import load_recipe
    from fclm_data.sources import get_source

    result = runner.invoke(app, ["build", "-r", "stage1", "-d", str(data_root), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    recipe = {e.label: e for e in load_recipe("stage1").entries}
    assert sum(e.count for e in recipe.values()) == 688_390  # the rows; see recipes/stage1.yaml
    for row in plan["sources"]:
        entry = recipe[row["source"]]
        available = len(get_source(entry.source, data_root, **entry.options).index().units)
        assert row["available"] == available > 0 and row["missing"] == []
        if entry.repeat:
            assert row["taken"] == entry.count and row["repeats"] == -(-entry.count // available)
        else:
            assert row["taken"] == min(entry.count, available) and row["repeats"] == 1
    assert plan["samples"] == sum(r["taken"] for r in plan["sources"])
