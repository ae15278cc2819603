"""Grounded conversation generation (GCG): GranD-f, OpenPSG-GCG and RefCOCOg-GCG (GLaMM's release).

Layout under ``--data-root`` (GLaMM docs/datasets.md; every path is an option):

* ``GranDf/annotations/train/GranDf_HA_GCG_train.json``, images ``GranDf_HA_images/train/sa_<id>.jpg``
* ``GranDf/annotations/train/OpenPsgGCG_{train,val}.json``, images ``coco/train2017/%012d.jpg`` (both splits)
* ``GranDf/annotations/train/RefCOCOg_GCG_{train,val}.json``, images ``coco/train2014/COCO_train2014_%012d.jpg``

(Flickr30K-GCG lives in :mod:`gcg_flickr`, the GranD-f val/test GT in :mod:`gcg_eval`.)

GranD-f and OpenPSG are JSON lists of ``{file_name, caption, groundings: {phrase: {token_positives:
[start, end], rle_masks: [RLE, ...]}}}`` (+ ``height``/``width``/``image_id`` when present).
RefCOCOg-GCG is a list of single-key dicts ``{"<id>": {refs: [{sentence, bbox, segmentation}],
img_file_name, caption}}``.

One sample per record (Table 7 counts records): the user asks one of GLaMM's GCG questions, the
assistant answers with the caption in which every grounded phrase is written
``<p> phrase </p> [SEG]`` (GLaMM's target format); ``seg_targets`` index the phrases' regions in
caption order, one region per phrase (the union of all its masks).

Decisions (documented choices):

* Captions are stripped exactly as GLaMM does (``caption.strip('"').strip()``) BEFORE offsets apply.
* Given offsets are checked: ``caption[start:end]`` must equal the phrase up to case and whitespace.
  A span padded with whitespace is trimmed; an offset that does not match is repaired to the
  phrase's occurrence nearest to it; a phrase absent from the caption is dropped (``bad_text``).
* Overlapping spans cannot both be tagged (``<p>`` does not nest): the longer phrase is kept
  (ties: the earlier one) and the other is dropped with ``bad_text``, in every source. GLaMM's
  GranD-f/OpenPSG loader tags overlapping spans as they come (garbling the answer); its
  RefCOCOg-GCG loader trims the earlier span (``end = next start - 1``), which truncates the
  phrase and also cuts the last character of a phrase merely adjacent to the next one.
* A null grounding (Sa2VA skips them) is dropped with ``no_regions``; a phrase whose masks fail
  (wrong RLE size, empty, bad polygon) is dropped with that reason. A record with no phrase left
  is rejected with ``no_regions``. Drops are reported once per record (on repetition 0).
* RefCOCOg-GCG: GLaMM lowercases the caption and then searches it with the original-case phrase,
  so a phrase with a capital gets offset -1. We search case-insensitively on the original caption,
  longest phrase first, each ref claiming the first occurrence no other ref holds (two refs with
  the same sentence get its two occurrences). The answer keeps the caption's original case
  (``lowercase_caption=True`` reproduces GLaMM's lowercased answers).
* ``provenance.image_id``: for COCO images (OpenPSG, RefCOCOg-GCG) the COCO id parsed from the
  file name (the leakage report's identity); for SA-1B images (GranD-f) the file stem ``sa_<id>``,
  which every record has (the record's own ``image_id`` is unverified and may be absent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from fclm_data.errors import Reject
from fclm_data.images import ImageData, expect_size, safe_relpath
from fclm_data.jsonstream import Span, iter_json_list, read_record
from fclm_data.masks import merge_rles, nonempty_region_mask, segmentation_to_rle
from fclm_data.schema import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN, Provenance, Region, Turn
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.sources.pairing import as_view, paired, region_to_text_view
from fclm_data.templates import GCG_PHRASE, pick, with_image

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TRAILING_NUMBER = re.compile(r"(\d+)\.[A-Za-z]+$")

Drop = tuple[str, Reject]


# ---- caption text: spans, overlaps, the tagged answer ---------------------------------------------
def strip_caption(text: str) -> str:
    """GLaMM's caption clean-up; offsets index into the result."""
    return text.strip('"').strip()


def _normalise(text: str) -> str:
    return " ".join(text.strip().strip('"').split()).casefold()


def find_phrase(caption: str, phrase: str) -> list[tuple[int, int]]:
    """Every occurrence of ``phrase`` in ``caption``, ignoring case and whitespace runs."""
    words = phrase.strip().strip('"').split()
    if not words:
        return []
    pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
    return [m.span() for m in pattern.finditer(caption)]


def check_span(caption: str, phrase: str, span: Any) -> tuple[int, int]:
    """The span of ``phrase`` in ``caption`` from release offsets, repaired when they are off.

    Raises ``bad_text`` when the offsets are unusable and the phrase does not occur at all.
    """
    if isinstance(span, list) and span and isinstance(span[0], list):
        span = span[0]  # a list of spans: the first is used, as GLaMM does for Flickr
    given = None
    if _is_int_pair(span):
        start, end = span
        if 0 <= start < end <= len(caption):
            while start < end and caption[start].isspace():
                start += 1
            while end > start and caption[end - 1].isspace():
                end -= 1
            if start < end and _normalise(caption[start:end]) == _normalise(phrase):
                return start, end
        given = start
    occurrences = find_phrase(caption, phrase)
    if not occurrences:
        raise Reject("bad_text", f"phrase {phrase!r} (offsets {span!r}) does not occur in the caption")
    anchor = given if given is not None else 0
    return min(occurrences, key=lambda o: (abs(o[0] - anchor), o[0]))


def _is_int_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value)


def resolve_overlaps(phrases: list[dict], caption: str) -> tuple[list[dict], list[tuple[dict, Reject]]]:
    """Keep non-overlapping spans, longer phrases first; return (kept in caption order, drops)."""

    def length(i: int) -> int:
        return phrases[i]["span"][1] - phrases[i]["span"][0]

    kept: list[dict] = []
    drops: list[tuple[int, Reject]] = []
    for i in sorted(range(len(phrases)), key=lambda i: (-length(i), phrases[i]["span"][0], i)):
        start, end = phrases[i]["span"]
        clash = next((k for k in kept if start < k["span"][1] and k["span"][0] < end), None)
        if clash is None:
            kept.append(phrases[i])
            continue
        other = caption[clash["span"][0] : clash["span"][1]]
        detail = f"span {[start, end]} {caption[start:end]!r} overlaps {other!r} {clash['span']}; <p> tags cannot nest"
        drops.append((i, Reject("bad_text", detail)))
    return sorted(kept, key=lambda p: p["span"][0]), [(phrases[i], exc) for i, exc in sorted(drops, key=lambda d: d[0])]


def render_answer(caption: str, spans: list[tuple[int, int]]) -> str:
    """The caption with each (disjoint) span written ``<p> phrase </p> [SEG]``."""
    parts, cursor = [], 0
    for start, end in sorted(spans):
        parts += [caption[cursor:start], GCG_PHRASE.format(phrase=caption[start:end])]
        cursor = end
    parts.append(caption[cursor:])
    return "".join(parts).strip()


def coco_id(file_name: str) -> int | None:
    """COCO id from ``000000000009.jpg`` / ``COCO_train2014_000000000009.jpg``."""
    match = _TRAILING_NUMBER.search(PurePosixPath(file_name).name)
    return int(match.group(1)) if match else None


def key_safe(text: str) -> str:
    return _UNSAFE_KEY_CHARS.sub("_", text)


def unique_uid(uid: str, seen: dict[str, int]) -> str:
    """Several records of one image get ``-2``, ``-3``... in file order (deterministic)."""
    seen[uid] = seen.get(uid, 0) + 1
    return uid if seen[uid] == 1 else f"{uid}-{seen[uid]}"


# ---- the shared build ----------------------------------------------------------------------------
@dataclass
class GcgSource(Source):
    """Shared ``build`` of the GCG sources; subclasses ``index`` their release into units.

    Unit payload: ``images`` (candidate paths, first existing wins), ``size`` ([h, w] from the
    annotation or None), ``image_id``, ``caption`` (the text spans index), ``phrases`` (``{ann,
    span, segs}`` in caption order; ``segs`` are segmentations unioned into one region; a phrase
    with ``span`` None is an untagged region, placed last, with its text in ``text``) and ``drops``
    (index-time annotation drops, ``[record, code, detail]``).
    """

    split: str = "train"
    ann_file: str = ""  #: annotation file under the data root; ``{split}`` is filled in
    image_dir: str = ""  #: image folder under the data root; ``{split}`` is filled in
    #: write a consistency pair (``pairing.py``): the conversation asks for each grounded phrase's region
    #: (``<region>`` -> phrase, REG prompts) and ``pair`` is the GCG conversation ([SEG] per phrase); default off
    pair: bool = False
    task: ClassVar[str] = "gcg"

    @property
    def ann_path(self) -> str:
        return self.ann_file.format(split=self.split)

    def required_paths(self) -> list[str]:
        return [self.ann_path, self.image_root]

    @property
    def image_root(self) -> str:
        return self.image_dir.format(split=self.split)

    def _stream(self, result: IndexResult) -> Iterator[tuple[int, Span]]:
        """(position, span) per element of the top-level list; a file-level problem ends the stream as the
        file's one reject, and then nothing indexed from it is kept (units and rejects are cleared)."""
        if self.ann_path in result.missing:
            return
        try:
            yield from enumerate(iter_json_list(self.data_root / self.ann_path, self.ann_path))
        except Reject as exc:
            result.units.clear()
            result.rejects[:] = [self.reject(self.ann_path, exc, file=self.ann_path)]

    def read_span(self, p: dict) -> Any:
        """The record a slim payload's ``offset``/``length`` name, re-read from the annotation file."""
        return read_record(self.data_root / self.ann_path, self.ann_path, p["offset"], p["length"])

    def _question(self, key: str, seed: int) -> tuple[str, str]:
        return pick("gcg_question", seed, key)

    def image_candidates(self, unit: Unit) -> list[str]:
        return list(unit.payload["images"])

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = self.payload_of(unit)
        image = self.read_unit_image(unit, options)
        if p["size"] is not None:
            expect_size(image, p["size"][1], p["size"][0], f"{self.ann_path} record {unit.uid}")
        caption = self._display_caption(p["caption"])
        regions, kept, dropped = self._regions(p["phrases"], caption, image)
        if not regions:
            reasons = "; ".join(f"{exc.code}: {exc.detail}" for _, exc in dropped)
            raise Reject("no_regions", f"no grounded phrase has a usable mask ({reasons})", self.ann_path)
        qid, question = self._question(key, options.seed)
        tagged = [tuple(ph["span"]) for ph in kept if ph["span"] is not None]  # untagged ones come last
        sample = self.new_sample(
            key=key,
            provenance=Provenance(self.split, p["image_id"], [ph["ann"] for ph in kept], self.ann_path, repeat),
            image=image,
            regions=regions,
            conversations=[
                Turn("user", with_image(question)),
                Turn("assistant", render_answer(caption, tagged)),
            ],
            region_inputs=[],
            seg_targets=list(range(len(tagged))),
            templates=[qid],
        )
        if self.pair:
            items = [(k, caption[start:end]) for k, (start, end) in enumerate(tagged)]
            main, reg_templates = region_to_text_view(items, "expression", options.seed, key)
            sample = paired(sample, main, as_view(sample), [qid] + reg_templates)
        index_drops = [(record, Reject(code, detail, self.ann_path)) for record, code, detail in p["drops"]]
        return Built(sample, image, index_drops + dropped if repeat == 0 else [])

    def _display_caption(self, caption: str) -> str:
        return caption

    def _regions(
        self, phrases: list[dict], caption: str, image: ImageData
    ) -> tuple[list[Region], list[dict], list[Drop]]:
        """One region per phrase (the union of its masks); a phrase whose masks fail is dropped."""
        regions, kept, dropped = [], [], []
        for ph in phrases:
            text = caption[ph["span"][0] : ph["span"][1]] if ph["span"] is not None else ph["text"]
            try:
                rles = [segmentation_to_rle(seg, image.height, image.width) for seg in ph["segs"]]
                rle, box = nonempty_region_mask(merge_rles(rles), f"phrase {text!r}")
            except Reject as exc:
                exc.file = exc.file or self.ann_path
                dropped.append((f"phrase {text!r} ({ph['ann']})", exc))
                continue
            regions.append(Region(mask=rle, bbox=box, caption=text))
            kept.append(ph)
        return regions, kept, dropped


def check_caption(raw: Any, strip: bool = True) -> str:
    """A usable caption (GLaMM-stripped unless ``strip`` is False, as for Flickr)."""
    if not isinstance(raw, str) or not raw.strip():
        raise Reject("bad_text", f"caption is {raw!r:.60}, not a non-empty string")
    caption = strip_caption(raw) if strip else raw
    special = [t for t in (IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN) if t in caption]
    if special or not caption.strip():
        raise Reject("bad_text", f"caption {caption[:60]!r} is empty or contains the placeholder(s) {special}")
    return caption


def drop_row(record: str, exc: Reject) -> list[str]:
    return [record, exc.code, exc.detail]


def segmentation_list(value: Any, what: str) -> list:
    """A phrase's masks: a non-empty list of segmentations (a lone RLE dict is accepted)."""
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list) or not value:
        kind = "null" if value is None else type(value).__name__
        raise Reject("malformed_annotation", f"{what} is {kind}, not a non-empty list of masks")
    return value


def size_of(record: dict, what: str) -> list[int] | None:
    """[h, w] from the record's height/width (strings are cast); None when absent."""
    if record.get("height") is None or record.get("width") is None:
        return None
    try:
        return [int(record["height"]), int(record["width"])]
    except (TypeError, ValueError) as exc:
        sizes = f"{record['height']!r}/{record['width']!r}"
        raise Reject("malformed_annotation", f"{what} height/width {sizes} are not integers") from exc


# ---- GranD-f and OpenPSG-GCG ------------------------------------------------------------------------
@dataclass
class GranDfSource(GcgSource):
    """GranD-f HA / OpenPSG-GCG: ``{file_name, caption, groundings{phrase: {token_positives, rle_masks}}}``."""

    ann_file: str = "GranDf/annotations/train/GranDf_HA_GCG_{split}.json"
    image_dir: str = "GranDf_HA_images/{split}"
    #: image ids are COCO ids parsed from the file names (OpenPSG) instead of the record's / the stem
    coco_image_ids: bool = False

    def index(self) -> IndexResult:
        """Stream the file (hundreds of MB): units keep the record's byte span, ``build`` re-reads it."""
        result = IndexResult([], [], self.missing_paths())
        seen: dict[str, int] = {}
        for position, span in self._stream(result):
            label = _record_label(position, span.value)
            try:
                payload = self._payload(span.value, label)
            except Reject as exc:
                result.rejects.append(self.reject(label, exc, file=self.ann_path))
                continue
            stem = PurePosixPath(payload["images"][0]).stem
            slim = {"record": position, "offset": span.offset, "length": span.length, "images": payload["images"]}
            result.units.append(Unit(unique_uid(key_safe(f"{self.split}-{stem}"), seen), slim, payload["image_id"]))
        result.units.sort(key=lambda u: u.uid)
        return result

    def payload_of(self, unit: Unit) -> dict:
        p = unit.payload
        record = self.read_span(p)
        return self._payload(record, _record_label(p["record"], record))

    def _payload(self, record: Any, label: str) -> dict:
        if not isinstance(record, dict) or not isinstance(record.get("groundings"), dict):
            raise Reject("malformed_annotation", "record is not a dict with a 'groundings' dict")
        file_name = safe_relpath(record.get("file_name"))
        caption = check_caption(record.get("caption"))
        phrases, drops = [], []
        for phrase, grounding in record["groundings"].items():
            try:
                phrases.append(_grounding(caption, phrase, grounding))
            except Reject as exc:
                drops.append(drop_row(f"{label} phrase {phrase!r}", exc))
        kept, overlaps = resolve_overlaps(phrases, caption)
        drops += [drop_row(f"{label} phrase {ph['ann']!r}", exc) for ph, exc in overlaps]
        if not kept:
            reasons = "; ".join(d[2] for d in drops) or "groundings is empty"
            raise Reject("no_regions", f"no usable grounding ({reasons})")
        return {
            "images": [f"{self.image_root}/{file_name}"],
            "size": size_of(record, label),
            "image_id": self._image_id(record, file_name),
            "caption": caption,
            "phrases": kept,
            "drops": drops,
        }

    def _image_id(self, record: dict, file_name: str) -> str:
        """COCO id (OpenPSG) parsed from the name, else the record's id; SA-1B: the stem ``sa_<id>``."""
        if self.coco_image_ids:
            number = coco_id(file_name)
            if number is not None:
                return str(number)
            if record.get("image_id") not in (None, ""):
                return str(record["image_id"])
        return PurePosixPath(file_name).stem


def _record_label(position: int, record: Any) -> str:
    name = record.get("file_name") if isinstance(record, dict) else None
    return f"record #{position} ({name})" if isinstance(name, str) else f"record #{position}"


def _grounding(caption: str, phrase: str, grounding: Any) -> dict:
    if grounding is None:
        raise Reject("no_regions", "grounding is null (Sa2VA skips these)")
    if not isinstance(grounding, dict) or "token_positives" not in grounding:
        raise Reject("malformed_annotation", "grounding lacks 'token_positives'")
    segs = segmentation_list(grounding.get("rle_masks"), "rle_masks")
    span = check_span(caption, phrase, grounding["token_positives"])
    return {"ann": phrase, "span": list(span), "segs": segs}


TABLE7_GCG = "Stage 1 Grounded Conversation Generation"
register_source(
    "grandf", GranDfSource, "GranD-f human-annotated GCG (GLaMM): caption with <p> phrase </p> [SEG]",
    f"{TABLE7_GCG}: GrandF 1,000",
)  # fmt: skip
register_source(
    "openpsg_gcg", GranDfSource, "OpenPSG GCG (GLaMM's GranD-f release) on COCO train2017",
    f"{TABLE7_GCG}: OpenPSG 28,584",
    ann_file="GranDf/annotations/train/OpenPsgGCG_{split}.json", image_dir="coco/train2017", coco_image_ids=True,
)  # fmt: skip
