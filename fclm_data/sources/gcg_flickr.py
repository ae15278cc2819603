"""Flickr30K-GCG (GLaMM's GranD-f release): Flickr30K Entities captions with SAM masks.

Layout: ``GranDf/annotations/train/flickr_mergedGT_GCG_{train,val}.json``, images
``flickr30k/<file_name>`` (the issue's layout; GLaMM's own folder is the misspelled
``flikcr_30k/train`` -- set ``image_dir`` to use it).

The file is COCO-format (MDETR's merged-GT Flickr plus SAM masks): ``images[] {id, file_name,
height, width (strings in places: cast), caption}`` -- one entry per caption, several per photo --
and ``annotations[] {id, image_id, bbox [x,y,w,h], area, tokens_positive [[s, e], ...], sam_mask
(compressed RLE), ignore?}``. One sample per ``images[]`` entry (Table 7's 148,157 counts captions).

GLaMM's and Sa2VA's filters, each drop counted with its reason:

* an entry whose caption has fewer than ``min_caption_words`` words (``caption.split(' ')``, as
  GLaMM counts) is rejected (``bad_text``); one whose min side is under ``min_image_side`` is
  rejected (``image_too_small``); one with no usable annotation (``no_regions``);
* an annotation flagged ``ignore`` is dropped (``ignored_annotation``); one whose box has zero
  intersection with the image, ``area <= 0`` or w or h < 1 is dropped (``bbox_outside_image``);
* annotation ids must be unique (GLaMM asserts): a repeated id is dropped (``duplicate_id``), the
  first occurrence kept; an annotation of an unknown image is an index reject.

Only the first ``tokens_positive`` span of an annotation is used (as GLaMM does); the caption is
used as is (GLaMM does not strip Flickr captions). The region is the ``sam_mask``, its box the
mask's. GLaMM computes ``file_name.split('_')[-1]`` without using it, which hints that names may
carry a prefix: the image is looked up as given, then as the part after the last '_'; the photo
id (``provenance.image_id``) is that part's stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from pathlib import PurePosixPath
from typing import Any

from fclm_data.coco import CocoSpans, is_id, stream_coco
from fclm_data.errors import Reject
from fclm_data.images import safe_relpath
from fclm_data.jsonstream import SpanReader
from fclm_data.sources import register_source
from fclm_data.sources.base import IndexResult, Unit
from fclm_data.sources.gcg import (
    TABLE7_GCG,
    GcgSource,
    check_caption,
    drop_row,
    key_safe,
    resolve_overlaps,
    size_of,
    unique_uid,
)  # fmt: skip


@dataclass
class FlickrGcgSource(GcgSource):
    ann_file: str = "GranDf/annotations/train/flickr_mergedGT_GCG_{split}.json"
    image_dir: str = "flickr30k"
    min_caption_words: int = 3
    min_image_side: int = 32

    def index(self) -> IndexResult:
        """Stream the file (hundreds of MB, mostly SAM masks): units keep byte spans, ``build`` re-reads them."""
        result = IndexResult([], [], self.missing_paths())
        if self.ann_path in result.missing:
            return result
        try:
            coco = stream_coco(self.data_root, self.ann_path)
        except Reject as exc:
            result.rejects.append(self.reject(self.ann_path, exc, file=self.ann_path))
            return result
        self._image_rejects(coco, result)
        per_image = self._annotations(coco, result)
        coco.annotations.clear()  # grouped per image: the ids are no longer needed (memory: ~130 B each)
        seen: dict[str, int] = {}
        with SpanReader(self.data_root / self.ann_path, self.ann_path) as read:
            for image_id, entry in coco.images.items():
                label = f"image {image_id}"
                spans, drops = per_image.get(image_id, ([], []))
                try:
                    payload = self._payload(read(*entry), [read(*span) for span in spans], drops, label)
                except Reject as exc:
                    result.rejects.append(self.reject(label, exc, file=self.ann_path))
                    continue
                uid = unique_uid(key_safe(f"{self.split}-{image_id}"), seen)
                slim = {"entry": entry, "anns": spans, "drops": drops, "images": payload["images"]}
                result.units.append(Unit(uid, slim, payload["image_id"]))
        result.units.sort(key=lambda u: u.uid)
        return result

    def payload_of(self, unit: Unit) -> dict:
        p = unit.payload
        with SpanReader(self.data_root / self.ann_path, self.ann_path) as read:
            image = read(*p["entry"])
            return self._payload(image, [read(*span) for span in p["anns"]], p["drops"], f"image {image['id']}")

    def _image_rejects(self, coco: CocoSpans, result: IndexResult) -> None:
        """One reject per ``images[]`` entry without an id or with a repeated id."""
        for label, exc in coco.entry_rejects:
            result.rejects.append(self.reject(label, exc, file=self.ann_path))
        for image_id, times in coco.duplicate_images.items():
            exc = Reject("duplicate_id", f"image id {image_id} appears {times} times (every entry is ambiguous)")
            result.rejects += [self.reject(f"image {image_id}", exc, file=self.ann_path)] * times

    def _annotations(self, coco: CocoSpans, result: IndexResult) -> dict[Any, tuple[list, list]]:
        """Annotation spans per image in file order, and per-image drops of repeated annotation ids."""
        per_image: dict[Any, tuple[list, list]] = {}
        seen: set = set()
        for position, (ann_id, image_id, span) in enumerate(coco.annotations):
            label = f"annotation {ann_id if is_id(ann_id) else f'#{position}'}"
            exc = None
            if not is_id(ann_id):
                exc = Reject("malformed_annotation", "annotation is not a dict with an int/str 'id'")
            elif image_id in coco.duplicate_images if is_id(image_id) else False:
                exc = Reject("duplicate_id", f"annotation of image id {image_id}, which appears more than once")
            elif not is_id(image_id) or image_id not in coco.images:
                exc = Reject("malformed_annotation", f"annotation has unknown image_id {image_id!r:.40}")
            if exc is not None:
                result.rejects.append(self.reject(label, exc, file=self.ann_path))
                continue
            spans, drops = per_image.setdefault(image_id, ([], []))
            if ann_id in seen:
                exc = Reject("duplicate_id", f"annotation id {ann_id} appears twice (the first is kept)")
                drops.append(drop_row(label, exc))
                continue
            seen.add(ann_id)
            spans.append(span)
        return per_image

    def _payload(self, image: dict, anns: list[dict], drops: list, label: str) -> dict:
        caption = check_caption(image.get("caption"), strip=False)
        if len(caption.split(" ")) < self.min_caption_words:
            raise Reject("bad_text", f"caption {caption!r} has fewer than {self.min_caption_words} words")
        size = size_of(image, label)
        if size is None:
            raise Reject("malformed_annotation", "images[] entry lacks height/width")
        if min(size) < self.min_image_side:
            raise Reject("image_too_small", f"{size[1]}x{size[0]} image: min side < {self.min_image_side}")
        file_name = safe_relpath(image.get("file_name"))
        phrases, drops = [], list(drops)
        for ann in anns:
            try:
                phrases.append(_phrase(ann, caption, size))
            except Reject as exc:
                drops.append(drop_row(f"annotation {ann['id']}", exc))
        kept, overlaps = resolve_overlaps(phrases, caption)
        drops += [drop_row(f"annotation {ph['ann']}", exc) for ph, exc in overlaps]
        if not kept:
            raise Reject("no_regions", f"no usable annotation ({'; '.join(d[2] for d in drops) or 'none'})")
        bare = PurePosixPath(file_name).name.rsplit("_", 1)[-1]
        candidates = list(dict.fromkeys([f"{self.image_root}/{file_name}", f"{self.image_root}/{bare}"]))
        return {
            "images": candidates,
            "size": size,
            "image_id": PurePosixPath(bare).stem,
            "caption": caption,
            "phrases": kept,
            "drops": drops,
        }


def _phrase(ann: dict, caption: str, size: list[int]) -> dict:
    """One annotation -> a phrase, after GLaMM's filters."""
    if ann.get("ignore", False):
        raise Reject("ignored_annotation", "annotation is flagged ignore")
    box, area = ann.get("bbox"), ann.get("area", 1)  # GLaMM requires 'area'; a missing one is not checked
    numbers = isinstance(box, list) and len(box) == 4 and all(isinstance(v, Real) for v in [*box, area])
    if not numbers:
        raise Reject("malformed_annotation", f"bbox {box!r} / area {area!r} are not numbers")
    x, y, w, h = box
    inter_w = max(0, min(x + w, size[1]) - max(x, 0))
    inter_h = max(0, min(y + h, size[0]) - max(y, 0))
    if inter_w * inter_h == 0 or area <= 0 or w < 1 or h < 1:
        raise Reject("bbox_outside_image", f"box {box} (area {area}) is empty or outside the {size[1]}x{size[0]} image")
    spans = ann.get("tokens_positive")
    span = spans[0] if isinstance(spans, list) and spans else None
    if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)):
        raise Reject("bad_text", f"tokens_positive {spans!r} has no [start, end] span")
    start, end = span
    text = caption[start:end] if 0 <= start < end <= len(caption) else ""
    if not text.strip():
        raise Reject("bad_text", f"span {span} is empty or outside the {len(caption)}-character caption")
    start += len(text) - len(text.lstrip())
    end -= len(text) - len(text.rstrip())
    if not isinstance(ann.get("sam_mask"), dict):
        raise Reject("malformed_annotation", "annotation has no sam_mask RLE")
    return {"ann": str(ann["id"]), "span": [start, end], "segs": [ann["sam_mask"]]}


register_source(
    "flickr30k_gcg", FlickrGcgSource, "Flickr30K GCG (GLaMM's GranD-f release): one sample per caption",
    f"{TABLE7_GCG}: Flickr30K 148,157",
)  # fmt: skip
