"""Build driver: plan -> shard tasks -> executor -> ledger files.

Resumable: a shard is finished when its tar and its ledger part (``.parts/<shard>.json``, written
after the tar's atomic rename) both exist for the same plan fingerprint. Re-running the same
command after a crash builds only the missing shards and rewrites the ledger files, which are
deterministic, so the result is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fclm_data.build.executors import Executor, make_executor
from fclm_data.build.plan import Plan, make_plan
from fclm_data.build.shard import PARTS_DIR, ShardResult, ShardTask, build_shard, part_path
from fclm_data.manifest import MANIFEST, write_outputs
from fclm_data.recipes import Recipe
from fclm_data.sources import BuildOptions


class BuildError(RuntimeError):
    """The build cannot start (e.g. the output holds another plan's shards)."""


@dataclass
class BuildConfig:
    data_root: Path
    out_dir: Path
    limit: int | None = None  #: cap per source (quick tries)
    executor: str = "auto"
    workers: int = 1
    ray_address: str | None = None
    overwrite: bool = False
    options: BuildOptions = BuildOptions()
    #: plan at least this many shards (8 x ranks x loader workers); None keeps the recipe's size
    min_shards: int | None = None
    #: evaluation recipes whose images are dropped from the build (--exclude-eval)
    exclude_eval: tuple[Recipe, ...] = ()


class BuildProgress(Protocol):
    def indexing(self, source: str) -> None: ...
    def planned(self, plan: Plan, done: list[ShardResult]) -> None: ...
    def shard_done(self, result: ShardResult) -> None: ...


def plan_build(
    recipe: Recipe, config: BuildConfig, progress: BuildProgress | None = None, executor: Executor | None = None
) -> Plan:
    """Index (in parallel on ``executor`` when given) and select; builds nothing."""
    if not config.data_root.is_dir():
        raise BuildError(f"data root {config.data_root} is not a directory")
    root = config.data_root.resolve()
    finder = None
    if config.exclude_eval:
        from fclm_data.leakage import LeakFinder, collect_eval_images

        finder = LeakFinder(collect_eval_images(list(config.exclude_eval), root), root)
    return make_plan(
        recipe, root, config.limit, progress.indexing if progress else None, config.min_shards, finder,
        executor.map_unordered if executor else None,
    )  # fmt: skip


def run_build(recipe: Recipe, config: BuildConfig, progress: BuildProgress | None = None) -> dict[str, Any]:
    """Build (or finish building) ``recipe`` into ``config.out_dir``; returns the manifest."""
    # one executor for indexing (one task per recipe entry) and building (one task per shard)
    executor = make_executor(config.executor, config.workers, config.ray_address, max(len(recipe.entries), 4))
    try:
        return _run(recipe, config, executor, progress)
    finally:
        executor.close()


def _run(recipe: Recipe, config: BuildConfig, executor: Executor, progress: BuildProgress | None) -> dict[str, Any]:
    plan = plan_build(recipe, config, progress, executor)
    config = replace(config, options=replace(config.options, format=recipe.format))  # the recipe owns the format
    out_dir = config.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = plan.fingerprint()
    _claim_out_dir(out_dir, fingerprint, config.overwrite)
    tasks = _tasks(plan, out_dir, fingerprint, config.options)
    done = _finished_results(out_dir, tasks, fingerprint)
    todo = [t for t in tasks if t.index not in done]
    if progress:
        progress.planned(plan, list(done.values()))
    results = dict(done)
    for result in executor.map_unordered(build_shard, todo):
        results[result.index] = result
        if progress:
            progress.shard_done(result)
    for tmp in out_dir.glob("shard-*.tar.tmp"):  # leftovers of a killed run whose shard was rebuilt
        tmp.unlink()
    options = {**asdict(config.options), "data_root": str(config.data_root.resolve()), "limit": config.limit}
    if options["format"] == "fclm":  # the default is not written: fclm manifests keep their bytes
        del options["format"]
    return write_outputs(out_dir, plan, [results[t.index] for t in tasks], options)


def _tasks(plan: Plan, out_dir: Path, fingerprint: str, options: BuildOptions) -> list[ShardTask]:
    source_options = {sp.name: sp.options for sp in plan.sources}
    return [
        ShardTask(i, str(out_dir), str(plan.data_root), source_options, samples, options, fingerprint)
        for i, samples in enumerate(plan.shards())
    ]


def _finished_results(out_dir: Path, tasks: list[ShardTask], fingerprint: str) -> dict[int, ShardResult]:
    done: dict[int, ShardResult] = {}
    for task in tasks:
        part = part_path(out_dir, task.index)
        if not part.exists():
            continue
        result = ShardResult.from_json(part.read_text(encoding="utf-8"))
        tar = out_dir / task.name
        intact = (result.samples == 0) or (tar.exists() and tar.stat().st_size == result.bytes)
        if result.plan_fingerprint == fingerprint and intact:
            done[task.index] = result
    return done


def _claim_out_dir(out_dir: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse to mix plans in one directory unless asked to start over."""
    foreign = _foreign_plan(out_dir, fingerprint)
    if foreign is None:
        return
    if not overwrite:
        raise BuildError(
            f"{out_dir} holds shards of another plan ({foreign}); the recipe, seed, limit or data changed. "
            "Use --overwrite to replace them or choose another --out."
        )
    for path in list(out_dir.glob("shard-*.tar")) + list(out_dir.glob("shard-*.tar.tmp")):
        path.unlink()
    shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)


def _foreign_plan(out_dir: Path, fingerprint: str) -> str | None:
    import json

    manifest = out_dir / MANIFEST
    if manifest.exists():
        previous = json.loads(manifest.read_text(encoding="utf-8")).get("plan_fingerprint")
        if previous != fingerprint:
            return f"plan {previous}"
    parts = sorted((out_dir / PARTS_DIR).glob("*.json")) if (out_dir / PARTS_DIR).is_dir() else []
    for part in parts:
        previous = json.loads(part.read_text(encoding="utf-8")).get("plan_fingerprint")
        if previous != fingerprint:
            return f"plan {previous} in {part.name}"
    if not parts and any(out_dir.glob("shard-*.tar")):
        return "shards without a ledger"
    return None
