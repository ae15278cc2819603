"""GranD-f GCG evaluation ground truth (val / test), read as GLaMM's ``eval/gcg/evaluate.py`` reads it.

Layout: ``GranDf/annotations/val_test/{val,test}_gcg_coco_caption_gt.json`` (COCO-caption format:
``images[] {id = image stem}``, ``annotations[] {image_id, caption, labels: [phrase, ...]}``) and
``{val,test}_gcg_coco_mask_gt.json`` (COCO format: ``images[] {id = image stem}``,
``annotations[] {id, image_id, segmentation: compressed RLE}``); images
``GranDf_HA_images/val_test/<id>.jpg``.

One sample per image of the caption GT (the images ``evaluate.py`` iterates). Phrase <-> mask
linkage: ``evaluate.py`` pairs ``labels[i]`` with the image's i-th mask annotation (its recall
match indexes the IoU and text-similarity matrices with the same (i, j)), so we pair them by
position and reject an image whose label and mask counts differ. Only the first caption
annotation of an image is used (``loadAnns(...)[0]``); further ones are reported as drops.

The labels carry no offsets: each is located in the caption in order (the first free occurrence
at or after the previous phrase, else any free one). Every GT mask stays a region, since the
metrics need them all: located phrases are tagged ``<p> phrase </p> [SEG]`` and come first, in
caption order; a label that cannot be located stays a region (with its text in ``caption``) after
them, untagged, and is reported as a ``bad_text`` drop. ``provenance.ann_ids`` are the mask
annotation ids in region order. The question is GLaMM's evaluation instruction (``gcg_question:1``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fclm_data.coco import is_id, parse_coco, read_coco
from fclm_data.errors import Reject
from fclm_data.images import safe_relpath
from fclm_data.sources import register_source
from fclm_data.sources.base import IndexResult, Unit, load_json_file
from fclm_data.sources.gcg import GcgSource, check_caption, drop_row, find_phrase, key_safe, size_of, unique_uid
from fclm_data.templates import TABLES

Span = tuple[int, int]


@dataclass
class GranDfGcgEvalSource(GcgSource):
    split: str = "val"  #: val | test
    ann_dir: str = "GranDf/annotations/val_test"
    image_dir: str = "GranDf_HA_images/val_test"

    @property
    def ann_path(self) -> str:
        return f"{self.ann_dir}/{self.split}_gcg_coco_caption_gt.json"

    @property
    def mask_path(self) -> str:
        return f"{self.ann_dir}/{self.split}_gcg_coco_mask_gt.json"

    def required_paths(self) -> list[str]:
        return [self.ann_path, self.mask_path, self.image_root]

    def _question(self, key: str, seed: int) -> tuple[str, str]:
        return "gcg_question:1", TABLES["gcg_question"][0]

    def index(self) -> IndexResult:
        result = IndexResult([], [], self.missing_paths())
        if self.ann_path in result.missing or self.mask_path in result.missing:
            return result
        try:
            captions_data = load_json_file(self.data_root, self.ann_path)
            captions = parse_coco(captions_data, self.ann_path)
            captions_raw = captions_data["images"]
            masks = read_coco(self.data_root, self.mask_path)
        except Reject as exc:
            result.rejects.append(self.reject(exc.file or self.ann_path, exc, file=exc.file))
            return result
        caption_anns, mask_anns = _by_image(captions.annotations), _by_image(masks.annotations)
        result.rejects += [self.reject(label, exc, file=self.ann_path) for label, exc in captions.entry_rejects]
        seen: set[str] = set()
        uids: dict[str, int] = {}
        for position, image in enumerate(captions_raw):
            image_id = image.get("id") if isinstance(image, dict) else None
            if not is_id(image_id):
                continue  # an entry rejected by the COCO reader
            label = f"image {image_id}"
            try:
                if image_id in captions.duplicate_images:
                    captions.image(image_id)  # raises duplicate_id: every entry of the id is ambiguous
                if str(image_id) in seen:
                    raise Reject("duplicate_id", f"image id {image_id} appears twice (as a number and a string)")
                seen.add(str(image_id))
                if image_id in masks.duplicate_images:
                    masks.image(image_id)
                size = size_of(image, label) or size_of(masks.images.get(image_id, {}), label)
                payload = self._payload(image, size, caption_anns.get(image_id, []), mask_anns.get(image_id, []), label)
            except Reject as exc:
                result.rejects.append(self.reject(label, exc, file=self.ann_path))
                continue
            result.units.append(Unit(unique_uid(key_safe(f"{self.split}-{image_id}"), uids), payload, str(image_id)))
        result.units.sort(key=lambda u: u.uid)
        return result

    def _payload(self, image: dict, size: list[int] | None, caption_anns: list, mask_anns: list, label: str) -> dict:
        caption, labels = _caption_and_labels(caption_anns, len(mask_anns))
        unused = Reject("malformed_annotation", "extra caption of the image; evaluate.py reads the first")
        drops = [drop_row(f"{label} caption {extra.get('id')}", unused) for extra in caption_anns[1:]]
        phrases = []
        for text, span, ann in zip(labels, _locate_in_order(caption, labels), mask_anns):
            if "segmentation" not in ann:
                raise Reject("malformed_annotation", f"mask annotation {ann.get('id')} has no segmentation")
            if span is None:
                exc = Reject("bad_text", f"label {text!r} is not in the caption; kept as an untagged GT region")
                drops.append(drop_row(f"{label} phrase {text!r}", exc))
            phrases.append(
                {"ann": str(ann.get("id")), "span": span, "text": text.strip(), "segs": [ann["segmentation"]]}
            )
        # tagged phrases first, in caption order; untagged GT regions after them, in GT order
        phrases.sort(key=lambda p: (p["span"] is None, p["span"][0] if p["span"] else 0))
        file_name = safe_relpath(image.get("file_name") or f"{image['id']}.jpg")
        return {
            "images": [f"{self.image_root}/{file_name}"],
            "size": size,
            "image_id": str(image["id"]),
            "caption": caption,
            "phrases": phrases,
            "drops": drops,
        }


def _caption_and_labels(caption_anns: list[dict], n_masks: int) -> tuple[str, list[str]]:
    """The first caption annotation's text and labels, checked against the image's mask count."""
    if not caption_anns:
        raise Reject("bad_text", "the caption GT has no caption for this image")
    caption = check_caption(caption_anns[0].get("caption"))
    labels = caption_anns[0].get("labels")
    if not isinstance(labels, list) or not all(isinstance(t, str) and t.strip() for t in labels):
        raise Reject("malformed_annotation", f"caption 'labels' is {labels!r:.60}, not a list of phrases")
    if len(labels) != n_masks:
        detail = f"{len(labels)} labels for {n_masks} GT masks (evaluate.py pairs them by position)"
        raise Reject("malformed_annotation", detail)
    if not labels:
        raise Reject("no_regions", "the image has no GT phrase")
    return caption, labels


def _by_image(annotations: list) -> dict[Any, list[dict]]:
    """Annotations per image id, in file order (the order evaluate.py pairs them in)."""
    grouped: dict[Any, list[dict]] = defaultdict(list)
    for ann in annotations:
        if isinstance(ann, dict) and isinstance(ann.get("image_id"), (str, int)):
            grouped[ann["image_id"]].append(ann)
    return grouped


def _locate_in_order(caption: str, labels: list[str]) -> list[list[int] | None]:
    """Each label's first free occurrence at/after the previous one's end (else any free one)."""
    claimed: list[Span] = []
    spans: list[list[int] | None] = []
    cursor = 0
    for text in labels:
        free = [o for o in find_phrase(caption, text) if all(o[1] <= s or e <= o[0] for s, e in claimed)]
        choice = next((o for o in free if o[0] >= cursor), free[0] if free else None)
        if choice is not None:
            claimed.append(choice)
            cursor = choice[1]
        spans.append(list(choice) if choice else None)
    return spans


register_source(
    "grandf_gcg_eval", GranDfGcgEvalSource, "GranD-f GCG val/test ground truth (one sample per image, all GT masks)",
    "evaluation: GranD-f GCG val/test (not in Table 7)",
)  # fmt: skip
