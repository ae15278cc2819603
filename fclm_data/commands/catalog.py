"""``fclm-data sources`` / ``recipes`` / ``demo-data``: what is registered, and a demo data root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def sources(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False) -> None:
    """List the registered sources (registry name, task, Table-7 row, options)."""
    from fclm_data.sources import list_sources

    specs = list_sources()
    if as_json:
        rows = [{"name": s.name, "task": s.cls.task, "table7": s.table7, "description": s.description,
                 "options": s.options()} for s in specs]  # fmt: skip
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    table = Table(title=f"{len(specs)} sources")
    for column in ("name", "task", "Table 7", "description"):
        table.add_column(column)
    for s in specs:
        table.add_row(s.name, s.cls.task, s.table7, s.description)
    Console().print(table)


def recipes(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False) -> None:
    """List the recipes found in recipes/ with their sources and counts."""
    from fclm_data.recipes import list_recipes, load_recipe

    loaded = [load_recipe(name) for name in list_recipes()]
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "path": r.path, "seed": r.seed, "description": r.description,
                                "sources": {e.source: e.count for e in r.entries}} for r in loaded], indent=1))  # fmt: skip
        return
    table = Table(title=f"{len(loaded)} recipes")
    for column in ("name", "samples", "sources", "description"):
        table.add_column(column)
    for r in loaded:
        total = sum(e.count or 0 for e in r.entries)
        table.add_row(
            r.name, f"{total:,}", ", ".join(f"{e.source} {e.count or 'all'}" for e in r.entries), r.description
        )
    Console().print(table)


def demo_data(
    root: Annotated[Path, typer.Argument(help="Where to write the synthetic data root.")],
    scale: Annotated[int, typer.Option(help="Multiply every family's record count.")] = 1,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Generate a small data root in the official release layouts (no download)."""
    from fclm_data.commands.checks import output_directory, positive
    from fclm_data.synthetic import generate_data_root, generator_names

    output_directory("ROOT", root)
    positive("--scale", scale)
    generate_data_root(root, seed=seed, scale=scale)
    files = sum(1 for p in root.rglob("*") if p.is_file())
    Console(stderr=True).print(f"wrote {files} files for {', '.join(generator_names())} under {root}")
