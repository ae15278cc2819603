"""The Source contract: list a release's records cheaply, then build one sample per unit.

A build has two phases, so that planning is cheap and building parallelises by shard:

1. ``index()`` (driver): read the release's annotation files, validate records, and return
   :class:`Unit` s — small picklable descriptions of what one sample needs (ids, polygons, tar
   offsets) in a deterministic order. Records that cannot form a unit are index-stage rejects.
2. ``build(unit, ...)`` (any worker): read the image, convert masks, render the conversation from
   templates, and return a :class:`Built` sample, or raise :class:`~fclm_data.errors.Reject`.

Sources are dataclasses whose fields are their options (paths relative to the data root, split,
caps); recipes override them by name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fclm_data.errors import Reject, RejectRecord
from fclm_data.images import DEFAULT_MAX_PIXELS, ImageData, ImageLocation, read_first_image, safe_relpath
from fclm_data.schema import ImageInfo, Provenance, Region, Sample, Turn, View


@dataclass(frozen=True, slots=True)
class Unit:
    """What one sample needs, minus the image bytes; ``uid`` is unique within the source.

    Slotted: an index holds one per sample (hundreds of thousands), and a ``__dict__`` each would
    cost ~290 bytes more per unit than the slots do.
    """

    uid: str  #: key-safe ([A-Za-z0-9_-]); the sample key is "<source>-<uid>[-r<repeat>]"
    payload: Any  #: plain data only (pickled to workers)
    image_ref: str = ""  #: the release's image identity (for leakage reports and grouping)
    file: str = ""  #: annotation file the record came from; named by rejects that name no other file


@dataclass
class IndexResult:
    units: list[Unit]
    rejects: list[RejectRecord] = field(default_factory=list)  #: records that could not form units
    missing: list[str] = field(default_factory=list)  #: required paths absent under the data root

    @property
    def records(self) -> int:
        """Input records seen: usable units plus index-stage rejects."""
        return len(self.units) + len(self.rejects)


@dataclass(frozen=True)
class BuildOptions:
    """Build-wide settings every source's ``build`` receives."""

    seed: int = 0
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    visual_prompt: str = "mask"
    image_check: str = "decode"  #: "decode" (strict 1/8-scale libjpeg-turbo decode) | "markers" (structure only)
    #: real paths symlinks under the data root may lead into (computed by the build; not in the fingerprint)
    link_roots: tuple[str, ...] = ()
    format: str = "fclm"  #: sample format: fclm | refvlm | mvplm (``fclm_data.formats``)


@dataclass
class Built:
    sample: Sample
    image: ImageData
    #: annotation-level drops inside a written sample (e.g. one bad ref of an image): (record, Reject)
    dropped: list[tuple[str, Reject]] = field(default_factory=list)


@dataclass
class Source:
    """Base class; subclasses set ``name``/``task`` via the registry and implement the two phases."""

    data_root: Path
    name: ClassVar[str] = ""
    task: ClassVar[str] = ""

    def required_paths(self) -> list[str]:
        """Paths (relative to the data root) that must exist for ``index`` to find anything."""
        raise NotImplementedError

    def missing_paths(self) -> list[str]:
        return [p for p in self.required_paths() if not (self.data_root / p).exists()]

    def index(self) -> IndexResult:
        raise NotImplementedError

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        raise NotImplementedError

    def payload_of(self, unit: Unit) -> Any:
        """What ``build`` works from: ``unit.payload``, or, for sources whose units keep only a record's
        byte span (large releases: memory stays flat while indexing), the payload re-derived from it."""
        return unit.payload

    def image_candidates(self, unit: Unit) -> list[str]:
        """Paths (relative to the data root) where the unit's image may be, in the order tried."""
        return []

    def image_identity(self, unit: Unit) -> int | None:
        """The COCO id of the unit's image when the source knows it without a COCO path (else None)."""
        return None

    def read_unit_image(self, unit: Unit, options: BuildOptions) -> ImageData:
        """The unit's image, read and checked (the first candidate that exists)."""
        return read_first_image(
            self.data_root, self.image_candidates(unit), options.max_image_pixels, options.image_check
        )

    def image_location(self, unit: Unit) -> ImageLocation | None:
        """Where the unit's image is, without reading it (train/eval leakage checks)."""
        for rel in self.image_candidates(unit):
            try:
                path = self.data_root / safe_relpath(rel)
            except Reject:
                return None
            if path.is_file():
                return ImageLocation(safe_relpath(rel), None, path.stat().st_size)
        return None

    def new_sample(
        self,
        *,
        key: str,
        image: ImageData,
        provenance: Provenance,
        regions: list[Region],
        conversations: list[Turn],
        region_inputs: list[int],
        seg_targets: list[int],
        templates: list[str],
        pair: View | None = None,
    ) -> Sample:
        """A sample of this source on ``image``: the fields every source fills the same way are filled here.

        ``visual_prompt`` is left at ``mask``: the builder applies the build's variant to every sample.
        """
        return Sample(
            key=key,
            source=self.name,
            task=self.task,
            provenance=provenance,
            image=ImageInfo(image.file_name, image.width, image.height, image.sha256),
            regions=regions,
            conversations=conversations,
            region_inputs=region_inputs,
            seg_targets=seg_targets,
            pair=pair,
            templates=templates,
        )

    def load_index_file(self, rel: str, result: IndexResult, expect: type | None = None) -> Any:
        """An annotation file for ``index()``, or None after recording why it is unusable.

        A missing file is already listed in ``result.missing``; a malformed one (or one that is not
        an ``expect`` at top level) becomes a single reject naming the file, never an exception.
        """
        if rel in result.missing:
            return None
        try:
            data = load_json_file(self.data_root, rel)
            if expect is not None and not isinstance(data, expect):
                detail = f"{rel} holds a {type(data).__name__}, not a {expect.__name__}"
                raise Reject("malformed_annotation", detail, rel)
        except Reject as exc:
            result.rejects.append(self.reject(rel, exc, file=rel))
            return None
        return data

    def reject(self, record: str, exc: Reject, stage: str = "index", file: str | None = None) -> RejectRecord:
        return RejectRecord(self.name, record, exc.file or file, exc.code, exc.detail, stage)

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "data_root"]


def load_json_file(root: Path, rel: str) -> Any:
    """Parse an annotation JSON; a parse failure is a ``malformed_annotation`` naming the file.

    Some releases (ReasonSeg) ship cp1252 files, so undecodable UTF-8 is retried as cp1252.
    """
    path = root / rel
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise Reject("missing_file", f"{rel} does not exist under the data root", rel) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise Reject("malformed_annotation", f"{rel}: neither UTF-8 nor cp1252 text", rel) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Reject(
            "malformed_annotation", f"{rel}: invalid JSON at line {exc.lineno} col {exc.colno}: {exc.msg}", rel
        ) from exc
