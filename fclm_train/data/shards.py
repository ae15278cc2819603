"""Shard sets: what ``--shards`` names, how many samples each holds, and which shards each data stream reads.

A *shard set* is one weighted source of samples: a brace pattern (``a/shard-{000000..000099}.tar``), a build
directory (every shard its ``manifest.json`` / ``shardindex.json`` lists), or either followed by ``:WEIGHT``.
Sample counts come from the build's ``manifest.json`` (or ``shardindex.json``) beside the shards, else from a
scan of the tar headers (no payload is decoded).

**Where shards live.** Local paths, ``file://``, ``http(s)://``, ``s3://``, ``gs://`` (any fsspec protocol whose
package is installed: ``s3fs`` comes with the train extra, ``gcsfs`` with the ``gcs`` extra) and webdataset's
``pipe:COMMAND``. Remote files are opened by fsspec (credentials the usual way: ``AWS_*`` variables / profiles,
``AWS_ENDPOINT_URL`` for S3-compatible stores, ``GOOGLE_APPLICATION_CREDENTIALS``; ``FSSPEC_S3_*`` etc. pass any
other option), ``pipe:`` by webdataset's ``gopen``; the tar stream is read by webdataset's tar iterator. A
remote build directory (``s3://bucket/stage2``) is read through its ``manifest.json`` like a local one. Every shard
is checked to exist before training starts; ``pipe:`` commands are run once to count their samples.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_WEIGHT = re.compile(r"^(?P<pattern>.+?):(?P<weight>\d+(?:\.\d*)?|\.\d+)$")
_SCHEME = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  #: webdataset's base_plus_ext: key, then every extension
_SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class ShardError(ValueError):
    """A ``--shards`` value or a shard that cannot be used; the message names it and says why (one line)."""


class MissingShardError(ShardError, FileNotFoundError):
    """A shard, directory or pattern that names nothing that exists."""


class ShardReadError(ShardError):
    """Reading one shard failed part-way; ``reason`` is ``shard_read_error`` or ``truncated_shard``."""

    def __init__(self, url: str, reason: str, detail: str) -> None:
        super().__init__(f"{url}: {reason.replace('_', ' ')}: {detail}")
        self.url, self.reason, self.detail = url, reason, detail


@dataclass(frozen=True)
class ShardSet:
    """One weighted set of shards (a recipe entry)."""

    name: str  #: for logs and the loader state
    urls: tuple[str, ...]  #: shard paths / URLs, in the pattern's order
    weight: float  #: relative mixing weight
    counts: tuple[int, ...]  #: samples per shard, same order as ``urls``
    #: the sample format of the build (``manifest.json`` ``format``; ``fclm`` when no manifest names one)
    format: str = "fclm"

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
    samples: int = -1  #: samples the whole shard holds (manifest or header scan); -1: unknown

    @property
    def expected(self) -> int | None:
        """Samples this item should yield (its part of the shard), None if the shard's count is unknown."""
        return None if self.samples < 0 else len(range(self.part, self.samples, self.parts))


# --------------------------------------------------------------------------------------------- opening
def scheme(url: str) -> str:
    """``'s3'`` for ``s3://b/k``, ``'pipe'`` for ``pipe:cmd``, ``''`` for a local path (``file://`` -> ``''``)."""
    if url.startswith("pipe:"):
        return "pipe"
    match = _SCHEME.match(url)
    if match is None or match["scheme"] == "file":
        return ""
    return match["scheme"].lower()


def is_remote(url: str) -> bool:
    """Anything but a local path: a URL fsspec opens, or a ``pipe:`` command."""
    return scheme(url) != ""


def local_path(url: str) -> Path:
    return Path(url[len("file://") :] if url.startswith("file://") else url)


def _filesystem(url: str):
    """(fsspec filesystem, path) for a remote URL; a missing protocol package is a one-line :class:`ShardError`."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec names the package: "Install s3fs to access S3"
        raise ShardError(f"{url}: {exc}") from None
    except ValueError as exc:  # "Protocol not known: ..."
        raise ShardError(f"{url}: {exc}") from None


def open_shard(url: str) -> IO[bytes]:
    """A binary stream over one shard, read front to back (webdataset's tar iterator reads it as a stream)."""
    kind = scheme(url)
    if kind == "pipe":
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    if kind == "":
        return open(local_path(url), "rb")
    fs, path = _filesystem(url)
    # HTTP: a streaming body (plain servers ignore Range requests; a tar is read once, in order)
    options = {"block_size": 0} if kind in ("http", "https") else {}
    return fs.open(path, "rb", **options)


def _read_json(url: str) -> Any | None:
    """A (manifest) JSON file, local or remote; None if it does not exist."""
    if not is_remote(url):
        path = local_path(url)
        return json.loads(path.read_text()) if path.is_file() else None
    fs, path = _filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"{url}: cannot read: {_one_line(exc)}") from None


def _join(directory: str, name: str) -> str:
    return str(local_path(directory) / name) if not is_remote(directory) else f"{directory.rstrip('/')}/{name}"


def _parent(url: str) -> str | None:
    """The directory a shard lies in (where its build's manifest is), None for ``pipe:``."""
    if scheme(url) == "pipe":
        return None
    if not is_remote(url):
        return str(local_path(url).parent)
    return url.rsplit("/", 1)[0]


def _basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + " ..."


# --------------------------------------------------------------------------------------------- patterns
def split_weight(spec: str) -> tuple[str, float]:
    """``'pattern:2'`` -> ``('pattern', 2.0)``; a spec without a numeric suffix has weight 1."""
    match = _WEIGHT.match(spec)
    if match is None:
        return spec, 1.0
    return match["pattern"], float(match["weight"])


def _is_directory(pattern: str) -> bool:
    """A build directory: a local directory, or a remote URL naming no shard file and no brace pattern."""
    if scheme(pattern) == "pipe":
        return False
    if not is_remote(pattern):
        return local_path(pattern).is_dir()
    return "{" not in pattern and not pattern.rstrip("/").endswith(_SHARD_SUFFIXES)


def expand_pattern(pattern: str) -> list[str]:
    """Brace-expand (webdataset's rules: braceexpand, ``::`` separates lists) or list a build directory's shards."""
    if _is_directory(pattern):
        return [_join(pattern, name) for name in _directory_shards(pattern)]
    from braceexpand import braceexpand  # what webdataset's expand_urls uses (importing webdataset loads torch)

    return [url for part in pattern.split("::") for url in braceexpand(part)]


def _directory_shards(directory: str) -> list[str]:
    """Shard names of a build directory: its manifest, its wids index, else its ``*.tar`` files."""
    manifest = _read_json(_join(directory, "manifest.json"))
    if manifest is not None:
        return [s["name"] for s in manifest["shards"]]
    index = _read_json(_join(directory, "shardindex.json"))
    if index is not None:
        return [_basename(s["url"]) for s in index["shardlist"]]
    if not is_remote(directory):
        names = sorted(p.name for p in local_path(directory).glob("*.tar"))
    else:
        fs, path = _filesystem(directory)
        try:
            names = sorted(_basename(p) for p in fs.glob(f"{path.rstrip('/')}/*.tar"))
        except (OSError, NotImplementedError, ValueError):
            names = []
    if not names:
        raise MissingShardError(f"{directory} holds no shards (*.tar) and no manifest.json / shardindex.json")
    return names


def _known_counts(directory: str) -> dict[str, int]:
    """Shard file name -> samples, from a build's manifest or wids index (empty if neither exists)."""
    manifest = _read_json(_join(directory, "manifest.json"))
    if manifest is not None:
        return {s["name"]: int(s["samples"]) for s in manifest["shards"]}
    index = _read_json(_join(directory, "shardindex.json"))
    if index is not None:
        return {_basename(s["url"]): int(s["nsamples"]) for s in index["shardlist"]}
    return {}


# --------------------------------------------------------------------------------------------- reading
def iter_shard(url: str) -> Iterator[dict]:
    """Raw samples of one shard, in tar order: ``{"__key__", "__url__", ext: bytes, ...}`` (webdataset's layout).

    Raises :class:`ShardReadError` after the last complete sample when the shard cannot be opened or read
    (``shard_read_error``) or its tar ends mid-stream (``truncated_shard``); a partial sample is never yielded.
    """
    try:
        stream = open_shard(url)
    except ShardError:
        raise
    except Exception as exc:  # a 404, a denied bucket, a missing file
        raise ShardReadError(url, "shard_read_error", _one_line(exc)) from None
    try:
        with stream:
            yield from _tar_samples(stream, url)
    except (tarfile.ReadError, EOFError) as exc:
        raise ShardReadError(url, "truncated_shard", _one_line(exc)) from None
    except ShardError:
        raise
    except Exception as exc:
        raise ShardReadError(url, "shard_read_error", _read_failure(url, exc)) from None


def _tar_samples(stream: IO[bytes], url: str) -> Iterator[dict]:
    """Members grouped by key (webdataset's ``base_plus_ext``), each sample yielded as soon as the next key's
    header is read, so a tar cut inside a sample loses that sample and nothing before it."""
    current: dict | None = None
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            name = info.name
            if not info.isreg() or re.match(r"__[^/]*__($|/)", name) or name.startswith("."):
                continue
            match = _KEY_EXT.match(name)
            if match is None:
                continue
            prefix, suffix = match[1], match[2]
            if current is not None and prefix != current["__key__"]:
                yield current
                current = None
            data = tar.extractfile(info).read()
            current = current or {"__key__": prefix, "__url__": url}
            suffix = suffix.lower()
            if suffix in current:
                raise ValueError(f"{name}: a second {suffix!r} file for sample {prefix!r}")
            current[suffix] = data
            tar.members = []  # stream mode: keep no member list
    if current is not None:
        yield current


def count_tar_samples(url: str) -> int:
    """Samples in one shard: distinct keys (basename up to the first dot), read from the tar headers only."""
    keys = set()
    try:
        with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if member.isreg():
                    keys.add(member.name.split("/")[-1].split(".", 1)[0])
    except ShardError:
        raise
    except FileNotFoundError as exc:
        raise MissingShardError(f"{url}: does not exist ({_one_line(exc)})") from None
    except (tarfile.ReadError, EOFError) as exc:
        raise ShardError(f"{url}: not a complete tar ({_one_line(exc)}); rebuild it or leave it out") from None
    except Exception as exc:
        raise ShardError(f"{url}: cannot read: {_read_failure(url, exc)}") from None
    return len(keys)


def _read_failure(url: str, exc: BaseException) -> str:
    """webdataset's pipe errors hold the Popen arguments; say what happened instead."""
    status = re.search(r"exit (-?\d+)", str(exc)) if scheme(url) == "pipe" else None
    return f"the command exited with status {status[1]}" if status else _one_line(exc)


def shard_counts(urls: list[str]) -> list[int]:
    """Samples per shard: from the manifest beside each shard when present, else by scanning headers."""
    known: dict[str, dict[str, int]] = {}
    counts = []
    for url in urls:
        parent = _parent(url)
        if parent is not None and parent not in known:
            is_dir = is_remote(parent) or local_path(parent).is_dir()
            known[parent] = _known_counts(parent) if is_dir else {}
        count = known.get(parent, {}).get(_basename(url)) if parent is not None else None
        counts.append(count if count is not None else count_tar_samples(url))
    return counts


def shard_format(urls: list[str]) -> str:
    """The sample format of the builds the shards come from (``manifest.json`` ``format`` beside them; FCLM
    manifests and shards without one: ``fclm``); shards of builds in different formats are a :class:`ShardError`."""
    formats: dict[str, str] = {}
    for parent in dict.fromkeys(p for p in map(_parent, urls) if p is not None):
        is_dir = is_remote(parent) or local_path(parent).is_dir()
        manifest = _read_json(_join(parent, "manifest.json")) if is_dir else None
        formats[parent] = (manifest or {}).get("format", "fclm")
    found = sorted(set(formats.values())) or ["fclm"]
    if len(found) > 1:
        raise ShardError(f"its shards come from builds in different formats ({', '.join(found)}); give each its "
                         "own --shards")  # fmt: skip
    return found[0]


def require_format(shard_set: ShardSet, expected: str, reader: str, label: str | None = None) -> None:
    """One line naming the set (``label``, else ``--shards NAME``) when its build's format is not what ``reader``
    reads."""
    if shard_set.format != expected:
        raise ShardError(f"{label or f'--shards {shard_set.name!r}'}: a {shard_set.format}-format build (its "
                         f"manifest.json); {reader} reads {expected}-format shards (fclm-data build --format "
                         f"{expected})")  # fmt: skip


def missing_shards(urls: list[str]) -> list[str]:
    """The shards that do not exist (``pipe:`` commands are checked when they are run to count samples)."""
    local = [u for u in urls if not is_remote(u)]
    missing = [u for u in local if not local_path(u).is_file()]
    remote = [u for u in urls if is_remote(u) and scheme(u) != "pipe"]
    if remote:
        with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
            missing += [u for u, ok in zip(remote, pool.map(_remote_exists, remote)) if not ok]
    return missing


def _remote_exists(url: str) -> bool:
    fs, path = _filesystem(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # a refused connection, an unknown host, denied credentials
        raise ShardError(f"{url}: cannot reach it: {_one_line(exc)}") from None


def resolve_shard_set(spec: str, weight: float | None = None, name: str | None = None) -> ShardSet:
    """A ``--shards`` value (pattern or directory, optional ``:WEIGHT``) -> a :class:`ShardSet` with counts.

    Raises :class:`ShardError` (:class:`MissingShardError` for what does not exist) with a one-line message.
    """
    pattern, parsed_weight = split_weight(spec)
    if not is_remote(pattern) and "{" not in pattern and not local_path(pattern).exists():
        raise MissingShardError(f"--shards {spec!r}: {pattern} does not exist")
    try:
        urls = expand_pattern(pattern)
    except MissingShardError as exc:
        raise MissingShardError(f"--shards {spec!r}: {exc}") from None
    except ShardError as exc:
        raise ShardError(f"--shards {spec!r}: {exc}") from None
    except ValueError as exc:  # a malformed brace pattern
        raise ShardError(f"--shards {spec!r}: {_one_line(exc)}") from None
    if not urls:
        raise MissingShardError(f"--shards {spec!r} matches no shard")
    try:
        missing = missing_shards(urls)
        if missing:
            where = " or cannot be reached" if is_remote(missing[0]) else ""
            raise MissingShardError(f"{len(missing)} of {len(urls)} shards do not exist{where}, e.g. {missing[0]}")
        counts = shard_counts(urls)
        sample_format = shard_format(urls)
    except MissingShardError as exc:
        raise MissingShardError(f"--shards {spec!r}: {exc}") from None
    except ShardError as exc:
        raise ShardError(f"--shards {spec!r}: {exc}") from None
    if sum(counts) == 0:
        raise ShardError(f"--shards {spec!r} holds no samples")
    final_weight = parsed_weight if weight is None else weight
    if final_weight <= 0:
        raise ShardError(f"--shards {spec!r}: weight must be > 0")
    return ShardSet(name or _basename(pattern) or pattern, tuple(urls), final_weight, tuple(counts), sample_format)


def epoch_items(shard_set: ShardSet, n_streams: int, seed: int, set_index: int, epoch: int) -> list[list[StreamItem]]:
    """The reading work of one epoch of one set, dealt to ``n_streams`` streams (a pure function of its args)."""
    order = [i for i, count in enumerate(shard_set.counts) if count > 0]
    random.Random(f"fclm-shards/{seed}/{set_index}/{epoch}").shuffle(order)
    parts = math.ceil(n_streams / len(order))  # > 1 only when streams outnumber shards
    items = [StreamItem(shard_set.urls[i], part, parts, epoch, shard_set.counts[i]) for i in order
             for part in range(parts)]
    # rotate the deal by the epoch: a stream whose slot is an empty part (a shard smaller than ``parts``)
    # gets other slots in later epochs instead of waiting forever
    return [items[(stream + epoch) % n_streams :: n_streams] for stream in range(n_streams)]


def stream_items(shard_set: ShardSet, stream: int, n_streams: int, seed: int, set_index: int) -> Iterator[StreamItem]:
    """This stream's work for epoch 0, 1, 2, ... forever (sets are re-read, reshuffled, epoch after epoch)."""
    epoch = 0
    while True:
        yield from epoch_items(shard_set, n_streams, seed, set_index, epoch)[stream]
        epoch += 1
