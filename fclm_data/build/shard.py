"""One output shard: build its planned samples and write them as a deterministic tar.

``build_shard`` is the unit of parallel work (one task per shard, any executor). It is a pure
function of its :class:`ShardTask`: tar headers carry no time, owner or order that could differ
between runs, so every executor and worker count writes identical bytes. The tar is written to
``<name>.tmp`` and renamed; the shard's ledger part is written after the rename, so a shard counts
as done only when both exist (a killed build never leaves a half shard that looks finished).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fclm_data.build.plan import PlannedSample
from fclm_data.errors import Reject, RejectRecord
from fclm_data.formats import FormatError
from fclm_data.formats import render as render_format
from fclm_data.schema import encode_sample, validate_sample
from fclm_data.sources import BuildOptions, Source, get_source
from fclm_data.visual_prompts import apply_visual_prompt

PARTS_DIR = ".parts"


@dataclass
class ShardTask:
    index: int
    out_dir: str
    data_root: str
    source_options: dict[str, dict[str, Any]]  #: entry label -> recipe options
    samples: list[PlannedSample]
    options: BuildOptions
    plan_fingerprint: str

    @property
    def name(self) -> str:
        return shard_name(self.index)


@dataclass
class ShardResult:
    index: int
    name: str
    plan_fingerprint: str
    samples: int = 0
    bytes: int = 0
    sha256: str | None = None
    rows: list[dict] = field(default_factory=list)  #: one per written sample (manifest rows)
    rejects: list[dict] = field(default_factory=list)  #: sample-stage rejects
    dropped: list[dict] = field(default_factory=list)  #: annotation-stage drops inside written samples
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  #: name -> {written, rejected}

    def to_json(self) -> str:
        # vars(), not dataclasses.asdict: asdict deep-copies every row (it was 40% of a shard's overhead)
        return json.dumps(vars(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ShardResult:
        return cls(**json.loads(text))


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def part_path(out_dir: Path, index: int) -> Path:
    return out_dir / PARTS_DIR / f"{shard_name(index)}.json"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_shard(task: ShardTask) -> ShardResult:
    """Build, validate and write every planned sample of one shard; never raises on bad input."""
    out_dir = Path(task.out_dir)
    sources: dict[str, Source] = {}
    result = ShardResult(task.index, task.name, task.plan_fingerprint)
    tmp = out_dir / f"{task.name}.tmp"
    with _HashingFile(tmp) as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for planned in task.samples:
            counts = result.per_source.setdefault(planned.entry, {"written": 0, "rejected": 0})
            if planned.entry not in sources:
                options = task.source_options[planned.entry]
                sources[planned.entry] = get_source(planned.source, task.data_root, **options)
            try:
                members, row, dropped = _build_one(sources[planned.entry], planned, task.options)
            except Reject as exc:
                result.rejects.append(_reject_dict(planned, exc))
                counts["rejected"] += 1
                continue
            row.update(shard=task.name, offset=tar.offset)
            for member_name, data in members:
                tar.addfile(_tarinfo(member_name, len(data)), io.BytesIO(data))
            row["size"] = tar.offset - row["offset"]
            result.rows.append(row)
            result.dropped.extend(dropped)
            counts["written"] += 1
    result.sha256, result.bytes = raw.digest.hexdigest(), raw.size
    return _finish(tmp, out_dir / task.name, result)


class _HashingFile:
    """Write-only file that hashes as it goes (saves re-reading the shard to checksum it)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def __enter__(self) -> _HashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _build_one(source: Source, planned: PlannedSample, options: BuildOptions):
    try:
        built = source.build(planned.unit, planned.key, planned.repeat, options)
    except Reject:
        raise
    except Exception as exc:  # a converter bug must not stop the build, nor lose the record silently
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise Reject("unexpected_error", f"{detail} (at {_last_frame(exc)})") from exc
    sample = apply_visual_prompt(built.sample, options.visual_prompt).to_dict()
    if options.format != "fclm":
        try:
            sample = render_format(sample, options.format, options.seed)
        except FormatError as exc:
            raise Reject("format_unsupported", f"{options.format}: {exc}") from exc
    problems = validate_sample(sample)
    if problems:
        raise Reject("invalid_sample", "; ".join(problems[:3]))
    members = [(f"{planned.key}.{built.image.ext}", built.image.data), (f"{planned.key}.json", encode_sample(sample))]
    row = {
        "key": planned.key,
        "entry": planned.entry,
        "source": planned.source,
        "task": sample["task"],
        "image_id": sample["provenance"]["image_id"],
        "image_ext": built.image.ext,
        "image_sha256": built.image.sha256,
        "num_regions": len(sample["regions"]),
        "templates": list(sample["templates"]),
    }
    if options.format == "mvplm":  # the build's category vocabulary (the loader's negative names)
        row["labels"] = sorted({w for turn in sample["format_fields"]["turns"] if turn["mode"] == "word"
                                for w in turn["words"]})  # fmt: skip
    dropped = [
        RejectRecord(
            planned.entry,
            f"{planned.key}: {record}",
            exc.file or planned.unit.file or None,
            exc.code,
            exc.detail,
            "annotation",
        ).to_dict()
        for record, exc in built.dropped
    ]
    return members, row, dropped


def _reject_dict(planned: PlannedSample, exc: Reject) -> dict:
    file = exc.file or planned.unit.file or None
    return RejectRecord(planned.entry, planned.key, file, exc.code, exc.detail, "sample").to_dict()


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def _finish(tmp: Path, final: Path, result: ShardResult) -> ShardResult:
    """Rename the finished tar into place (or drop it when empty), then write the ledger part."""
    if result.rows:
        result.samples = len(result.rows)
        os.replace(tmp, final)
    else:  # an empty tar would trip webdataset's empty_check; the ledger still records the shard
        tmp.unlink()
        final.unlink(missing_ok=True)
        result.sha256, result.bytes = None, 0
    part = part_path(final.parent, result.index)
    part.parent.mkdir(exist_ok=True)
    part_tmp = part.with_suffix(".tmp")
    part_tmp.write_text(result.to_json(), encoding="utf-8")
    os.replace(part_tmp, part)
    return result
