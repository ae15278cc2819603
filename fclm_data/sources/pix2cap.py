"""Pix2Cap-COCO ("Pixel2Cap"): COCO panoptic segments with a caption each, trained caption -> mask.

Release layout (defaults, all overridable): ``pix2cap/pix2cap_coco_{train,val}.json`` (COCO-panoptic
JSON: ``images[] {id, file_name, width, height}``, ``categories[] {id, name}``, ``annotations[]
{image_id, file_name: "<stem>.png", segments_info: [{id, category_id, description, bbox?, area?,
iscrowd?}]}``), the COCO panoptic PNGs ``coco/panoptic_{train,val}2017/<stem>.png`` (segment id =
R + 256*G + 256^2*B, panopticapi's ``rgb2id``) and the images ``coco/{train,val}2017/<stem>.jpg``
(the image is named after the PNG, as pix2cap's registration does).

Decisions (documented choices):

* Task ``region_seg_caption`` (FCLM lists Pixel2Cap under Grounding: caption in, mask out), with
  Table 12's DL-RES templates: each turn asks "<description>. Please respond with segmentation
  mask." (or "... output ...") and the answer is a DL-RES answer with one ``[SEG]``.
* Train: one sample per image (Table 7's 18,212 = the train images). Every described segment is a
  region; at most ``max_regions`` (default 5, FCLM's "up to five objects per segmentation sample")
  are asked about, one turn each, chosen by a seeded draw and kept in release order.
* Train images are filtered exactly like pix2cap's ``register_pix2cap_coco.py``: an image with ANY
  segment whose description is empty or shorter than ``min_description_chars`` (3) is rejected
  whole (``bad_text``). Val keeps such images; there the unit is one described segment (one
  sample per description) and a segment without a usable description is a ``bad_text`` reject.
* Pixels whose id is not in ``segments_info`` (0 and unlisted ids) are void: they belong to no
  region. A listed segment with no pixel in the PNG is dropped from its sample (``empty_mask``).
  Crowd segments (``iscrowd``) are kept like any described segment; ``bbox``/``area`` are not read
  (boxes come from the masks). A third-party loader keeps only descriptions longer than 5
  characters; we follow the official registration instead.
* ``pair: true`` (default off): a consistency pair (``fclm_data/sources/pairing.py``): the conversation
  asks Table 12's DLC question for each chosen segment (``<region>`` -> its description) and ``pair`` is the
  DL-RES conversation above, region for region.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from fclm_data.coco import CocoFile, is_id, read_coco
from fclm_data.errors import Reject
from fclm_data.images import checked_path, expect_size, safe_relpath
from fclm_data.masks import encode_mask, nonempty_region_mask
from fclm_data.schema import Provenance, Region, Turn
from fclm_data.seeding import stable_hash
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.sources.pairing import as_view, paired, region_to_text_view
from fclm_data.templates import dlres_query, pick, with_image


@dataclass
class Pix2CapSource(Source):
    split: str = "train"  #: train | val
    ann_file: str = "pix2cap/pix2cap_coco_{split}.json"
    panoptic_dir: str = "coco/panoptic_{split}2017"
    image_dir: str = "coco/{split}2017"
    #: described segments asked about per training sample (seeded choice)
    max_regions: int = 5
    #: pix2cap's train filter: an image with a shorter (or empty) description is dropped
    min_description_chars: int = 3
    #: write the DLC view with the DL-RES view as its ``pair`` (consistency learning on grounding data)
    pair: bool = False
    task = "region_seg_caption"

    def _path(self, template: str) -> str:
        return template.format(split=self.split)

    def required_paths(self) -> list[str]:
        return [self._path(t) for t in (self.ann_file, self.panoptic_dir, self.image_dir)]

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        ann_rel = self._path(self.ann_file)
        result = IndexResult([], [], self.missing_paths())
        if ann_rel in result.missing:
            return result
        try:
            coco = read_coco(self.data_root, ann_rel, require=("annotations",))
        except Reject as exc:
            return IndexResult([], [self.reject(ann_rel, exc, file=ann_rel)], result.missing)
        result.rejects += [self.reject(label, exc, file=ann_rel) for label, exc in coco.entry_rejects]
        seen: set = set()
        for position, ann in enumerate(coco.annotations):
            record = f"image {ann.get('image_id')}" if isinstance(ann, dict) else f"annotation #{position}"
            try:
                entry = self._entry(ann, coco, seen)
            except Reject as exc:
                result.rejects.append(self.reject(record, exc, file=ann_rel))
                continue
            self._add_units(entry, result, ann_rel)
        result.units.sort(key=lambda u: u.uid)
        return result

    def _entry(self, ann: Any, coco: CocoFile, seen: set) -> dict:
        """Validate one annotation; return the compact image entry its units carry."""
        if not isinstance(ann, dict) or not isinstance(ann.get("segments_info"), list):
            raise Reject("malformed_annotation", "annotation lacks a 'segments_info' list")
        image_id, png = ann.get("image_id"), ann.get("file_name")
        if not is_id(image_id) or not isinstance(png, str) or not png.endswith(".png"):
            raise Reject("malformed_annotation", f"annotation lacks an image_id or a .png file_name ({png!r})")
        if image_id in seen:
            raise Reject("duplicate_id", f"image_id {image_id} has two annotations")
        seen.add(image_id)
        png = PurePosixPath(safe_relpath(png)).name
        segments, ids = [], set()
        for i, seg in enumerate(ann["segments_info"]):
            if not isinstance(seg, dict) or not isinstance(seg.get("id"), int) or seg["id"] in ids:
                raise Reject("malformed_annotation", f"segment {i} has no integer id or repeats one")
            ids.add(seg["id"])
            text = seg.get("description")
            category = seg.get("category_id")
            segments.append([seg["id"], text if isinstance(text, str) else "", coco.categories.get(category) if is_id(category) else None])
        if not segments:
            raise Reject("no_regions", f"image {image_id} has no segment")
        short = [s for s in segments if len(s[1]) < self.min_description_chars]
        if self.split == "train" and short:
            sid, text, _ = short[0]
            detail = f"segment {sid} description {text!r} is shorter than {self.min_description_chars} characters"
            raise Reject("bad_text", f"{detail} (pix2cap drops the image)")
        if image_id in coco.duplicate_images:
            coco.image(image_id)  # raises duplicate_id: which entry's size is meant is ambiguous
        info = coco.images.get(image_id, {})
        size = [info.get("height"), info.get("width")]
        return {
            "image_id": str(image_id),
            "png": png,
            "size": size if all(isinstance(v, int) for v in size) else None,
            "segments": segments,
        }

    def _add_units(self, entry: dict, result: IndexResult, ann_rel: str) -> None:
        if self.split == "train":
            result.units.append(Unit(f"{self.split}-{entry['image_id']}", entry, entry["image_id"]))
            return
        for segment in entry["segments"]:
            sid, text, _ = segment
            if len(text.strip()) < self.min_description_chars:
                exc = Reject("bad_text", f"segment {sid} description {text!r} is too short to ask about")
                result.rejects.append(self.reject(f"image {entry['image_id']} segment {sid}", exc, file=ann_rel))
                continue
            unit = Unit(f"{self.split}-{entry['image_id']}-{sid}", {**entry, "segments": [segment]}, entry["image_id"])
            result.units.append(unit)

    # ---- build -------------------------------------------------------------------------------
    def image_candidates(self, unit: Unit) -> list[str]:
        stem = unit.payload["png"][: -len(".png")]
        return [f"{self._path(self.image_dir)}/{stem}.jpg"]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = unit.payload
        image = self.read_unit_image(unit, options)
        if p["size"] is not None:
            expect_size(image, p["size"][1], p["size"][0], f"{self._path(self.ann_file)} image {p['image_id']}")
        ids = self._panoptic_ids(p["png"], image.height, image.width)
        regions, used, dropped = [], [], []
        for sid, text, label in p["segments"]:
            try:
                rle, box = nonempty_region_mask(encode_mask(ids == sid), f"segment {sid}")
            except Reject as exc:
                exc.file = self._path(self.ann_file)
                dropped.append((f"image {p['image_id']} segment {sid}", exc))
                continue
            regions.append(Region(mask=rle, bbox=box, label=label, caption=text.strip()))
            used.append(sid)
        if not regions:
            raise Reject(
                "empty_mask", f"no segment of image {p['image_id']} has pixels in {p['png']}", self._path(self.ann_file)
            )
        keep = self._choose(used, options.seed, key)
        regions, used = [regions[i] for i in keep], [used[i] for i in keep]
        turns, templates = [], []
        for n, region in enumerate(regions):
            q_id, question = pick("dlres_question", options.seed, key, f"turn{n}")
            a_id, answer = pick("dlres_answer", options.seed, key, f"turn{n}")
            text = dlres_query(question, region.caption)
            turns += [Turn("user", with_image(text) if n == 0 else text), Turn("assistant", answer)]
            templates += [q_id, a_id]
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                split=self.split,
                image_id=p["image_id"],
                ann_ids=[str(sid) for sid in used],
                source_file=self._path(self.ann_file),
                repeat=repeat,
            ),
            image=image,
            regions=regions,
            conversations=turns,
            region_inputs=[],
            seg_targets=list(range(len(regions))),
            templates=templates,
        )
        if self.pair:
            items = [(i, region.caption) for i, region in enumerate(regions)]
            main, dlc_templates = region_to_text_view(items, "description", options.seed, key)
            sample = paired(sample, main, as_view(sample), templates + dlc_templates)
        return Built(sample, image, dropped)

    def _panoptic_ids(self, png: str, height: int, width: int) -> np.ndarray:
        """(H, W) segment ids of a panoptic PNG: R + 256 G + 256^2 B."""
        rel = f"{self._path(self.panoptic_dir)}/{png}"
        try:
            with Image.open(io.BytesIO(checked_path(self.data_root, rel).read_bytes())) as im:
                if im.size != (width, height):  # checked before decoding: a PNG cannot be a bomb here
                    raise Reject(
                        "mask_size_mismatch", f"{rel} is {im.size[0]}x{im.size[1]}, the image {width}x{height}", rel
                    )
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint32)
        except Reject:
            raise
        except FileNotFoundError as exc:
            raise Reject("missing_file", f"{rel} does not exist under the data root", rel) from exc
        except Exception as exc:  # PIL raises several types for a broken PNG
            raise Reject("malformed_annotation", f"{rel}: not a readable PNG ({exc})", rel) from exc
        if rgb.shape[:2] != (height, width):
            raise Reject(
                "mask_size_mismatch", f"{rel} is {rgb.shape[1]}x{rgb.shape[0]}, the image {width}x{height}", rel
            )
        return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]

    def _choose(self, ids: list[int], seed: int, key: str) -> list[int]:
        """Indexes of at most ``max_regions`` segments (seeded), in release order."""
        if len(ids) <= self.max_regions:
            return list(range(len(ids)))
        ranked = sorted(range(len(ids)), key=lambda i: stable_hash("pix2cap_region", seed, key, ids[i]))
        return sorted(ranked[: self.max_regions])


register_source(
    "pix2cap", Pix2CapSource, "Pix2Cap-COCO: panoptic segment descriptions, caption -> mask (DL-RES templates)",
    "Stage 1 Grounding: Pixel2Cap 18,212",
)  # fmt: skip
