"""``fclm-data leakage``: training images that also appear in evaluation splits, per source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def leakage(
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Training recipe (name or path).")],
    eval_recipe: Annotated[list[str], typer.Option("--eval-recipe", "-e", help="Evaluation recipe(s) (repeatable).")],
    data_root: Annotated[Path, typer.Option("--data-root", "-d", help="Root holding the releases.")] = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="Full report (every image) as JSON on stdout.")] = False,
    show: Annotated[int, typer.Option(help="Images listed per source in the table.")] = 5,
) -> None:
    """List training images (COCO ids, exact duplicates by content hash) that are in evaluation splits."""
    from fclm_data.commands.checks import existing_directory, fail
    from fclm_data.leakage import find_leaks
    from fclm_data.recipes import RecipeError, load_recipe

    existing_directory("--data-root", data_root)
    try:
        train = load_recipe(recipe)
        evals = [load_recipe(name) for name in eval_recipe]
    except RecipeError as exc:
        fail(str(exc))
    report = [entry.to_dict() for entry in find_leaks(train, evals, data_root.resolve())]
    if as_json:
        typer.echo(json.dumps({"recipe": train.name, "eval": [r.name for r in evals], "sources": report}, indent=1))
        return
    table = Table(
        title=f"{train.name} vs {', '.join(r.name for r in evals)}: training images found in evaluation splits"
    )
    for column in ("source", "units", "leaking units", "images", "by", "eval entries", "examples"):
        table.add_column(column, justify="right" if column in ("units", "leaking units", "images") else "left", no_wrap=column == "source")
    for row in report:
        table.add_row(
            row["entry"], f"{row['units']:,}", f"{row['leaking_units']:,}", f"{row['leaking_images']:,}",
            ", ".join(f"{k} {v}" for k, v in row["by_reason"].items()), ", ".join(row["eval_entries"]),
            ", ".join(row["images"][:show]) + (" ..." if len(row["images"]) > show else ""),
        )  # fmt: skip
    Console().print(table)
    typer.echo(
        "drop them with: fclm-data build --recipe ... " + " ".join(f"--exclude-eval {r.name}" for r in evals), err=True
    )
