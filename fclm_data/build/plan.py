"""Recipe -> deterministic shard plan.

1. index every source (sorted units, index-stage rejects, missing paths);
2. select per source: the ``count`` units with the lowest hash of (seed, source, uid) -- a seeded
   subsample without replacement that any machine reproduces; repeated sources take every unit
   ``count // n`` times and hash-select the remainder (each repetition has its own key, hence
   fresh template draws);
3. order all selected samples by a hash of (seed, key) so every shard mixes the sources;
4. cut the order into shards of ``shard_size``. Shard i's content depends only on the plan, so any
   executor, worker count or resumed run writes the same bytes.

Shard sizing: a trainer needs at least ``nodes x ranks x loader workers`` shards (webdataset hangs or
starves ranks otherwise) and a few times more for shuffling; given ``min_shards`` the plan shrinks
the recipe's shard size (never below :data:`MIN_SHARD_SAMPLES`) until there are that many.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fclm_data.build.executors import TaskCrashed
from fclm_data.errors import RejectRecord
from fclm_data.recipes import Recipe
from fclm_data.seeding import stable_hash
from fclm_data.sources import IndexResult, Unit, get_source

#: Smallest shard the planner picks on its own (tiny shards cost open/seek overhead per sample).
MIN_SHARD_SAMPLES = 64


@dataclass(frozen=True)
class PlannedSample:
    entry: str  #: the recipe entry's label (ledger and key prefix)
    source: str  #: registry name
    key: str
    unit: Unit
    repeat: int


@dataclass
class SourcePlan:
    name: str  #: entry label (= the source's registry name unless the recipe names the entry)
    source: str  #: registry name
    options: dict[str, Any]
    requested: int | None  #: recipe count (None = all)
    records: int = 0  #: input records seen at index time
    available: int = 0  #: units that passed indexing (and the eval-overlap filter)
    selected: int = 0  #: samples planned (incl. repetitions)
    repeats: int = 1  #: max repetitions of a unit
    index_rejects: list[RejectRecord] = field(default_factory=list)
    #: units dropped because their image is in an evaluation split (--exclude-eval), as reject lines
    excluded: list[RejectRecord] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Plan:
    recipe: Recipe
    data_root: Path
    samples: list[PlannedSample]
    sources: list[SourcePlan]
    shard_size: int = 0  #: effective samples per shard (<= the recipe's)
    warnings: list[str] = field(default_factory=list)

    def shards(self) -> list[list[PlannedSample]]:
        size = self.shard_size
        return [self.samples[i : i + size] for i in range(0, len(self.samples), size)]

    def fingerprint(self) -> str:
        """Hash of the ordered keys, the shard size and the recipe: equal fingerprints mean equal shards."""
        digest = hashlib.sha256(f"{self.recipe.fingerprint()}/{self.shard_size}".encode())
        for sample in self.samples:
            digest.update(sample.key.encode() + b"\n")
        return digest.hexdigest()[:16]


def sample_key(source: str, uid: str, repeat: int) -> str:
    return f"{source}-{uid}" + (f"-r{repeat}" if repeat else "")


def select(
    source: str, units: list[Unit], count: int | None, repeat: bool, seed: int, registry: str | None = None
) -> tuple[list[PlannedSample], list[str], int]:
    """Seeded subsample (or repetition) of ``units``; returns (samples, warnings, repeats).

    ``source`` is the entry label (key prefix, ledger); ``registry`` the source's registry name.
    """
    n = len(units)
    warnings: list[str] = []
    wanted = n if count is None else count
    if wanted > n and not repeat:
        if n:
            warnings.append(f"{source}: recipe asks for {wanted:,} but only {n:,} are available; taking all")
        wanted = n
    if n == 0 or wanted == 0:
        return [], warnings, 1
    full, rest = divmod(wanted, n)
    picked = [(u, r) for r in range(full) for u in units]
    if rest:
        ranked = sorted(units, key=lambda u: stable_hash("select", seed, source, full, u.uid))
        picked += [(u, full) for u in ranked[:rest]]
    samples = [PlannedSample(source, registry or source, sample_key(source, u.uid, r), u, r) for u, r in picked]
    return samples, warnings, full + (1 if rest else 0)


def index_entry(task: tuple[int, str, str, dict[str, Any]]) -> tuple[int, IndexResult]:
    """Index one recipe entry (a picklable task, so entries index in parallel on any executor)."""
    position, name, data_root, options = task
    try:
        return position, get_source(name, data_root, **options).index()
    except Exception as exc:  # a reader bug or an input type it did not expect: one reject, not a crash
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        detail = f"indexing failed: {''.join(traceback.format_exception_only(type(exc), exc)).strip()} (at {where})"
        return position, IndexResult([], [RejectRecord(name, "index", None, "unexpected_error", detail, "index")])


def make_plan(
    recipe: Recipe,
    data_root: Path,
    limit: int | None = None,
    on_source: Callable[[str], None] | None = None,
    min_shards: int | None = None,
    exclude: Any | None = None,
    map_unordered: Callable | None = None,
) -> Plan:
    """Index and select every recipe entry; ``limit`` caps each source's count (quick tries).

    ``exclude`` (a :class:`fclm_data.leakage.LeakFinder`) drops units whose image is in an evaluation
    split before sampling; they are counted as ``excluded_eval`` in the ledger. ``map_unordered`` (an
    executor's) indexes the entries in parallel; results are used in recipe order either way.
    """
    tasks = [(i, e.source, str(data_root), e.options) for i, e in enumerate(recipe.entries)]
    indexes: dict[int, IndexResult] = {}
    run = map_unordered or _serial_map
    crashed: list[tuple] = []
    for item in run(index_entry, tasks):
        if isinstance(item, TaskCrashed):  # a dying worker also fails the tasks beside it: each is rerun alone
            crashed.append(item.task)
            continue
        position, index = item
        indexes[position] = index
        if on_source:
            on_source(recipe.entries[position].label)
    for task in sorted(crashed, key=lambda t: t[0]):
        (item,) = list(run(index_entry, [task]))
        position, index = _crashed_index(item) if isinstance(item, TaskCrashed) else item
        indexes[position] = index
        if on_source:
            on_source(recipe.entries[position].label)
    samples: list[PlannedSample] = []
    plans: list[SourcePlan] = []
    for position, entry in enumerate(recipe.entries):
        source = get_source(entry.source, data_root, **entry.options)
        index = indexes[position]
        excluded = _exclude(source, index, exclude, entry.label) if exclude is not None else []
        count = entry.count if limit is None else min(limit, entry.count if entry.count is not None else limit)
        chosen, warnings, repeats = select(entry.label, index.units, count, entry.repeat, recipe.seed, entry.source)
        plans.append(
            SourcePlan(
                name=entry.label,
                source=entry.source,
                options=entry.options,
                requested=entry.count,
                records=index.records + len(excluded),
                available=len(index.units),
                selected=len(chosen),
                repeats=repeats,
                index_rejects=[dataclasses.replace(r, source=entry.label) for r in index.rejects],
                excluded=excluded,
                missing=index.missing,
                warnings=warnings + [f"{entry.label}: missing under the data root: {m}" for m in index.missing],
            )
        )
        samples.extend(chosen)
    samples.sort(key=lambda s: (stable_hash("order", recipe.seed, s.key), s.key))
    _check_unique_keys(samples)
    shard_size, warnings = choose_shard_size(len(samples), recipe.shard_size, min_shards)
    return Plan(recipe, data_root, samples, plans, shard_size, warnings)


def _crashed_index(crash: TaskCrashed) -> tuple[int, IndexResult]:
    """An entry whose indexing process died: one reject for the entry (the build goes on, exit 3)."""
    position, name = crash.task[0], crash.task[1]
    detail = f"the process indexing this entry died ({crash.error})"
    return position, IndexResult([], [RejectRecord(name, "index", None, "worker_crashed", detail, "index")])


def _serial_map(fn: Callable, tasks: list) -> Any:
    return map(fn, tasks)


def choose_shard_size(samples: int, max_size: int, min_shards: int | None) -> tuple[int, list[str]]:
    """Largest size <= ``max_size`` giving >= ``min_shards`` shards, floored at MIN_SHARD_SAMPLES."""
    if not min_shards or samples == 0:
        return max_size, []
    size = min(max_size, max(MIN_SHARD_SAMPLES, samples // min_shards))
    shards = -(-samples // size)
    if shards >= min_shards:
        return size, []
    return size, [
        f"{shards} shard(s) for {samples:,} samples: fewer than the {min_shards} that ranks x loader workers x 8 "
        "asks for -- fine for a small run, too few for multi-GPU training"
    ]


def _exclude(source: Any, index: IndexResult, finder: Any, label: str) -> list[RejectRecord]:
    """Remove leaking units from ``index.units`` (in place); return their ledger lines."""
    kept, excluded = [], []
    for unit in index.units:
        leak = finder.check(source, unit)
        if leak is None:
            kept.append(unit)
            continue
        detail = f"image {leak.image} is in {', '.join(leak.eval_entries)} ({leak.reason})"
        excluded.append(RejectRecord(label, unit.uid, unit.file or None, "eval_overlap", detail, "excluded"))
    index.units = kept
    return excluded


def _check_unique_keys(samples: list[PlannedSample]) -> None:
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise RuntimeError(f"planned sample key {dup!r} is not unique (a source produced duplicate uids)")
