"""Build driver: plan -> shard tasks -> executor -> ledger files.

Resumable: a shard is finished when its tar and its ledger part (``.parts/<shard>.json``, written
after the tar's atomic rename) both exist for the same plan fingerprint. Re-running the same
command after a crash builds only the missing shards and rewrites the ledger files, which are
deterministic, so the result is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fclm_data.build.executors import Executor, TaskCrashed, make_executor
from fclm_data.build.isolation import rebuild_isolated
from fclm_data.build.plan import Plan, make_plan
from fclm_data.build.shard import PARTS_DIR, ShardResult, ShardTask, build_shard, part_path
from fclm_data.images import link_targets
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
    #: rebuild finished shards that hold sample-stage rejects (after repairing inputs)
    retry_rejects: bool = False
    #: extra directories symlinks under the data root may point into (--link-root)
    link_roots: tuple[str, ...] = ()


#: Bumped when the bytes a build writes for the same inputs and options change (check, policies).
BUILD_LOGIC_VERSION = 2
LOCK = ".lock"


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
    parallel = executor is not None and config.workers > 1  # one worker: index here, no result pickling
    return make_plan(
        recipe, root, config.limit, progress.indexing if progress else None, config.min_shards, finder,
        executor.map_unordered if parallel else None,
    )  # fmt: skip


def build_fingerprint(plan: Plan, options: Any) -> str:
    """The plan's fingerprint plus every build option that changes bytes: equal means equal outputs."""
    settings = {k: v for k, v in asdict(options).items() if k != "link_roots"}
    text = json.dumps({"plan": plan.fingerprint(), "options": settings, "logic": BUILD_LOGIC_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_build(recipe: Recipe, config: BuildConfig, progress: BuildProgress | None = None) -> dict[str, Any]:
    """Build (or finish building) ``recipe`` into ``config.out_dir``; returns the manifest."""
    # one executor for indexing (one task per recipe entry) and building (one task per shard)
    executor = make_executor(config.executor, config.workers, config.ray_address, max(len(recipe.entries), 4))
    try:
        return _run(recipe, config, executor, progress)
    finally:
        executor.close()


def _run(recipe: Recipe, config: BuildConfig, executor: Executor, progress: BuildProgress | None) -> dict[str, Any]:
    config = replace(config, options=replace(config.options, format=recipe.format))  # the recipe owns the format
    out_dir = config.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock_out_dir(out_dir):
        plan = plan_build(recipe, config, progress, executor)
        options = dataclasses.replace(config.options, link_roots=_link_roots(plan, config))
        fingerprint = build_fingerprint(plan, options)
        _claim_out_dir(out_dir, fingerprint, config.overwrite)
        tasks = _tasks(plan, out_dir, fingerprint, options)
        done = _finished_results(out_dir, tasks, fingerprint, config.retry_rejects)
        todo = [t for t in tasks if t.index not in done]
        kept = sum(len(r.rejects) for r in done.values())
        if kept and progress is not None and hasattr(progress, "note"):
            progress.note(f"{kept:,} reject(s) kept from the previous run; --retry-rejects rebuilds their shards")
        if progress:
            progress.planned(plan, list(done.values()))
        results = dict(done)
        for result in _build_all(executor, todo):
            results[result.index] = result
            if progress:
                progress.shard_done(result)
        for tmp in out_dir.glob("shard-*.tar.tmp"):  # leftovers of a killed run whose shard was rebuilt
            tmp.unlink()
        recorded = {**asdict(config.options), "data_root": str(config.data_root.resolve()), "limit": config.limit}
        recorded.pop("link_roots")
        if recorded["format"] == "fclm":  # the default is not written: fclm manifests keep their bytes
            del recorded["format"]
        return write_outputs(out_dir, plan, [results[t.index] for t in tasks], recorded, fingerprint)


def _build_all(executor: Executor, todo: list[ShardTask]) -> Iterator[ShardResult]:
    """Every task's result; a task whose worker died is rebuilt alone (its killer record rejected)."""
    crashed: list[ShardTask] = []
    for out in executor.map_unordered(build_shard, todo):
        if isinstance(out, TaskCrashed):
            crashed.append(out.task)
        else:
            yield out
    for task in sorted(crashed, key=lambda t: t.index):
        yield rebuild_isolated(task)


def _link_roots(plan: Plan, config: BuildConfig) -> tuple[str, ...]:
    """Trusted symlink targets: those of the sources' configured paths, plus --link-root."""
    from fclm_data.sources import get_source

    rels: list[str] = []
    for sp in plan.sources:
        with contextlib.suppress(Exception):
            rels += get_source(sp.source, plan.data_root, **sp.options).required_paths()
    extra = [os.path.realpath(p) for p in config.link_roots]
    return tuple(sorted(set(link_targets(plan.data_root, rels)) | set(extra)))


@contextlib.contextmanager
def lock_out_dir(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``OUT/.lock`` for the whole build: a second build into OUT fails at once."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection
        yield
        return
    path = out_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise BuildError(
                f"{out_dir} is being written by another build (pid {holder}); wait for it or choose another --out"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock (a killed build releases it too)


def _tasks(plan: Plan, out_dir: Path, fingerprint: str, options: BuildOptions) -> list[ShardTask]:
    source_options = {sp.name: sp.options for sp in plan.sources}
    return [
        ShardTask(i, str(out_dir), str(plan.data_root), source_options, samples, options, fingerprint)
        for i, samples in enumerate(plan.shards())
    ]


def _finished_results(
    out_dir: Path, tasks: list[ShardTask], fingerprint: str, retry_rejects: bool = False
) -> dict[int, ShardResult]:
    done: dict[int, ShardResult] = {}
    for task in tasks:
        part = part_path(out_dir, task.index)
        if not part.exists():
            continue
        result = ShardResult.from_json(part.read_text(encoding="utf-8"))
        tar = out_dir / task.name
        intact = (result.samples == 0) or (tar.exists() and tar.stat().st_size == result.bytes)
        if result.plan_fingerprint == fingerprint and intact and not (retry_rejects and result.rejects):
            done[task.index] = result
    return done


def _claim_out_dir(out_dir: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse to mix plans in one directory unless asked to start over."""
    foreign = _foreign_plan(out_dir, fingerprint)
    if foreign is None:
        return
    if not overwrite:
        raise BuildError(
            f"{out_dir} holds shards of another plan ({foreign}); the recipe, seed, limit, build options "
            "(--visual-prompt, --image-check, ...) or data changed. "
            "Use --overwrite to replace them or choose another --out."
        )
    for path in list(out_dir.glob("shard-*.tar")) + list(out_dir.glob("shard-*.tar.tmp")):
        path.unlink()
    shutil.rmtree(out_dir / PARTS_DIR, ignore_errors=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)


def _foreign_plan(out_dir: Path, fingerprint: str) -> str | None:
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
