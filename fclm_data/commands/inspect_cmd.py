"""``fclm-data inspect``: summary, problems, decoded samples and PNG overlays of shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fclm_data.commands.checks import fail, output_directory

stderr = Console(stderr=True)


def positive_or_zero(option: str, value: int) -> None:
    if value < 0:
        fail(f"{option} must be 0 (all) or a positive number, got {value}")


def inspect(
    path: Annotated[Path, typer.Argument(help="A shard .tar, or a build directory (checked against its manifest).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print decoded samples as JSON lines on stdout.")] = False,
    render: Annotated[
        Optional[Path],
        typer.Option(
            help="Write PNG overlays here: <region> inputs as their visual prompt (as the trainer draws it), [SEG] masks and boxes, the conversation beside."
        ),
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Samples to print/render (0 = all).")] = 8,
    strict: Annotated[
        bool, typer.Option(help="Decode every image and mask; check sha256 and parquet offsets.")
    ] = False,
) -> None:
    """Summarise shards and report every problem found (exit 1 if any)."""
    from fclm_data.inspect import inspect_output, inspect_shard, iter_tar_samples

    if not path.exists():
        fail(f"{path} does not exist")
    if path.is_dir() and not (path / "manifest.json").exists() and not any(path.glob("*.tar")):
        fail(f"{path} holds no shards (*.tar) and no manifest.json")
    positive_or_zero("-n", n)
    if render is not None:
        output_directory("--render", render)
    if path.is_dir():
        reports, problems = inspect_output(path, strict)
        shards = [Path(r.path) for r in reports]
    else:
        report, _ = inspect_shard(path, strict)
        reports, problems, shards = [report], [], [path]
    problems = problems + [p for r in reports for p in r.problems]
    if as_json or render:
        _emit_samples(shards, as_json, render, n, iter_tar_samples)
    if not as_json:
        Console().print(_summary(reports, len(problems)))
    for problem in problems[:50]:  # plain lines: one problem per line, greppable, never wrapped
        typer.echo(f"problem: {problem}", err=True)
    if len(problems) > 50:
        typer.echo(f"... and {len(problems) - 50} more problems", err=True)
    if problems:
        raise typer.Exit(1)


def _emit_samples(shards: list[Path], as_json: bool, render: Optional[Path], n: int, iter_tar_samples) -> None:
    from fclm_data.render import render_to

    emitted = 0
    for shard in shards:
        for key, members in iter_tar_samples(shard):
            if n and emitted >= n:
                return
            sample = json.loads(members["json"])
            if as_json:
                typer.echo(json.dumps(sample, ensure_ascii=False))
            if render:
                image = next(members[e] for e in ("jpg", "png") if e in members)
                render_to(render, image, sample)
            emitted += 1


def _summary(reports, problems: int) -> Table:
    """Totals as label/value rows (fits a terminal), then one short row per shard.

    ``problems`` counts every problem listed below the table: the shards' own and the build directory's
    (manifest, parquet), so the two always agree.
    """
    from collections import Counter

    tasks, sources = Counter(), Counter()
    for r in reports:
        tasks.update(r.tasks)
        sources.update(r.sources)
    sizes = [s for r in reports for s in (r.min_size, r.max_size) if s]
    total = sum(r.samples for r in reports)
    table = Table(title=f"{len(reports)} shard(s), {total:,} samples", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = {
        "bytes": f"{sum(r.bytes for r in reports) / 1e6:,.1f} MB",
        "regions": f"{sum(r.regions for r in reports):,}",
        "<region> inputs": f"{sum(r.region_inputs for r in reports):,}",
        "[SEG] targets": f"{sum(r.seg_targets for r in reports):,}",
        "paired samples": f"{sum(r.paired for r in reports):,}",
        "image sizes": (
            f"{min(sizes, key=lambda s: s[0] * s[1])} .. {max(sizes, key=lambda s: s[0] * s[1])}" if sizes else "-"
        ),
        "tasks": ", ".join(f"{k} {v:,}" for k, v in sorted(tasks.items())),
        "sources": ", ".join(f"{k} {v:,}" for k, v in sorted(sources.items())),
        "problems": f"{problems:,}",
    }
    for label, value in rows.items():
        table.add_row(label, value)
    if len(reports) > 1:
        for r in reports:
            table.add_row(
                Path(r.path).name, f"{r.samples:,} samples, {r.bytes / 1e6:.1f} MB, {len(r.problems)} problems"
            )
    return table
