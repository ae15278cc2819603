"""One output shard: build its planned samples and write them as a deterministic tar.

``build_shard`` is the unit of parallel work (one task per shard, any executor). It is a pure
function of its :class:`ShardTask`: tar headers carry no time, owner or order that could differ
between runs, so every executor and worker count writes identical bytes. The tar is written to
``<name>.tmp`` and renamed; the shard's ledger part is written after the rename, so a shard counts
as done only when both exist (a killed build never leaves a half shard that looks finished).
"""

from __future__ import annotations

import hashlib
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
from fclm_data.images import trust_roots
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
    #: sample key -> why: records that killed their build process twice (rejected, not built)
    crashed: dict[str, str] = field(default_factory=dict)

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


def journal_path(out_dir: Path, index: int) -> Path:
    """The key of each record as its build starts: names the culprit when the process dies."""
    return out_dir / PARTS_DIR / f"{shard_name(index)}.journal"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarWriter:
    """Writes exactly what ``tarfile.open(mode="w", format=PAX_FORMAT).addfile(_tarinfo(...))`` writes.

    tarfile builds every header field by field and copies data in 16 KiB pieces (~0.4 ms per
    sample, a tenth of a build); our members (short ASCII names, fixed mode/owner/time) differ
    only in name, size and checksum, so those are patched into one template header. Other names
    go through tarfile's own header code. ``tests/data/test_reliability.py`` pins the bytes.
    """

    _TEMPLATE = _tarinfo("x", 0).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.offset = 0

    def add(self, name: str, data: bytes) -> None:
        encoded = name.encode("utf-8", "surrogateescape")
        if len(encoded) <= 100 and name.isascii() and len(data) < 8**11:
            header = bytearray(self._TEMPLATE)
            header[0:100] = encoded.ljust(100, b"\0")
            header[124:136] = b"%011o\0" % len(data)
            header[148:156] = b"        "
            header[148:155] = b"%06o\0" % sum(header)
        else:
            header = _tarinfo(name, len(data)).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        padding = -len(data) % tarfile.BLOCKSIZE
        self.raw.write(bytes(header))
        self.raw.write(data)
        if padding:
            self.raw.write(b"\0" * padding)
        self.offset += len(header) + len(data) + padding

    def close(self) -> None:
        """End-of-archive blocks and record padding, as ``TarFile.close``."""
        self.raw.write(b"\0" * (2 * tarfile.BLOCKSIZE))
        self.offset += 2 * tarfile.BLOCKSIZE
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self.raw.write(b"\0" * (tarfile.RECORDSIZE - remainder))

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_shard(task: ShardTask) -> ShardResult:
    """Build, validate and write every planned sample of one shard; never raises on bad input."""
    out_dir = Path(task.out_dir)
    sources: dict[str, Source] = {}
    result = ShardResult(task.index, task.name, task.plan_fingerprint)
    tmp = out_dir / f"{task.name}.tmp"
    trust_roots(Path(task.data_root), task.options.link_roots)
    journal = _Journal(journal_path(out_dir, task.index))
    with _HashingFile(tmp) as raw, TarWriter(raw) as tar:
        for planned in task.samples:
            counts = result.per_source.setdefault(planned.entry, {"written": 0, "rejected": 0})
            try:
                if planned.key in task.crashed:
                    raise Reject("worker_crashed", task.crashed[planned.key])
                journal.starting(planned.key)
                if planned.entry not in sources:
                    options = task.source_options[planned.entry]
                    sources[planned.entry] = get_source(planned.source, task.data_root, **options)
                members, row, dropped = _build_one(sources[planned.entry], planned, task.options)
            except Reject as exc:
                result.rejects.append(_reject_dict(planned, exc))
                counts["rejected"] += 1
                continue
            row.update(shard=task.name, offset=tar.offset)
            for member_name, data in members:
                tar.add(member_name, data)
            row["size"] = tar.offset - row["offset"]
            result.rows.append(row)
            result.dropped.extend(dropped)
            counts["written"] += 1
    result.sha256, result.bytes = raw.digest.hexdigest(), raw.size
    finished = _finish(tmp, out_dir / task.name, result)
    journal.close()
    return finished


class _Journal:
    """Append-only, unbuffered: a record's key reaches the kernel before its build starts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def starting(self, key: str) -> None:
        os.write(self._fd, key.encode() + b"\n")

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


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
    """Everything one record goes through before its bytes hit the tar; any failure is its reject."""
    try:
        return _convert(source, planned, options)
    except Reject:
        raise
    except UnicodeEncodeError as exc:  # e.g. a lone surrogate in a caption: the JSON cannot be UTF-8
        raise Reject("bad_text", f"text cannot be encoded as UTF-8 ({exc.reason} at position {exc.start})") from exc
    except Exception as exc:  # a converter bug must not stop the build, nor lose the record silently
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise Reject("unexpected_error", f"{detail} (at {_last_frame(exc)})") from exc


def _convert(source: Source, planned: PlannedSample, options: BuildOptions):
    built = source.build(planned.unit, planned.key, planned.repeat, options)
    sample = apply_visual_prompt(built.sample, options.visual_prompt).to_dict()
    if options.format != "fclm":
        try:
            sample = render_format(sample, options.format, options.seed)
        except FormatError as exc:
            raise Reject("format_unsupported", f"{options.format}: {exc}") from exc
    problems = validate_sample(sample)
    if problems:
        raise Reject("invalid_sample", "; ".join(problems[:3]))
    encoded = encode_sample(sample)
    members = [(f"{planned.key}.{built.image.ext}", built.image.data), (f"{planned.key}.json", encoded)]
    row = {
        "key": planned.key,
        "entry": planned.entry,
        "source": planned.source,
        "task": sample["task"],
        "image_id": sample["provenance"]["image_id"],
        "image_ext": built.image.ext,
        "image_sha256": built.image.sha256,
        "json_sha256": hashlib.sha256(encoded).hexdigest(),
        "exif_orientation": built.image.exif_orientation,
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
