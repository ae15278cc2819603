"""The terminal tables a new user reads first: ``sources`` never cuts a name, ``recipes`` lists entry names and
counts, ``inspect`` counts exactly the problems it lists."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from fclm_data.cli import app
from fclm_data.commands.catalog import recipes_table, sources_table
from fclm_data.recipes import list_recipes, load_recipe
from fclm_data.sources import list_sources

runner = CliRunner()


def _rendered(table, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_sources_piped_are_plain_lines_with_whole_names() -> None:
    result = runner.invoke(app, ["sources"])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    specs = list_sources()
    assert [line.split()[0] for line in lines] == [s.name for s in specs]
    assert [line.split()[1] for line in lines] == [s.cls.task for s in specs]
    assert "…" not in result.stdout and "osprey_detailed_description" in result.stdout


def test_sources_table_keeps_names_whole_at_80_columns() -> None:
    specs = list_sources()
    text = _rendered(sources_table(specs), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    first_cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert [c for c in first_cells if c] == [s.name for s in specs]  # one line each, never folded or cut


def test_recipes_list_entry_names_and_counts() -> None:
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    assert "eval_refcoco: all samples" in result.stdout
    assert "  refcoco_testA (refcoco, split=testA): all" in result.stdout
    assert "  reasonseg: 40,000 (repeat)" in result.stdout and "stage1: 688,390 samples" in result.stdout
    assert "refcoco all, refcoco all" not in result.stdout

    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["recipes", "--json"]).stdout)}
    refcoco = rows["eval_refcoco"]
    assert [e["name"] for e in refcoco["entries"]] == [e.label for e in load_recipe("eval_refcoco").entries]
    assert len(refcoco["sources"]) == 8 and refcoco["samples"] is None and rows["stage2"]["samples"] == 703_823

    text = _rendered(recipes_table([load_recipe(n) for n in list_recipes()]), 80)
    assert "refcoco_plus_testB" in text and "all" in text and "703,823" in text
    assert "…" not in text


def test_inspect_counts_every_problem_it_lists(stage2_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    shutil.copytree(stage2_build, out)
    shutil.copy(out / "shard-000000.tar", out / "shard-000007.tar")  # not in the manifest
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["bytes"] += 1  # a manifest-level mismatch
    manifest["shards"].append({**manifest["shards"][0], "name": "shard-000009.tar"})  # listed, missing
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 1
    listed = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    counted = re.search(r"problems\s*│?\s*(\d+)", result.stdout)
    assert len(listed) == 3 and counted and int(counted.group(1)) == len(listed), result.stdout
