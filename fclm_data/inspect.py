"""Look at shards: summaries, schema and integrity checks, decoded samples.

``inspect_shard`` reads a tar the way webdataset groups it (members adjacent, key = basename up
to the first dot) and reports what a trainer would trip over: missing or extra members, invalid
JSON, schema violations, image headers that disagree with the JSON, a tar that stops being readable
before its end (tarfile stops quietly at a damaged header), and -- for a shard with a manifest.json
or shardindex.json beside it -- sample counts and sizes. ``strict`` also decodes every image (the
build's strict check) and every mask. ``inspect_output`` checks a build directory against its
manifest (sample counts, sizes, sha256, parquet offsets, per-sample JSON checksums).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from fclm_data.errors import Reject
from fclm_data.images import check_image_bytes
from fclm_data.masks import check_rle, decode_rle, rle_area
from fclm_data.schema import validate_sample

IMAGE_EXTS = ("jpg", "png")


@dataclass
class ShardReport:
    path: str
    samples: int = 0
    bytes: int = 0
    tasks: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    regions: int = 0
    region_inputs: int = 0
    seg_targets: int = 0
    paired: int = 0
    image_exts: Counter = field(default_factory=Counter)
    min_size: tuple[int, int] | None = None  #: smallest (width, height) seen
    max_size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "samples": self.samples,
            "bytes": self.bytes,
            "tasks": dict(sorted(self.tasks.items())),
            "sources": dict(sorted(self.sources.items())),
            "regions": self.regions,
            "region_inputs": self.region_inputs,
            "seg_targets": self.seg_targets,
            "paired": self.paired,
            "image_exts": dict(self.image_exts),
            "min_size": self.min_size,
            "max_size": self.max_size,
            "problems": self.problems,
        }


def iter_tar_samples(path: Path, problems: list[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) in tar order, grouping adjacent members like webdataset."""
    seen: set[str] = set()
    current_key, members = None, {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            directory, _, base = info.name.rpartition("/")
            stem, _, ext = base.partition(".")
            key = f"{directory}/{stem}" if directory else stem
            if key != current_key:
                if current_key is not None:
                    yield current_key, members
                if key in seen and problems is not None:
                    problems.append(f"{path.name}: members of {key} are not adjacent")
                seen.add(key)
                current_key, members = key, {}
            handle = tar.extractfile(info)
            members[ext] = handle.read() if handle else b""
        end = tar.offset
    if current_key is not None:
        yield current_key, members
    if problems is not None:
        problems += _check_tar_end(path, end)


def _check_tar_end(path: Path, end: int) -> list[str]:
    """tarfile stops quietly at the first damaged header: whatever follows must be end-of-archive zeros."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(end)
        while block := f.read(1 << 20):
            if block.strip(b"\0"):
                return [f"{path.name}: the tar stops being readable at byte {end:,} of {size:,} (a damaged header?)"]
    return []


def check_sample(key: str, members: dict[str, bytes], strict: bool) -> tuple[dict | None, list[str]]:
    """Decode one sample's JSON and check it against its image; returns (sample, problems)."""
    problems: list[str] = []
    image_exts = [e for e in members if e in IMAGE_EXTS]
    extra = sorted(set(members) - {"json", *IMAGE_EXTS})
    if extra:
        problems.append(f"{key}: unexpected members {extra}")
    if "json" not in members or len(image_exts) != 1:
        return None, problems + [f"{key}: needs one json and one image member, has {sorted(members)}"]
    try:
        sample = json.loads(members["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, problems + [f"{key}: json does not parse ({exc})"]
    problems += [f"{key}: {p}" for p in validate_sample(sample)]
    if sample.get("key") != key:
        problems.append(f"{key}: json key {sample.get('key')!r} differs from the tar key")
    problems += _check_image(key, members[image_exts[0]], image_exts[0], sample, strict)
    if strict and not problems:
        problems += _check_masks(key, sample)
    return sample, problems


def _check_image(key: str, data: bytes, ext: str, sample: dict, strict: bool) -> list[str]:
    meta = sample.get("image", {})
    try:
        if strict:
            image = check_image_bytes(data, key)
            size, fmt = (image.width, image.height), image.ext
            if image.sha256 != meta.get("sha256"):
                return [f"{key}: image sha256 differs from the json"]
        else:
            with Image.open(io.BytesIO(data)) as im:
                size, fmt = im.size, {"JPEG": "jpg", "PNG": "png"}.get(im.format or "", im.format)
    except Reject as exc:
        return [f"{key}: {exc.detail}"]
    except Exception as exc:
        return [f"{key}: image header unreadable ({exc})"]
    problems = []
    if fmt != ext:
        problems.append(f"{key}: member .{ext} holds {fmt} data")
    if list(size) != [meta.get("width"), meta.get("height")]:
        problems.append(f"{key}: image is {size[0]}x{size[1]}, json says {meta.get('width')}x{meta.get('height')}")
    return problems


def _check_masks(key: str, sample: dict) -> list[str]:
    problems = []
    for i, region in enumerate(sample["regions"]):
        try:
            mask = decode_rle(check_rle(region["mask"]))  # a damaged RLE must not reach pycocotools
            if int(mask.sum()) != rle_area(region["mask"]) or not mask.any():
                problems.append(f"{key}: region {i} mask is empty or decodes inconsistently")
        except Exception as exc:
            problems.append(f"{key}: region {i} mask does not decode ({exc})")
    return problems


def inspect_shard(
    path: Path, strict: bool = False, keep_samples: bool = False, siblings: bool = True
) -> tuple[ShardReport, list[dict]]:
    """Check one shard; with ``siblings``, also against a manifest.json / shardindex.json beside it."""
    report = ShardReport(str(path), bytes=path.stat().st_size)
    kept: list[dict] = []
    try:
        for key, members in iter_tar_samples(path, report.problems):
            sample, problems = check_sample(key, members, strict)
            report.problems.extend(problems)
            report.samples += 1
            if sample is None:
                continue
            _tally(report, sample, members)
            if keep_samples:
                kept.append(sample)
    except (tarfile.TarError, OSError) as exc:
        report.problems.append(f"{path.name}: unreadable tar after {report.samples} samples ({exc})")
    if siblings:
        report.problems += against_siblings(path, report)
    return report, kept


def against_siblings(path: Path, report: ShardReport) -> list[str]:
    """Sample count and size of a shard against the manifest.json / shardindex.json in its directory."""
    problems = []
    manifest, index = path.parent / "manifest.json", path.parent / "shardindex.json"
    listed: dict[str, tuple[int, int]] = {}
    try:
        if manifest.exists():
            listed.update({s["name"]: (s["samples"], s["bytes"]) for s in json.loads(manifest.read_text())["shards"]})
        if index.exists():
            for s in json.loads(index.read_text())["shardlist"]:
                listed.setdefault(s["url"], (s["nsamples"], s["filesize"]))
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path.parent.name}: manifest.json / shardindex.json unreadable ({exc})"]
    if path.name in listed:
        samples, size = listed[path.name]
        if report.samples != samples:
            problems.append(f"{path.name}: {report.samples} samples, the ledger beside it says {samples}")
        if report.bytes != size:
            problems.append(f"{path.name}: {report.bytes} bytes, the ledger beside it says {size}")
    return problems


def _tally(report: ShardReport, sample: dict, members: dict[str, bytes]) -> None:
    report.tasks[sample.get("task")] += 1
    report.sources[sample.get("source")] += 1
    report.regions += len(sample.get("regions", []))
    views = [sample] + ([sample["pair"]] if sample.get("pair") else [])
    report.region_inputs += sum(len(v.get("region_inputs", [])) for v in views)
    report.seg_targets += sum(len(v.get("seg_targets", [])) for v in views)
    report.paired += sample.get("pair") is not None
    report.image_exts.update(e for e in members if e in IMAGE_EXTS)
    size = (sample["image"]["width"], sample["image"]["height"])
    report.min_size = size if report.min_size is None else min(report.min_size, size, key=lambda s: s[0] * s[1])
    report.max_size = size if report.max_size is None else max(report.max_size, size, key=lambda s: s[0] * s[1])


def inspect_output(out_dir: Path, strict: bool = False) -> tuple[list[ShardReport], list[str]]:
    """Check every shard of a build directory, and the directory against its manifest."""
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.exists():
        shards = sorted(out_dir.glob("shard-*.tar"))
        return [inspect_shard(p, strict, siblings=False)[0] for p in shards], [f"{out_dir}: no manifest.json"]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    reports, problems = [], []
    listed = {s["name"] for s in manifest["shards"]}
    for extra in sorted(p.name for p in out_dir.glob("shard-*.tar") if p.name not in listed):
        problems.append(f"{extra}: not in the manifest")
    for entry in manifest["shards"]:
        path = out_dir / entry["name"]
        if not path.exists():
            problems.append(f"{entry['name']}: listed in the manifest but missing")
            continue
        report, _ = inspect_shard(path, strict, siblings=False)
        reports.append(report)
        problems += _against_manifest(path, entry, report, strict)
    problems += _against_parquet(out_dir, manifest) if strict else []
    return reports, problems


def _against_manifest(path: Path, entry: dict, report: ShardReport, strict: bool) -> list[str]:
    problems = []
    if report.samples != entry["samples"]:
        problems.append(f"{path.name}: {report.samples} samples, manifest says {entry['samples']}")
    if report.bytes != entry["bytes"]:
        problems.append(f"{path.name}: {report.bytes} bytes, manifest says {entry['bytes']}")
    if strict and _sha256(path) != entry["sha256"]:
        problems.append(f"{path.name}: sha256 differs from the manifest")
    return problems


def _against_parquet(out_dir: Path, manifest: dict) -> list[str]:
    """Every parquet row's (offset, size) must frame exactly its sample's members."""
    import pyarrow.parquet as pq

    path = out_dir / "manifest.parquet"
    if not path.exists():
        return [f"{out_dir}: no manifest.parquet"]
    table = pq.read_table(path)
    columns = [c for c in ("key", "shard", "offset", "size", "json_sha256") if c in table.column_names]
    rows = table.select(columns).to_pylist()
    problems = []
    if len(rows) != manifest["totals"]["written"]:
        problems.append(f"manifest.parquet has {len(rows)} rows, manifest says {manifest['totals']['written']} written")
    for row in rows:
        with open(out_dir / row["shard"], "rb") as f:
            f.seek(row["offset"])
            chunk = f.read(row["size"])
        try:
            with tarfile.open(fileobj=io.BytesIO(chunk + b"\0" * 1024), mode="r:") as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        except tarfile.TarError:
            members = {}
        if not members or any(n.partition(".")[0] != row["key"] for n in members):
            problems.append(f"manifest.parquet: {row['key']} does not frame its members in {row['shard']}")
            continue
        stored = members.get(f"{row['key']}.json")
        if row.get("json_sha256") and (stored is None or hashlib.sha256(stored).hexdigest() != row["json_sha256"]):
            problems.append(f"{row['shard']}: {row['key']}.json differs from its checksum in manifest.parquet")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
