"""Train/eval leakage: which training images also appear in evaluation splits.

Two kinds of identity, both computed without building anything:

* **COCO id** -- COCO train2014, train2017 and val2017 share ids (RefCOCO's val/test images are COCO
  train2014 images, and they reappear in COCO-2017-based sets such as MUSE, Osprey, PACO, OpenPSG and
  COCO-Stuff). An image counts as COCO when its path lies under ``coco/`` or its name is
  ``COCO_<split>_<12 digits>``; a source may also declare COCO ids itself (``Source.image_identity``).
* **content** -- exact duplicates by SHA-256 of the bytes. Every evaluation image is hashed; a training
  image is read and hashed only when its byte size equals some evaluation image's size, so the report
  costs one ``stat`` per training image plus a read of the few candidates.

``find_leaks`` reports per training entry; ``fclm-data build --exclude-eval`` drops the same units
before sampling and counts them in the ledger (``excluded_eval``, reason ``eval_overlap``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fclm_data.images import ImageLocation, coco_image_id, read_range, safe_relpath
from fclm_data.recipes import Recipe
from fclm_data.sources import Source, Unit, get_source


@dataclass
class EvalImages:
    """Identities of every image of the evaluation recipes, with the entries that use each."""

    by_coco: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    by_sha: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    sizes: set[int] = field(default_factory=set)
    entries: list[str] = field(default_factory=list)
    unreadable: int = 0  #: evaluation units whose image could not be located (not hashed)

    def match(self, coco: int | None, sha: str | None) -> tuple[str, set[str]] | None:
        """(reason, eval entries) when an identity is in the evaluation set."""
        if coco is not None and coco in self.by_coco:
            return "coco_id", self.by_coco[coco]
        if sha is not None and sha in self.by_sha:
            return "content", self.by_sha[sha]
        return None


@dataclass
class Leak:
    uid: str
    image: str  #: "coco:<id>" or the image path
    reason: str  #: "coco_id" | "content"
    eval_entries: list[str]


@dataclass
class EntryLeaks:
    entry: str
    source: str
    units: int  #: training units checked
    leaks: list[Leak] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        return sorted({leak.image for leak in self.leaks})

    def to_dict(self) -> dict:
        by_reason: dict[str, int] = defaultdict(int)
        for leak in self.leaks:
            by_reason[leak.reason] += 1
        return {
            "entry": self.entry,
            "source": self.source,
            "units": self.units,
            "leaking_units": len(self.leaks),
            "leaking_images": len(self.images),
            "by_reason": dict(sorted(by_reason.items())),
            "images": self.images,
            "eval_entries": sorted({e for leak in self.leaks for e in leak.eval_entries}),
        }


def image_identity(source: Source, unit: Unit, location: ImageLocation | None) -> int | None:
    """The COCO id of a unit's image, when it is a COCO image."""
    declared = source.image_identity(unit)
    if declared is not None:
        return declared
    if location is None:
        return None
    path = location.path
    if path.startswith("coco/") or path.rsplit("/", 1)[-1].startswith("COCO_"):
        return coco_image_id(path)
    return None


def _read(root: Path, location: ImageLocation) -> bytes | None:
    path = root / safe_relpath(location.path)
    try:
        if location.offset is None:
            return path.read_bytes()
        return read_range(path, location.offset, location.size or 0)
    except Exception:  # a missing or cut file: the build will reject it; here it simply cannot match
        return None


def collect_eval_images(recipes: list[Recipe], data_root: Path) -> EvalImages:
    """Index every evaluation entry and hash its images."""
    found = EvalImages()
    seen: dict[tuple, str | None] = {}
    for recipe in recipes:
        for entry in recipe.entries:
            found.entries.append(entry.label)
            source = get_source(entry.source, data_root, **entry.options)
            for unit in source.index().units:
                location = source.image_location(unit)
                coco = image_identity(source, unit, location)
                if coco is not None:
                    found.by_coco[coco].add(entry.label)
                if location is None:
                    found.unreadable += 1
                    continue
                key = (location.path, location.offset)
                if key not in seen:
                    data = _read(data_root, location)
                    seen[key] = hashlib.sha256(data).hexdigest() if data is not None else None
                    if data is not None:
                        found.sizes.add(len(data))
                if seen[key] is not None:
                    found.by_sha[seen[key]].add(entry.label)
    return found


class LeakFinder:
    """Checks training units against the evaluation images; hashes only size-matching candidates."""

    def __init__(self, eval_images: EvalImages, data_root: Path) -> None:
        self.eval = eval_images
        self.root = data_root
        self._sha: dict[tuple, str | None] = {}

    def check(self, source: Source, unit: Unit) -> Leak | None:
        location = source.image_location(unit)
        coco = image_identity(source, unit, location)
        sha = None
        if (coco is None or coco not in self.eval.by_coco) and location is not None:
            if location.size in self.eval.sizes:
                sha = self._hash(location)
        hit = self.eval.match(coco, sha)
        if hit is None:
            return None
        image = (
            f"coco:{coco}"
            if hit[0] == "coco_id"
            else location.path + (f"#{location.offset}" if location.offset else "")
        )
        return Leak(unit.uid, image, hit[0], sorted(hit[1]))

    def _hash(self, location: ImageLocation) -> str | None:
        key = (location.path, location.offset)
        if key not in self._sha:
            data = _read(self.root, location)
            self._sha[key] = hashlib.sha256(data).hexdigest() if data is not None else None
        return self._sha[key]


def find_leaks(train: Recipe, eval_recipes: list[Recipe], data_root: Path) -> list[EntryLeaks]:
    """Per training entry, every unit whose image is in an evaluation split (all units, before sampling)."""
    finder = LeakFinder(collect_eval_images(eval_recipes, data_root), data_root)
    report = []
    for entry in train.entries:
        source = get_source(entry.source, data_root, **entry.options)
        units = source.index().units
        leaks = [leak for unit in units if (leak := finder.check(source, unit)) is not None]
        report.append(EntryLeaks(entry.label, entry.source, len(units), leaks))
    return report
