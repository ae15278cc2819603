"""RefCOCOg-GCG (GLaMM's GranD-f release): RefCOCOg referring expressions grounded in a caption.

Layout: ``GranDf/annotations/train/RefCOCOg_GCG_{train,val}.json``, images
``coco/train2014/COCO_train2014_%012d.jpg`` (GLaMM: ``coco_2014/train2014``; an option).

The file is a JSON list of single-key dicts ``{"<id>": {refs: [{sentence, bbox, segmentation:
[[polygon], ...]}], img_file_name, caption}}``. A dict with several keys yields one record per key
(GLaMM reads only the first); an already flattened record (``refs`` at top level, as Sa2VA makes
them) is accepted too. The record has no offsets: each ref's ``sentence`` is located in the caption.

GLaMM lowercases the caption, keeps refs whose ``sentence.lower()`` occurs in it, but takes the
offset with ``caption.find(sentence)`` on the original-case sentence: -1 for any sentence with a
capital, so such phrases are mis-tagged. We locate sentences case-insensitively (and across
whitespace runs) in the original caption, longest sentence first, each ref claiming the first
occurrence that no other ref holds; a ref that does not occur, or occurs only inside a longer
claimed phrase, is dropped with ``bad_text``. The polygons of a ref are unioned (GLaMM rasterises
them one by one and sums). The answer keeps the caption's case unless ``lowercase_caption``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fclm_data.errors import Reject
from fclm_data.images import safe_relpath
from fclm_data.sources import register_source
from fclm_data.sources.base import IndexResult, Unit
from fclm_data.sources.gcg import (
    TABLE7_GCG,
    GcgSource,
    check_caption,
    coco_id,
    drop_row,
    find_phrase,
    key_safe,
    segmentation_list,
    unique_uid,
)  # fmt: skip


@dataclass
class RefCocogGcgSource(GcgSource):
    ann_file: str = "GranDf/annotations/train/RefCOCOg_GCG_{split}.json"
    image_dir: str = "coco/train2014"
    #: write the answer in lower case, as GLaMM does (it lowercases the caption it tags)
    lowercase_caption: bool = False

    def index(self) -> IndexResult:
        """Stream the file: units keep their entry's byte span (and which of its keys), ``build`` re-reads it."""
        result = IndexResult([], [], self.missing_paths())
        seen: dict[str, int] = {}
        for position, span in self._stream(result):
            for k, (record_id, record) in enumerate(_entry_records(position, span.value)):
                label = f"record {record_id}"
                try:
                    payload = self._payload(record, label)
                except Reject as exc:
                    result.rejects.append(self.reject(label, exc, file=self.ann_path))
                    continue
                uid = unique_uid(key_safe(f"{self.split}-{record_id}"), seen)
                slim = {"record": position, "key": k, "offset": span.offset, "length": span.length,
                        "images": payload["images"]}  # fmt: skip
                result.units.append(Unit(uid, slim, payload["image_id"]))
        result.units.sort(key=lambda u: u.uid)
        return result

    def payload_of(self, unit: Unit) -> dict:
        p = unit.payload
        record_id, record = list(_entry_records(p["record"], self.read_span(p)))[p["key"]]
        return self._payload(record, f"record {record_id}")

    def _payload(self, record: Any, label: str) -> dict:
        if not isinstance(record, dict) or not isinstance(record.get("refs"), list):
            raise Reject("malformed_annotation", "record is not a dict with a 'refs' list")
        file_name = safe_relpath(record.get("img_file_name"), "img_file_name")
        caption = check_caption(record.get("caption"))
        phrases, drops = _locate_refs(record["refs"], caption, label)
        if not phrases:
            reasons = "; ".join(d[2] for d in drops) or "refs is empty"
            raise Reject("no_regions", f"no ref is grounded in the caption ({reasons})")
        number = coco_id(file_name)
        return {
            "images": [f"{self.image_root}/{file_name}"],
            "size": None,  # the release has no image size: the image's own is used
            "image_id": str(number) if number is not None else PurePosixPath(file_name).stem,
            "caption": caption,
            "phrases": phrases,
            "drops": drops,
        }

    def _display_caption(self, caption: str) -> str:
        if not self.lowercase_caption:
            return caption
        return "".join(c.lower() if len(c.lower()) == 1 else c for c in caption)  # keeps every offset valid


def _entry_records(position: int, entry: Any) -> Iterator[tuple[str, Any]]:
    """(id, record) for one entry of the file: each key of a single-key dict, or a flattened record."""
    if isinstance(entry, dict) and "refs" in entry:
        yield str(entry.get("id", f"#{position}")), entry
    elif isinstance(entry, dict) and entry:
        yield from ((str(k), v) for k, v in entry.items())
    else:
        yield f"#{position}", entry


def _locate_refs(refs: list, caption: str, label: str) -> tuple[list[dict], list[list[str]]]:
    """Give every ref a span of its sentence; longer sentences claim their occurrence first."""
    drops: list[list[str]] = []
    candidates = []
    for i, ref in enumerate(refs):
        ann = _ref_id(ref, i)
        try:
            if not isinstance(ref, dict) or not isinstance(ref.get("sentence"), str) or not ref["sentence"].strip():
                raise Reject("bad_text", "ref has no sentence")
            segs = segmentation_list(ref.get("segmentation"), "segmentation")
        except Reject as exc:
            drops.append(drop_row(f"{label} {ann}", exc))
            continue
        if isinstance(segs[0], (int, float)):  # a single flat polygon instead of a list of polygons
            segs = [segs]
        candidates.append((i, ann, ref["sentence"].strip(), segs))
    claimed: list[tuple[int, int]] = []
    phrases = []
    for i, ann, sentence, segs in sorted(candidates, key=lambda c: (-len(c[2]), c[0])):
        occurrences = find_phrase(caption, sentence)
        free = [o for o in occurrences if all(o[1] <= s or e <= o[0] for s, e in claimed)]
        if not free:
            why = "does not occur in the caption" if not occurrences else "occurs only inside longer grounded phrases"
            drops.append(drop_row(f"{label} {ann}", Reject("bad_text", f"sentence {sentence!r} {why}")))
            continue
        claimed.append(free[0])
        # each polygon becomes a segmentation of its own (GLaMM: frPyObjects([seg]) one by one, summed)
        segs = [[poly] if _is_polygon(poly) else poly for poly in segs]
        phrases.append({"ann": ann, "span": list(free[0]), "segs": segs})
    return sorted(phrases, key=lambda p: p["span"][0]), drops


def _is_polygon(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, (int, float)) for v in value)


def _ref_id(ref: Any, position: int) -> str:
    """The ref's release id when it has one (the documented format has none), else its position."""
    if isinstance(ref, dict):
        for key, prefix in (("ann_id", "ann"), ("ref_id", "ref"), ("id", "ref")):
            if ref.get(key) is not None:
                return f"{prefix}{ref[key]}"
    return f"ref#{position}"


register_source(
    "refcocog_gcg", RefCocogGcgSource, "RefCOCOg GCG (GLaMM's GranD-f release) on COCO train2014",
    f"{TABLE7_GCG}: RefCOCOg 19,327",
)  # fmt: skip
