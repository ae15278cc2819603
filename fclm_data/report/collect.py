"""One pass over a build directory: the ledger files, per-sample statistics, and seeded gallery picks.

Gallery picks are, per (ledger entry, task), the ``n`` samples with the smallest ``stable_hash(seed, key)``: a pure
function of the seed and the keys, so the same build and seed always show the same samples whatever the shard
order, and only those ``n`` images per group are held in memory.
"""

from __future__ import annotations

import heapq
import json
import tarfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fclm_data.inspect import IMAGE_EXTS
from fclm_data.manifest import MANIFEST, PARQUET, REJECTS
from fclm_data.masks import rle_area
from fclm_data.seeding import stable_hash

#: Example records shown per reject reason.
REJECT_EXAMPLES = 3


class ReportError(ValueError):
    """A build directory the report cannot read, with the file and the reason."""


@dataclass
class Picked:
    sample: dict
    image: bytes


@dataclass
class BuildData:
    """Everything the page shows, gathered in one scan."""

    out_dir: Path
    manifest: dict[str, Any]
    rejects: list[dict]
    tokens: list[int] = field(default_factory=list)  #: longest view per sample (when counted)
    tokens_by_group: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    regions: Counter = field(default_factory=Counter)  #: regions per sample -> samples
    mask_area: list[float] = field(default_factory=list)  #: region mask area / image area
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    templates: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  #: table -> id -> uses
    tasks: Counter = field(default_factory=Counter)
    visual_prompts: Counter = field(default_factory=Counter)
    samples: int = 0
    unreadable: list[str] = field(default_factory=list)  #: samples whose JSON did not parse
    gallery: dict[tuple[str, str], list[Picked]] = field(default_factory=dict)
    group_sizes: Counter = field(default_factory=Counter)
    token_note: str | None = None
    max_length: int | None = None
    prompt_notes: set[str] = field(default_factory=set)  #: why visual prompts fell back to masks (page fills it)

    def rejects_by_source(self) -> dict[str, dict[tuple[str, str], list[dict]]]:
        """source -> (stage, code) -> the reject lines, in file order."""
        out: dict[str, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
        for line in self.rejects:
            out[line.get("source", "?")][(line.get("stage", "?"), line.get("code", "?"))].append(line)
        return out


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not out_dir.is_dir():
        raise ReportError(f"{out_dir}: not a directory")
    if not path.exists():
        raise ReportError(f"{path}: no manifest.json (is {out_dir} a fclm-data build directory?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: invalid JSON ({exc})") from exc


def read_rejects(out_dir: Path) -> list[dict]:
    path = out_dir / REJECTS
    if not path.exists():
        return []
    lines = []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{path}:{n}: invalid JSON ({exc})") from exc
    return lines


def entry_of_keys(out_dir: Path) -> dict[str, str]:
    """Sample key -> recipe entry label (the ledger's row), from manifest.parquet; {} when it is absent."""
    path = out_dir / PARQUET
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["key", "entry"])
    return dict(zip(table.column("key").to_pylist(), table.column("entry").to_pylist()))


def collect(
    out_dir: Path, per_group: int, seed: int, count_tokens: Callable[[dict], int | None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> BuildData:  # fmt: skip
    """Scan every shard of the manifest once; ``progress(samples so far)`` is called per shard.

    Only the JSON members are read; an image is read (by its offset) only for the samples the galleries show.
    """
    manifest = read_manifest(out_dir)
    data = BuildData(out_dir, manifest, read_rejects(out_dir))
    entries = entry_of_keys(out_dir)
    heaps: dict[tuple[str, str], list[tuple[int, str, dict, tuple]]] = defaultdict(list)
    for shard in manifest.get("shards", []):
        path = out_dir / shard["name"]
        if not path.exists():
            raise ReportError(f"{path}: listed in the manifest but missing")
        for key, text, image_at in _json_members(path):
            try:
                sample = json.loads(text if text is not None else b"")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                why = "no json member" if text is None else f"json does not parse ({exc})"
                data.unreadable.append(f"{shard['name']}: {key}: {why}")
                continue
            group = (entries.get(key, sample.get("source", "?")), sample.get("task", "?"))
            _tally(data, sample, group, count_tokens)
            data.group_sizes[group] += 1
            if image_at is not None and per_group > 0:
                _offer(heaps[group], per_group, (-stable_hash(seed, "report", key), key, sample, image_at))
        if progress:
            progress(data.samples)
    for group in sorted(heaps):
        ranked = sorted(heaps[group], key=lambda item: (-item[0], item[1]))
        data.gallery[group] = [Picked(sample, _read_at(*at)) for _, _, sample, at in ranked]
    return data


def _json_members(path: Path) -> Iterator[tuple[str, bytes | None, tuple[Path, int, int] | None]]:
    """(key, json bytes or None, (path, offset, size) of the image or None) per sample, reading no image data.

    Members are grouped as webdataset groups them (adjacent, key = name up to the first dot); ``tarfile`` seeks
    over the image members' data instead of reading it.
    """
    current, text, image = None, None, None
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, _, ext = info.name.partition(".")
            if key != current:
                if current is not None:
                    yield current, text, image
                current, text, image = key, None, None
            if ext == "json":
                handle = tar.extractfile(info)
                text = handle.read() if handle else b""
            elif ext in IMAGE_EXTS:
                image = (path, info.offset_data, info.size)
    if current is not None:
        yield current, text, image


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _offer(heap: list, n: int, item: tuple) -> None:
    """Keep the ``n`` items of largest first element (= smallest hash) in a min-heap."""
    if len(heap) < n:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def _tally(data: BuildData, sample: dict, group: tuple[str, str], count_tokens) -> None:
    data.samples += 1
    data.tasks[sample.get("task")] += 1
    data.visual_prompts[sample.get("visual_prompt")] += 1
    regions = sample.get("regions", [])
    data.regions[len(regions)] += 1
    image = sample.get("image", {})
    width, height = image.get("width") or 0, image.get("height") or 0
    data.image_sizes.append((width, height))
    for region in regions:
        if width and height:
            data.mask_area.append(rle_area(region["mask"]) / (width * height))
    for template in sample.get("templates", []):
        table, _, number = template.rpartition(":")
        data.templates[table or template][number] += 1
    if count_tokens is not None:
        n = count_tokens(sample)
        if n is not None:
            data.tokens.append(n)
            data.tokens_by_group[group[0]].append(n)
