"""Visual Genome region captions: Osprey's masked release (``vg``) and GLaMM's GRiT boxes (``vg_grit``).

Layouts (defaults, all overridable):

* ``vg``: ``vg/vg_train_with_mask.json`` (HF ``sunshine-lwt/Osprey-TrainingData``; masks made with
  HQ-SAM), COCO-style ``images: [{id, file_name, height, width}]`` and ``annotations: [{id,
  image_id, caption, segmentation, bbox}]`` with ``segmentation`` in any pycocotools form; images
  in ``vg/image/`` (VG_100K and VG_100K_2 merged), as Osprey's ``dataset.md`` lays them out.
* ``vg_grit``: ``visual_genome/train.json`` (GRiT's preprocessed VG, as GLaMM uses it), COCO-style
  with ``annotations: [{id, image_id, bbox [x, y, w, h], area, caption}]`` and no masks; images
  flat in ``visual_genome/images/``. The region is the box clipped to the image (``box_only``,
  mask = the filled box). GLaMM skips boxes with ``area <= 0`` or ``w``/``h`` < 1; we reject them
  as ``bbox_outside_image`` with that reason, like boxes lying wholly outside the image.

One sample per image (Table 7's "VG 77,000" matches the ~77K training images of the VG
dense-caption split that both files cover): up to ``max_regions`` of its regions, drawn with the
build seed and the sample key (a repeated image gets another draw) and kept in release order, one
turn pair each: an Osprey VG question + " Answer the question using a short phrase." -> the
caption. Osprey's VGDATA takes 3 regions per image, GLaMM's VG loader 10: those are the presets.
Images without annotations are not records and are skipped; annotation problems found while
indexing are index rejects named by annotation id; a region whose mask fails while building is a
dropped annotation (the next drawn region takes its place).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from numbers import Real
from typing import Any

from fclm_data.coco import CocoFile, annotation_label, iter_coco_annotations, read_coco_tables
from fclm_data.errors import Reject
from fclm_data.images import ImageData, expect_size
from fclm_data.jsonstream import SpanReader
from fclm_data.masks import box_to_rle, check_box, nonempty_region_mask, segmentation_to_rle, xywh_to_xyxy
from fclm_data.schema import Provenance, Region, Turn
from fclm_data.seeding import stable_hash
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.templates import REGION_CAPTION_SUFFIX, pick, with_image


@dataclass
class _VgSource(Source):
    """COCO-style VG region captions; subclasses say how one annotation becomes a region."""

    file: str = "vg/vg_train_with_mask.json"
    image_dir: str = "vg/image"
    max_regions: int = 3  #: regions (turn pairs) per sample
    task = "region_caption"

    def required_paths(self) -> list[str]:
        return [self.file, self.image_dir]

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        """Stream the file twice (tables, then annotations): units keep each annotation's byte span
        in place of its mask (``payload_of`` re-reads it), so memory does not grow with the masks."""
        missing = self.missing_paths()
        if self.file in missing:
            return IndexResult([], [], missing)
        try:
            coco = read_coco_tables(self.data_root, self.file)
            result = IndexResult([], [], missing)
            result.rejects += [self.reject(label, exc, file=self.file) for label, exc in coco.entry_rejects]
            per_image = self._index_annotations(coco, result)
        except Reject as exc:
            return IndexResult([], [self.reject(self.file, exc)], missing)
        for image_id in sorted(per_image, key=id_order):
            entries = sorted(per_image[image_id], key=lambda e: id_order(e["ann_id"]))
            meta = coco.image_meta(image_id)
            result.units.append(Unit(key_safe(image_id), {"image": meta, "anns": entries}, str(image_id)))
        return result

    def _index_annotations(self, coco: CocoFile, result: IndexResult) -> dict[Any, list[dict]]:
        """Each annotation validated against the image table: its slim entry, per image (rejects recorded)."""
        images: dict[Any, dict] = {}
        per_image: dict[Any, list[dict]] = defaultdict(list)
        seen: set = set()
        for pos, (offset, length, ann) in enumerate(iter_coco_annotations(self.data_root, self.file)):
            ann_id = annotation_label(ann, pos)
            try:
                if isinstance(ann, dict):  # a missing, ambiguous or malformed image rejects the annotation
                    images[ann["image_id"]] = coco.image_meta(ann.get("image_id"))
                entry = self._entry(ann, ann_id, images, seen)
            except Reject as exc:
                result.rejects.append(self.reject(f"ann {ann_id}", exc, file=self.file))
                continue
            per_image[ann["image_id"]].append(self._slim(entry, offset, length))
        return per_image

    def _slim(self, entry: dict, offset: int, length: int) -> dict:
        """What the unit keeps of an entry (all of it unless the subclass holds large geometry)."""
        return entry

    def payload_of(self, unit: Unit) -> dict:
        return unit.payload

    def _entry(self, ann: Any, ann_id: Any, images: dict, seen: set) -> dict:
        """Validate one annotation against the image table; return what a unit carries."""
        if not isinstance(ann, dict):
            raise Reject("malformed_annotation", f"annotation is a {type(ann).__name__}, not a dict")
        if ann_id in seen:
            raise Reject("duplicate_id", f"annotation id {ann_id} appears twice")
        seen.add(ann_id)
        if ann.get("image_id") not in images:
            raise Reject("malformed_annotation", f"image_id {ann.get('image_id')!r} is not in 'images'")
        caption = ann.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise Reject("bad_text", "caption is empty or missing")
        return {"ann_id": ann_id, "caption": caption.strip(), **self._geometry(ann, images[ann["image_id"]])}

    def _geometry(self, ann: dict, image: dict) -> dict:
        raise NotImplementedError

    # ---- build -------------------------------------------------------------------------------
    def image_candidates(self, unit: Unit) -> list[str]:
        return [f"{self.image_dir}/{unit.payload['image']['file_name']}"]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        payload = self.payload_of(unit)
        meta = payload["image"]
        image = self.read_unit_image(unit, options)
        expect_size(image, meta["width"], meta["height"], f"{self.file} image {meta['id']}")
        anns = payload["anns"]
        chosen, dropped = [], []
        for position in self._draw(anns, key, options.seed):
            if len(chosen) == self.max_regions:
                break
            try:
                chosen.append((position, self._region(anns[position], image)))
            except Reject as exc:
                exc.file = exc.file or self.file
                dropped.append((f"ann {anns[position]['ann_id']}", exc))
        if not chosen:
            raise Reject(dropped[0][1].code, f"no usable region: {dropped[0][1].detail}", self.file)
        chosen = [(anns[position], region) for position, region in sorted(chosen, key=lambda c: c[0])]  # release order
        turns, templates = [], []
        for n, (entry, _) in enumerate(chosen):
            template_id, question = pick("region_caption_question", options.seed, key, f"turn{n}")
            text = question + REGION_CAPTION_SUFFIX
            turns += [Turn("user", with_image(text) if n == 0 else text), Turn("assistant", entry["caption"])]
            templates.append(template_id)
        sample = self.new_sample(
            key=key,
            provenance=Provenance("train", str(meta["id"]), [str(e["ann_id"]) for e, _ in chosen], self.file, repeat),
            image=image,
            regions=[region for _, region in chosen],
            conversations=turns,
            region_inputs=list(range(len(chosen))),
            seg_targets=[],
            templates=templates,
        )
        return Built(sample, image, dropped)

    def _draw(self, anns: list[dict], key: str, seed: int) -> list[int]:
        """Seeded order (positions) in which regions are tried; the first ``max_regions`` usable are kept."""
        return sorted(range(len(anns)), key=lambda i: stable_hash("vg_region", seed, key, anns[i]["ann_id"]))

    def _region(self, entry: dict, image: ImageData) -> Region:
        raise NotImplementedError


@dataclass
class VgMaskSource(_VgSource):
    """Osprey's ``vg_train_with_mask.json``: HQ-SAM masks in any pycocotools encoding."""

    def _geometry(self, ann: dict, image: dict) -> dict:
        if not isinstance(ann.get("segmentation"), (list, dict)):
            raise Reject("malformed_annotation", "segmentation is missing")
        return {"segmentation": ann["segmentation"]}

    def _slim(self, entry: dict, offset: int, length: int) -> dict:
        return {"ann_id": entry["ann_id"], "span": (offset, length)}

    def payload_of(self, unit: Unit) -> dict:
        """The unit with each annotation's caption and mask re-read from its span."""
        p = unit.payload
        with SpanReader(self.data_root / self.file, self.file) as read:
            anns = [_full_entry(e["ann_id"], read(*e["span"])) for e in p["anns"]]
        return {**p, "anns": anns}

    def _region(self, entry: dict, image: ImageData) -> Region:
        rle = segmentation_to_rle(entry["segmentation"], image.height, image.width)
        rle, box = nonempty_region_mask(rle, f"ann {entry['ann_id']}")
        return Region(mask=rle, bbox=box, caption=entry["caption"])


def _full_entry(ann_id: Any, ann: dict) -> dict:
    """The entry ``_entry`` made of an annotation that passed it (caption stripped, the mask as released)."""
    return {"ann_id": ann_id, "caption": ann["caption"].strip(), "segmentation": ann["segmentation"]}


@dataclass
class VgGritSource(_VgSource):
    """GLaMM's GRiT ``visual_genome/train.json``: boxes only, clipped to the image."""

    file: str = "visual_genome/train.json"
    image_dir: str = "visual_genome/images"
    max_regions: int = 10

    def _geometry(self, ann: dict, image: dict) -> dict:
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, Real) for v in bbox):
            raise Reject("malformed_annotation", f"bbox {bbox!r} is not [x, y, w, h]")
        if "area" in ann and not (isinstance(ann["area"], Real) and ann["area"] > 0):
            raise Reject("bbox_outside_image", f"area {ann['area']!r} <= 0 (GLaMM skips such boxes)")
        if bbox[2] < 1 or bbox[3] < 1:
            raise Reject("bbox_outside_image", f"box {bbox} is narrower or lower than 1 pixel (GLaMM skips such boxes)")
        return {"box": check_box(xywh_to_xyxy(bbox), image["height"], image["width"])}

    def _region(self, entry: dict, image: ImageData) -> Region:
        box = entry["box"]
        return Region(
            mask=box_to_rle(box, image.height, image.width), bbox=box, caption=entry["caption"], box_only=True
        )


def id_order(value: Any) -> tuple:
    """Numeric ids in numeric order, any other ids after them as text."""
    return (0, value, "") if isinstance(value, int) else (1, 0, str(value))


def key_safe(value: Any) -> str:
    """An id as a sample-key part: anything outside [A-Za-z0-9_-] becomes '_'."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in str(value))


register_source(
    "vg", VgMaskSource, "Visual Genome region captions with HQ-SAM masks (Osprey's vg_train_with_mask.json)",
    "Stage 1 Captioning: VG 77,000",
)  # fmt: skip
register_source(
    "vg_grit", VgGritSource, "Visual Genome region captions, boxes only (GLaMM's GRiT visual_genome/train.json)",
    "Stage 1 Captioning: VG 77,000",
)  # fmt: skip
