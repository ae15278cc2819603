"""``fclm-data build``: a recipe (or single sources) -> shards, manifest, rejects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fclm_data.formats import FORMATS
from fclm_data.images import IMAGE_CHECKS
from fclm_data.schema import VISUAL_PROMPTS

stderr = Console(stderr=True, soft_wrap=True)


def build(
    recipe: Annotated[
        Optional[str], typer.Option("--recipe", "-r", help="Recipe name (recipes/NAME.yaml) or path.")
    ] = None,
    source: Annotated[
        Optional[list[str]],
        typer.Option(
            "--source", "-s", help="Build single sources with their defaults instead of a recipe (repeatable)."
        ),
    ] = None,
    data_root: Annotated[
        Path, typer.Option("--data-root", "-d", help="Root holding the releases in their official layouts.")
    ] = Path("data"),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory for shard-NNNNNN.tar and the ledger.")
    ] = Path("shards"),
    limit: Annotated[Optional[int], typer.Option(help="At most N samples per source (quick tries).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Build seed (default: the recipe's).")] = None,
    shard_size: Annotated[
        Optional[int],
        typer.Option(
            help="Samples per shard, exactly (default: the recipe's 1000, shrunk to give >= 8 x ranks x loader workers shards)."
        ),
    ] = None,
    ranks: Annotated[
        int, typer.Option(help="GPUs the shards are for (sizes shards: >= 8 x ranks x loader workers).")
    ] = 8,
    loader_workers: Annotated[int, typer.Option(help="Data-loader workers per GPU (for shard sizing).")] = 4,
    visual_prompt: Annotated[
        str, typer.Option(help=f"How <region> inputs are presented: {'|'.join(VISUAL_PROMPTS)}.")
    ] = "mask",
    sample_format: Annotated[
        Optional[str],
        typer.Option("--format", help="Sample format: fclm (default) | refvlm (REF-VLM TRP + VD-CoT) | mvplm (MVP-LM perception); default: the recipe's format:."),
    ] = None,
    image_check: Annotated[
        str,
        typer.Option(
            help="decode: decode every JPEG at 1/8 scale (catches truncation and most corruption) | markers: check the stream structure only (faster; catches truncation)."
        ),
    ] = "decode",
    executor: Annotated[str, typer.Option(help="auto|serial|processes|ray")] = "auto",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Parallel workers (processes or Ray CPUs).")] = 1,
    ray_address: Annotated[
        Optional[str], typer.Option(help="Join an existing Ray cluster (e.g. auto, ray://host:10001).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace shards of a different plan in --out.")] = False,
    exclude_eval: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude-eval",
            help="Drop training images that appear in this evaluation recipe (repeatable; counted in the ledger).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan per source (available, taken, repeats, missing) and stop.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest (or plan) as JSON on stdout.")] = False,
) -> None:
    """Convert the releases under --data-root into WebDataset shards."""
    from fclm_data.build.run import BuildConfig, BuildError, plan_build, run_build
    from fclm_data.recipes import RecipeError, load_recipe, single_source_recipe
    from fclm_data.sources import BuildOptions

    if bool(recipe) == bool(source):
        raise typer.BadParameter("give exactly one of --recipe or --source")
    if visual_prompt not in VISUAL_PROMPTS:
        raise typer.BadParameter(f"--visual-prompt must be one of {VISUAL_PROMPTS}")
    if sample_format is not None and sample_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {FORMATS}")
    if image_check not in IMAGE_CHECKS:
        raise typer.BadParameter(f"--image-check must be one of {IMAGE_CHECKS}")
    try:
        plan_recipe = load_recipe(recipe) if recipe else single_source_recipe(list(source or []), 0, 1000)
        excluded = tuple(load_recipe(name) for name in exclude_eval or [])
    except (RecipeError, KeyError) as exc:
        stderr.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if seed is not None:
        plan_recipe.seed = seed
    if shard_size is not None:
        plan_recipe.shard_size = shard_size
    if sample_format is not None:
        plan_recipe.format = sample_format
    config = BuildConfig(
        data_root=data_root, out_dir=out, limit=limit, executor=executor, workers=workers,
        ray_address=ray_address, overwrite=overwrite, options=BuildOptions(seed=plan_recipe.seed, visual_prompt=visual_prompt, image_check=image_check),
        min_shards=None if shard_size is not None else 8 * ranks * loader_workers, exclude_eval=excluded,
    )  # fmt: skip
    try:
        if dry_run:
            _dry_run(plan_build(plan_recipe, config), as_json)
            return
        manifest = _run_with_progress(plan_recipe, config, run_build)
    except BuildError as exc:
        stderr.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(manifest, indent=1))


def _run_with_progress(plan_recipe, config, run_build):
    from fclm_data.commands.progress import RichBuildProgress, summary_table

    progress = RichBuildProgress(stderr)
    try:
        manifest = run_build(plan_recipe, config, progress)
    finally:
        progress.close()
    stderr.print(summary_table(manifest))
    for warning in manifest["warnings"] + [w for ledger in manifest["sources"].values() for w in ledger["warnings"]]:
        stderr.print(f"[yellow]warning:[/] {warning}")
    stderr.print(f"wrote {config.out_dir}/ (manifest.json, rejects.jsonl, manifest.parquet, shardindex.json)")
    return manifest


def _dry_run(plan, as_json: bool) -> None:
    from rich.table import Table

    rows = [
        {
            "source": sp.name, "requested": sp.requested, "records": sp.records, "available": sp.available,
            "taken": sp.selected, "repeats": sp.repeats, "index_rejected": len(sp.index_rejects),
            "missing": sp.missing, "warnings": sp.warnings,
        }
        for sp in plan.sources
    ]  # fmt: skip
    summary = {"recipe": plan.recipe.name, "seed": plan.recipe.seed, "samples": len(plan.samples),
               "shards": len(plan.shards()), "shard_size": plan.shard_size, "plan_fingerprint": plan.fingerprint(),
               "warnings": plan.warnings, "sources": rows}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    table = Table(title=f"plan {plan.recipe.name}: {len(plan.samples):,} samples in {len(plan.shards())} shard(s)")
    for column in ("source", "requested", "available", "taken", "repeats", "rejected", "missing on disk"):
        table.add_column(column, justify="left" if column in ("source", "missing on disk") else "right")
    for r in rows:
        requested = "all" if r["requested"] is None else f"{r['requested']:,}"
        table.add_row(r["source"], requested, f"{r['available']:,}", f"{r['taken']:,}", str(r["repeats"]),
                      f"{r['index_rejected']:,}", ", ".join(r["missing"]))  # fmt: skip
    Console().print(table)
