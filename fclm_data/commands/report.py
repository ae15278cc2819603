"""``fclm-data report``: one static HTML page for a build directory (ledger, galleries, distributions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

stderr = Console(stderr=True, soft_wrap=True)


def report(
    out: Annotated[Path, typer.Argument(help="A build directory (holding manifest.json and the shards).")],
    html: Annotated[
        Optional[Path], typer.Option("--html", help="Where to write the page (default: OUT/report/index.html).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Gallery samples per entry and task.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the gallery draw.")] = 0,
    max_length: Annotated[
        Optional[int], typer.Option(help="Token budget to mark (default: the trainer's max_length, 4096).")
    ] = None,
    leakage: Annotated[Optional[Path], typer.Option(help="Include a saved `fclm-data leakage --json` report.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON on stdout.")] = False,
) -> None:
    """Write a self-contained HTML report of a build: ledger, rejects, sample galleries, distributions."""
    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from fclm_data.report import ReportError, write_report

    if samples < 0:
        raise typer.BadParameter("--samples must be >= 0")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=stderr, transient=True) as bar:
        task = bar.add_task(f"reading {out}")
        try:
            result = write_report(out, html, samples, seed, max_length, leakage,
                                  progress=lambda k: bar.update(task, description=f"read {k:,} samples"))  # fmt: skip
        except ReportError as exc:
            bar.stop()
            stderr.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from exc
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
    over = "" if result.over_max_length is None else f", {result.over_max_length:,} over {result.max_length:,} tokens"
    stderr.print(f"wrote {escape(str(result.path))} ({result.bytes / 1e6:.1f} MB): {result.samples:,} samples, "
                 f"{result.gallery_samples} in galleries{over}")  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1))
