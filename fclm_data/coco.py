"""One reader for every COCO-style annotation file (RefCOCO ``instances.json``, PACO, VG, Pix2Cap, GranD-f).

The tables are read once, here, with the same rules for every source:

* ``images`` and ``annotations`` must be lists (``categories`` too when present); anything else
  makes the whole file one ``malformed_annotation`` reject.
* ids must be ints or strings. An ``images`` entry without a usable id cannot be referred to: it
  is an entry problem (:attr:`CocoFile.entry_rejects`), reported by the source as an index reject.
* **A duplicated id is ambiguous, never "the last one wins"**: every image whose id appears more
  than once is unusable, and so is every annotation looked up by a duplicated id
  (:meth:`CocoFile.image` / :meth:`CocoFile.annotation` raise ``duplicate_id``), so a sample can
  never get another image's pixels or another annotation's mask.
* an image's ``file_name``, ``height`` and ``width`` are checked when a record asks for them
  (:meth:`CocoFile.image_meta`): one bad entry costs the records that use it, not the file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fclm_data.errors import Reject
from fclm_data.images import safe_relpath
from fclm_data.jsonstream import Span, iter_json_members


def is_id(value: Any) -> bool:
    """COCO ids are ints or strings (bools are not ids; lists would not even hash)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


@dataclass
class CocoFile:
    rel: str  #: the file, relative to the data root (named by every reject)
    images: dict[Any, dict]  #: id -> raw entry, ids that appear exactly once
    annotations: list  #: raw entries in file order (sources validate each as a record)
    categories: dict[Any, str] = field(default_factory=dict)  #: id -> name (string names only)
    duplicate_images: dict[Any, int] = field(default_factory=dict)  #: id -> times it appears
    duplicate_annotations: dict[Any, int] = field(default_factory=dict)
    #: (record label, reject) for entries that cannot be referred to (no usable id)
    entry_rejects: list[tuple[str, Reject]] = field(default_factory=list)
    #: the file's other top-level members (``part_categories``, ...), filled by :func:`read_coco_tables`
    others: dict[str, Any] = field(default_factory=dict)
    _by_ann_id: dict[Any, dict] | None = None

    def image(self, image_id: Any) -> dict:
        """The raw ``images`` entry of ``image_id``; raises when it is missing or ambiguous."""
        if is_id(image_id) and image_id in self.images:
            return self.images[image_id]
        if is_id(image_id) and image_id in self.duplicate_images:
            n = self.duplicate_images[image_id]
            raise Reject("duplicate_id", f"image id {image_id!r} appears {n} times in {self.rel} 'images'", self.rel)
        raise Reject("malformed_annotation", f"image_id {str(image_id)[:40]!r} is not in {self.rel} 'images'", self.rel)

    def image_meta(self, image_id: Any, check_name: bool = True) -> dict:
        """``{id, file_name, height, width}`` of an image, each field checked (``file_name`` made safe)."""
        entry = self.image(image_id)
        try:
            height, width = _positive_int(entry.get("height")), _positive_int(entry.get("width"))
        except (TypeError, ValueError) as exc:
            raise Reject("malformed_annotation", f"{self.rel} image {image_id}: height/width {exc}", self.rel) from exc
        name = entry.get("file_name")
        if check_name:
            name = safe_relpath(name)
        elif not isinstance(name, str) or not name:
            raise Reject("malformed_annotation", f"{self.rel} image {image_id} has no file_name", self.rel)
        return {"id": image_id, "file_name": name, "height": height, "width": width}

    def annotation(self, ann_id: Any) -> dict:
        """The annotation with id ``ann_id``; raises when it is missing or its id is ambiguous."""
        if self._by_ann_id is None:
            self._by_ann_id = {a["id"]: a for a in self.annotations if isinstance(a, dict) and is_id(a.get("id"))}
        if is_id(ann_id) and ann_id in self.duplicate_annotations:
            n = self.duplicate_annotations[ann_id]
            raise Reject("duplicate_id", f"annotation id {ann_id!r} appears {n} times in {self.rel}", self.rel)
        if is_id(ann_id) and ann_id in self._by_ann_id:
            return self._by_ann_id[ann_id]
        raise Reject("malformed_annotation", f"ann_id {str(ann_id)[:40]!r} is not in {self.rel}", self.rel)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r:.40} is not a number")
    number = int(value)  # strings in places (Flickr30K-GCG); ValueError for "abc"
    if number <= 0 or number != float(value):
        raise ValueError(f"{value!r:.40} is not a positive integer")
    return number


def parse_coco(data: Any, rel: str, require: tuple[str, ...] = ("images", "annotations")) -> CocoFile:
    """The tables of a parsed COCO-style JSON (see the module docstring for the rules)."""
    if not isinstance(data, dict):
        raise Reject("malformed_annotation", f"{rel} holds a {type(data).__name__}, not a COCO dict", rel)
    if not all(isinstance(data.get(key), list) for key in require):
        raise _lacks(rel, require)
    for key in ("images", "annotations", "categories"):
        if key in data and data[key] is not None and not isinstance(data[key], list):
            raise Reject("malformed_annotation", f"{rel} '{key}' is a {type(data[key]).__name__}, not a list", rel)
    coco = CocoFile(rel, {}, data.get("annotations") or [])
    entries = [(image.get("id") if isinstance(image, dict) else None, image) for image in data.get("images") or []]
    _fill_image_table(rel, entries, coco.images, coco.duplicate_images, coco.entry_rejects)
    ann_counts = Counter(a.get("id") for a in coco.annotations if isinstance(a, dict) and is_id(a.get("id")))
    coco.duplicate_annotations = {k: n for k, n in ann_counts.items() if n > 1}
    coco.categories = names_of(data.get("categories") or [])
    return coco


def names_of(categories: list) -> dict[Any, str]:
    """Category id -> name for entries with an id and a string name."""
    return {
        c["id"]: c["name"]
        for c in categories
        if isinstance(c, dict) and is_id(c.get("id")) and isinstance(c.get("name"), str)
    }


@dataclass
class CocoSpans:
    """A COCO-style file read by streaming (:mod:`fclm_data.jsonstream`), for releases too large to hold parsed.

    The same rules as :func:`parse_coco` (lists required, an id repeated is ambiguous, an entry
    without an id is an entry reject), but entries are kept as (offset, length) byte spans to
    re-read (:class:`~fclm_data.jsonstream.SpanReader`); an annotation keeps only its ids.
    """

    rel: str
    images: dict[Any, tuple[int, int]]  #: id -> span of the entry, ids that appear exactly once
    #: (id, image_id, span) per ``annotations`` entry in file order; ids are None for an entry that is not a dict
    annotations: list[tuple[Any, Any, tuple[int, int]]]
    duplicate_images: dict[Any, int] = field(default_factory=dict)
    entry_rejects: list[tuple[str, Reject]] = field(default_factory=list)


def stream_coco(root: Path, rel: str, require: tuple[str, ...] = ("images", "annotations")) -> CocoSpans:
    """Stream ``root/rel`` into a :class:`CocoSpans`; a file-level problem is one ``malformed_annotation``."""
    tables = ("images", "annotations", "categories")
    kinds: dict[str, str] = {}  #: top-level key -> type name of its value ("list" when streamed)
    image_ids: list[tuple[Any, tuple[int, int]]] = []
    coco = CocoSpans(rel, {}, [])
    for m in iter_json_members(root / rel, rel, set(tables)):
        kinds[m.key] = "list" if m.index is not None else type(m.value).__name__
        span = (m.offset, m.length)
        if m.index is None:
            continue
        if m.key == "images":
            image_ids.append((m.value.get("id") if isinstance(m.value, dict) else None, span))
        elif m.key == "annotations":
            ann = m.value if isinstance(m.value, dict) else {}
            coco.annotations.append((ann.get("id"), ann.get("image_id"), span))
    if not all(kinds.get(key) == "list" for key in require):
        raise _lacks(rel, require)
    for key in tables:
        if kinds.get(key, "list") not in ("list", "NoneType"):
            raise Reject("malformed_annotation", f"{rel} '{key}' is a {kinds[key]}, not a list", rel)
    _fill_image_table(rel, image_ids, coco.images, coco.duplicate_images, coco.entry_rejects)
    return coco


def _lacks(rel: str, require: tuple[str, ...]) -> Reject:
    what = f"an '{require[0]}' list" if len(require) == 1 else "/".join(f"'{k}'" for k in require) + " lists"
    return Reject("malformed_annotation", f"{rel} lacks {what}", rel)


def _fill_image_table(rel: str, entries: list[tuple[Any, Any]], images: dict, duplicates: dict, rejects: list) -> None:
    """The ``images`` rules of both readers over (id, entry or span) in file order: an id that appears once is
    kept, a repeated one is ambiguous (counted), an entry without an int/str id is an entry reject."""
    counts = Counter(image_id for image_id, _ in entries if is_id(image_id))
    for position, (image_id, value) in enumerate(entries):
        if not is_id(image_id):
            problem = Reject("malformed_annotation", f"{rel} images[{position}] has no int/str 'id'", rel)
            rejects.append((f"image #{position}", problem))
        elif counts[image_id] > 1:
            duplicates[image_id] = counts[image_id]
        else:
            images[image_id] = value


def read_coco_tables(
    root: Path, rel: str, require: tuple[str, ...] = ("images", "annotations"), ann_fields: tuple[str, ...] = ()
) -> CocoFile:
    """:func:`read_coco` for files too large to hold parsed: the file is streamed, and the :class:`CocoFile`
    has every table but ``annotations``, which keeps only ``ann_fields`` of each entry (so that
    :meth:`CocoFile.annotation` works on them); :func:`iter_coco_annotations` streams the entries themselves.
    """
    data: dict[str, Any] = {}
    streamed: dict[str, list] = {"images": [], "annotations": [], "categories": []}
    for m in iter_json_members(root / rel, rel, set(streamed)):
        if m.index is None:
            data[m.key] = m.value  # a table read whole (an empty or non-list one) or any other member
        elif m.key == "annotations":
            if ann_fields:  # else nothing: the annotations are only streamed (``iter_coco_annotations``)
                ann = m.value
                light = {k: ann[k] for k in ann_fields if k in ann} if isinstance(ann, dict) else None
                streamed["annotations"].append(light)
        else:
            streamed[m.key].append(m.value)
        if m.index == 0:
            data[m.key] = streamed[m.key]
    coco = parse_coco(data, rel, require)
    coco.others = {k: v for k, v in data.items() if k not in streamed}
    return coco


def annotation_label(ann: Any, position: int) -> Any:
    """How a reject names a streamed annotation: its id, or ``#position`` when it has no usable one."""
    ann_id = ann.get("id", f"#{position}") if isinstance(ann, dict) else f"#{position}"
    return ann_id if is_id(ann_id) else f"#{position}"


def iter_coco_annotations(root: Path, rel: str) -> Iterator[Span]:
    """(offset, length, entry) per ``annotations`` entry, in file order (the file's second pass)."""
    for m in iter_json_members(root / rel, rel, {"images", "annotations", "categories"}):
        if m.key == "annotations" and m.index is not None:
            yield Span(m.offset, m.length, m.value)


def read_coco(root: Path, rel: str, require: tuple[str, ...] = ("images", "annotations")) -> CocoFile:
    """Load and parse ``root/rel`` (a parse failure is one ``malformed_annotation`` reject naming it)."""
    from fclm_data.sources.base import load_json_file

    return parse_coco(load_json_file(root, rel), rel, require)
