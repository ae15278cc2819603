"""Shard sets: what ``--shards`` names, how many samples each holds, and which shards each data stream reads.

A *shard set* is one weighted source of samples: a brace pattern (``a/shard-{000000..000099}.tar``), a build
directory (every shard its ``manifest.json`` / ``shardindex.json`` lists), or either followed by ``:WEIGHT``.
Sample counts come from the build's ``manifest.json`` (or ``shardindex.json``) beside the shards, else from a
scan of the tar headers (no payload is decoded).

A *stream* is one (rank, loader worker) pair: ``stream = rank * num_workers + worker`` of
``world_size * num_workers``. Per set and epoch, :func:`epoch_items` shuffles the shards with a seeded RNG and
deals them round-robin to the streams. When a set has fewer shards than there are streams, every shard is
read by several streams, each keeping every ``parts``-th sample (``part`` = its slot), so no stream is ever
empty (an empty worker hangs DDP, webdataset issue #188) and no sample is read twice in one epoch. The deal
rotates by one slot per epoch, so every stream reaches every slot eventually.
"""

from __future__ import annotations

import json
import math
import random
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_WEIGHT = re.compile(r"^(?P<pattern>.+?):(?P<weight>\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class ShardSet:
    """One weighted set of shards (a recipe entry)."""

    name: str  #: for logs and the loader state
    urls: tuple[str, ...]  #: shard paths / URLs, in the pattern's order
    weight: float  #: relative mixing weight
    counts: tuple[int, ...]  #: samples per shard, same order as ``urls``

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class StreamItem:
    """One unit of reading work: every ``parts``-th sample of a shard, starting at ``part``."""

    url: str
    part: int
    parts: int
    epoch: int  #: the set's epoch this item belongs to


def split_weight(spec: str) -> tuple[str, float]:
    """``'pattern:2'`` -> ``('pattern', 2.0)``; a spec without a numeric suffix has weight 1."""
    match = _WEIGHT.match(spec)
    if match is None:
        return spec, 1.0
    return match["pattern"], float(match["weight"])


def expand_pattern(pattern: str) -> list[str]:
    """Brace-expand (webdataset's rules, ``::`` separates lists) or list a build directory's shards."""
    path = Path(pattern)
    if path.is_dir():
        return [str(path / name) for name in _directory_shards(path)]
    from webdataset.shardlists import expand_urls

    return list(expand_urls(pattern))


def _directory_shards(directory: Path) -> list[str]:
    manifest = directory / "manifest.json"
    if manifest.exists():
        return [s["name"] for s in json.loads(manifest.read_text())["shards"]]
    index = directory / "shardindex.json"
    if index.exists():
        return [s["url"] for s in json.loads(index.read_text())["shardlist"]]
    names = sorted(p.name for p in directory.glob("*.tar"))
    if not names:
        raise FileNotFoundError(f"{directory} holds no shards (*.tar) and no manifest.json / shardindex.json")
    return names


def _known_counts(directory: Path) -> dict[str, int]:
    """Shard file name -> samples, from a build's manifest or wids index (empty if neither exists)."""
    manifest = directory / "manifest.json"
    if manifest.exists():
        return {s["name"]: int(s["samples"]) for s in json.loads(manifest.read_text())["shards"]}
    index = directory / "shardindex.json"
    if index.exists():
        return {Path(s["url"]).name: int(s["nsamples"]) for s in json.loads(index.read_text())["shardlist"]}
    return {}


def count_tar_samples(url: str) -> int:
    """Samples in one shard: distinct keys (basename up to the first dot), read from the tar headers only."""
    keys = set()
    with tarfile.open(url, mode="r:*") as tar:
        for member in tar:
            if member.isreg():
                keys.add(member.name.split("/")[-1].split(".", 1)[0])
    return len(keys)


def shard_counts(urls: list[str]) -> list[int]:
    """Samples per shard: from the manifest beside each shard when present, else by scanning headers."""
    known: dict[Path, dict[str, int]] = {}
    counts = []
    for url in urls:
        path = Path(url)
        if path.parent not in known:
            known[path.parent] = _known_counts(path.parent) if path.parent.is_dir() else {}
        count = known[path.parent].get(path.name)
        counts.append(count if count is not None else count_tar_samples(url))
    return counts


def resolve_shard_set(spec: str, weight: float | None = None, name: str | None = None) -> ShardSet:
    """A ``--shards`` value (pattern or directory, optional ``:WEIGHT``) -> a :class:`ShardSet` with counts."""
    pattern, parsed_weight = split_weight(spec)
    urls = expand_pattern(pattern)
    if not urls:
        raise FileNotFoundError(f"--shards {spec!r} matches no shard")
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).exists()]
    if missing:
        raise FileNotFoundError(f"--shards {spec!r}: {len(missing)} shards do not exist, e.g. {missing[0]}")
    counts = shard_counts(urls)
    if sum(counts) == 0:
        raise ValueError(f"--shards {spec!r} holds no samples")
    final_weight = parsed_weight if weight is None else weight
    if final_weight <= 0:
        raise ValueError(f"--shards {spec!r}: weight must be > 0")
    return ShardSet(name or Path(pattern).name, tuple(urls), final_weight, tuple(counts))


def epoch_items(shard_set: ShardSet, n_streams: int, seed: int, set_index: int, epoch: int) -> list[list[StreamItem]]:
    """The reading work of one epoch of one set, dealt to ``n_streams`` streams (a pure function of its args)."""
    order = [i for i, count in enumerate(shard_set.counts) if count > 0]
    random.Random(f"fclm-shards/{seed}/{set_index}/{epoch}").shuffle(order)
    parts = math.ceil(n_streams / len(order))  # > 1 only when streams outnumber shards
    items = [StreamItem(shard_set.urls[i], part, parts, epoch) for i in order for part in range(parts)]
    # rotate the deal by the epoch: a stream whose slot is an empty part (a shard smaller than ``parts``)
    # gets other slots in later epochs instead of waiting forever
    return [items[(stream + epoch) % n_streams :: n_streams] for stream in range(n_streams)]


def stream_items(shard_set: ShardSet, stream: int, n_streams: int, seed: int, set_index: int) -> Iterator[StreamItem]:
    """This stream's work for epoch 0, 1, 2, ... forever (sets are re-read, reshuffled, epoch after epoch)."""
    epoch = 0
    while True:
        yield from epoch_items(shard_set, n_streams, seed, set_index, epoch)[stream]
        epoch += 1
