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
    console = Console()
    if not console.is_terminal:  # piped: one plain line per source, names whole (they are what a user types)
        for line in source_lines(specs):
            typer.echo(line)
        return
    console.print(sources_table(specs))


def source_lines(specs: list) -> list[str]:
    """``name  task  description (Table 7: row)``, the first two columns padded to their longest value."""
    name_w = max(len(s.name) for s in specs)
    task_w = max(len(s.cls.task) for s in specs)
    return [f"{s.name:<{name_w}}  {s.cls.task:<{task_w}}  {s.description} (Table 7: {s.table7})" for s in specs]


def sources_table(specs: list) -> Table:
    """Name and task never wrap nor shrink (the name is what a recipe or ``--source`` needs); the text column wraps."""
    table = Table(title=f"{len(specs)} sources")
    table.add_column("name", no_wrap=True, min_width=max(len(s.name) for s in specs), style="bold")
    table.add_column("task", no_wrap=True, min_width=max(len(s.cls.task) for s in specs))
    table.add_column("description / Table 7 row", ratio=1)
    for s in specs:
        table.add_row(s.name, s.cls.task, f"{s.description}\n[dim]{s.table7}[/]")
    return table


def recipes(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False) -> None:
    """List the recipes found in recipes/: their entries (name, source, options) and counts."""
    from fclm_data.recipes import list_recipes, load_recipe

    loaded = [load_recipe(name) for name in list_recipes()]
    if as_json:
        rows = [{"name": r.name, "path": r.path, "seed": r.seed, "description": r.description,
                 "samples": recipe_total(r), "sources": {e.label: e.count for e in r.entries},
                 "entries": [{"name": e.label, "source": e.source, "count": e.count, "repeat": e.repeat,
                              "options": e.options} for e in r.entries]} for r in loaded]  # fmt: skip
        typer.echo(json.dumps(rows, indent=1))
        return
    console = Console()
    if not console.is_terminal:
        for r in loaded:
            typer.echo(f"{r.name}: {recipe_total_text(r)} samples -- {r.description}")
            for entry in r.entries:
                typer.echo(f"  {entry_text(entry)}")
        return
    console.print(recipes_table(loaded))


def recipe_total(recipe) -> int | None:
    """Samples the recipe asks for; None when some entry takes everything available (unknown until a build)."""
    counts = [e.count for e in recipe.entries]
    return None if any(c is None for c in counts) else sum(counts)


def recipe_total_text(recipe) -> str:
    counted = sum(e.count or 0 for e in recipe.entries)
    open_ended = sum(e.count is None for e in recipe.entries)
    if not open_ended:
        return f"{counted:,}"
    if open_ended == len(recipe.entries):
        return "all"
    return f"{counted:,} + all"


def entry_text(entry) -> str:
    """``label (source, split=val): count`` -- the source only when the label differs from it."""
    details = ([entry.source] if entry.label != entry.source else []) + [f"{k}={v}" for k, v in entry.options.items()]
    count = "all" if entry.count is None else f"{entry.count:,}"
    return f"{entry.label}{' (' + ', '.join(details) + ')' if details else ''}: {count}{' (repeat)' if entry.repeat else ''}"


def recipes_table(loaded: list) -> Table:
    """Name and total never wrap; each entry is one line under the description."""
    table = Table(title=f"{len(loaded)} recipes")
    table.add_column("name", no_wrap=True, min_width=max(len(r.name) for r in loaded), style="bold")
    table.add_column("samples", no_wrap=True, justify="right")
    table.add_column("description / entries", ratio=1)
    for r in loaded:
        lines = [f"[dim]{r.description}[/]"] if r.description else []
        table.add_row(r.name, recipe_total_text(r), "\n".join(lines + [entry_text(e) for e in r.entries]))
    return table


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
