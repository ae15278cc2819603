"""``fclm-data build``: a recipe (or single sources) -> shards, manifest, rejects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fclm_data.commands.checks import existing_directory, fail, one_of, output_directory, positive
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
            help="decode: strict libjpeg-turbo decode at 1/8 scale, once per distinct image (catches truncation and corrupt data) | markers: check the stream structure only (faster; catches truncation)."
        ),
    ] = "decode",
    executor: Annotated[str, typer.Option(help="auto|serial|processes|ray")] = "auto",
    workers: Annotated[int, typer.Option("--workers", "-w", help="Parallel workers (processes or Ray CPUs).")] = 1,
    ray_address: Annotated[
        Optional[str], typer.Option(help="Join an existing Ray cluster (e.g. auto, ray://host:10001).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace shards of a different plan in --out.")] = False,
    retry_rejects: Annotated[
        bool, typer.Option(help="Rebuild finished shards that hold rejected records (after repairing inputs).")
    ] = False,
    allow_empty: Annotated[bool, typer.Option(help="Exit 0 even when a recipe entry writes no sample.")] = False,
    max_reject_fraction: Annotated[
        Optional[float],
        typer.Option(help="Exit 3 when an entry rejects more than this fraction of its records (0-1)."),
    ] = None,
    link_root: Annotated[
        Optional[list[str]],
        typer.Option("--link-root", help="A directory symlinks inside the data root may point into (repeatable)."),
    ] = None,
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
    """Convert the releases under --data-root into WebDataset shards.

    Exit status: 0 built; 2 the build could not start (bad recipe, another build holds --out, foreign
    plan); 3 built, but a recipe entry wrote no sample (--allow-empty) or rejected more than
    --max-reject-fraction of its records.
    """
    from fclm_data.build.executors import EXECUTORS
    from fclm_data.build.run import BuildConfig, BuildError, plan_build, run_build
    from fclm_data.recipes import RecipeError, load_recipe, single_source_recipe
    from fclm_data.sources import BuildOptions

    if bool(recipe) == bool(source):
        fail("give exactly one of --recipe or --source")
    one_of("--visual-prompt", visual_prompt, VISUAL_PROMPTS)
    if sample_format is not None:
        one_of("--format", sample_format, FORMATS)
    one_of("--image-check", image_check, IMAGE_CHECKS)
    one_of("--executor", executor, EXECUTORS)
    for option, value in (("--shard-size", shard_size), ("--limit", limit), ("--workers", workers),
                          ("--ranks", ranks), ("--loader-workers", loader_workers)):  # fmt: skip
        positive(option, value)
    existing_directory("--data-root", data_root)
    output_directory("--out", out)
    try:
        plan_recipe = load_recipe(recipe) if recipe else single_source_recipe(list(source or []), 0, 1000)
        excluded = tuple(load_recipe(name) for name in exclude_eval or [])
    except RecipeError as exc:
        fail(str(exc))
    except KeyError as exc:  # an unknown source name
        fail(str(exc.args[0]) if exc.args else str(exc))
    if seed is not None:
        plan_recipe.seed = seed
    if shard_size is not None:
        plan_recipe.shard_size = shard_size
    if plan_recipe.shard_size < 1:
        fail(f"recipe {plan_recipe.name}: shard_size must be a positive number, got {plan_recipe.shard_size}")
    if sample_format is not None:
        plan_recipe.format = sample_format
    config = BuildConfig(
        data_root=data_root, out_dir=out, limit=limit, executor=executor, workers=workers,
        ray_address=ray_address, overwrite=overwrite, options=BuildOptions(seed=plan_recipe.seed, visual_prompt=visual_prompt, image_check=image_check),
        min_shards=None if shard_size is not None else 8 * ranks * loader_workers, exclude_eval=excluded,
        retry_rejects=retry_rejects, link_roots=tuple(link_root or ()),
    )  # fmt: skip
    try:
        if dry_run:
            _dry_run(plan_build(plan_recipe, config), config.options, as_json)
            return
        manifest = _run_with_progress(plan_recipe, config, run_build)
    except BuildError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(manifest, indent=1))
    failures = quality_failures(manifest, allow_empty, max_reject_fraction)
    for failure in failures:
        stderr.print(f"[red]error:[/] {failure}")
    if failures:
        raise typer.Exit(3)


def quality_failures(manifest: dict, allow_empty: bool, max_reject_fraction: float | None) -> list[str]:
    """Entries that wrote nothing (unless allowed) or rejected too much: the build exits non-zero."""
    failures = []
    for name, s in manifest["sources"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["reject_reasons"].items(), key=lambda kv: -kv[1])[:3])
        why = (
            f" ({reasons}; see rejects.jsonl)"
            if reasons
            else (f" (missing: {', '.join(s['missing'])})" if s["missing"] else "")
        )
        if s["written"] == 0 and not allow_empty:
            failures.append(f"{name} wrote 0 samples of {s['records']:,} records{why}; --allow-empty accepts this")
            continue
        lost = s["rejected"] + s["index_rejected"]
        if max_reject_fraction is not None and s["records"] and lost / s["records"] > max_reject_fraction:
            failures.append(
                f"{name} rejected {lost:,} of {s['records']:,} records ({lost / s['records']:.1%} > "
                f"--max-reject-fraction {max_reject_fraction:g}){why}"
            )
    return failures


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


def _dry_run(plan, options, as_json: bool) -> None:
    from rich.table import Table

    from fclm_data.build.run import build_fingerprint

    rows = [
        {
            "source": sp.name, "requested": sp.requested, "records": sp.records, "available": sp.available,
            "taken": sp.selected, "repeats": sp.repeats, "index_rejected": len(sp.index_rejects),
            "missing": sp.missing, "warnings": sp.warnings,
        }
        for sp in plan.sources
    ]  # fmt: skip
    summary = {"recipe": plan.recipe.name, "seed": plan.recipe.seed, "samples": len(plan.samples),
               "shards": len(plan.shards()), "shard_size": plan.shard_size, "plan_fingerprint": build_fingerprint(plan, options),
               "warnings": plan.warnings, "sources": rows}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    table = Table(title=f"plan {plan.recipe.name}: {len(plan.samples):,} samples in {len(plan.shards())} shard(s)")
    for column in ("source", "requested", "available", "taken", "repeats", "rejected", "missing on disk"):
        table.add_column(column, justify="left" if column in ("source", "missing on disk") else "right", no_wrap=column == "source")
    for r in rows:
        requested = "all" if r["requested"] is None else f"{r['requested']:,}"
        table.add_row(r["source"], requested, f"{r['available']:,}", f"{r['taken']:,}", str(r["repeats"]),
                      f"{r['index_rejected']:,}", ", ".join(r["missing"]))  # fmt: skip
    Console().print(table)
