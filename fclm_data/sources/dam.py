"""Describe-Anything (DAM) detailed localized captions: COCO-Stuff, Mapillary, OpenImages, SAM.

Release (HF ``nvidia/describe-anything-dataset``): WebDataset tars
``describe-anything-dataset/<Subset>/images/NNNNNNNN.tar`` with members ``<key>.jpg`` and
``<key>.pickle``; the pickle is a list of region dicts ``{img_id, ann_id, image, category,
caption, mask_rle}`` (``mask_rle`` a COCO compressed RLE on the image grid).

Every region becomes one *paired* sample (task ``dlc_dlres``): the DLC view (a Table-12 question
with ``<region>``, the caption as answer) and, in ``pair``, the DL-RES view (the caption as query,
a Table-12 answer with ``[SEG]``) -- FCLM's consistency learning trains both on the same region.

The pickles are untrusted: they are read with :mod:`fclm_data.safe_pickle`. Index time reads
only tar headers and pickles; units carry byte offsets so a worker reads its members directly.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fclm_data.errors import Reject
from fclm_data.images import ImageLocation, check_image_bytes, checked_path, read_range, safe_relpath
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.safe_pickle import safe_loads
from fclm_data.schema import Provenance, Region, Turn, View
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.templates import dlres_query, pick, with_image

_IMAGE_EXTS = ("jpg", "jpeg", "png")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class DamSource(Source):
    subset: str = "COCOStuff"  #: folder of the HF release: COCOStuff, Mapillary, OpenImages, SAM
    tar_dir: str = "describe-anything-dataset/{subset}/images"
    task = "dlc_dlres"

    @property
    def tars(self) -> str:
        return self.tar_dir.format(subset=self.subset)

    def required_paths(self) -> list[str]:
        return [self.tars]

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        result = IndexResult([], [], self.missing_paths())
        if result.missing:
            return result
        tar_paths = sorted((self.data_root / self.tars).glob("*.tar"))
        if not tar_paths:
            result.missing.append(f"{self.tars}/*.tar")
        seen: set[str] = set()
        for tar_path in tar_paths:
            self._index_tar(f"{self.tars}/{tar_path.name}", result, seen)
        return result

    def _index_tar(self, tar_rel: str, result: IndexResult, seen: set[str]) -> None:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(self.data_root / tar_rel, "r:") as tar:
                for info in tar:
                    if info.isfile():
                        key, ext = _split_member(info.name)
                        members.setdefault(key, {})[ext] = info
                pickles = {key: _read_member(tar, group.get("pickle")) for key, group in members.items()}
        except (tarfile.TarError, OSError) as exc:
            result.rejects.append(
                self.reject(
                    tar_rel,
                    Reject("malformed_annotation", f"unreadable tar after {len(members)} samples: {exc}"),
                    file=tar_rel,
                )
            )
            return
        for key in sorted(members):
            self._index_member(tar_rel, key, members[key], pickles[key], result, seen)

    def _index_member(
        self, tar_rel: str, key: str, group: dict, data: bytes | None, result: IndexResult, seen: set[str]
    ) -> None:
        record = f"{tar_rel}#{key}"
        image_ext = next((e for e in _IMAGE_EXTS if e in group), None)
        try:
            if data is None or image_ext is None:
                raise Reject(
                    "malformed_annotation", f"sample {key} lacks a {'pickle' if data is None else 'jpg'} member"
                )
            regions = _regions_of(safe_loads(data, f"{record}.pickle"))
        except Reject as exc:
            result.rejects.append(self.reject(record, exc, file=tar_rel))
            return
        image_info, pickle_info = group[image_ext], group["pickle"]
        tar_stem = PurePosixPath(tar_rel).stem
        for i, region in enumerate(regions):
            uid = _UNSAFE_KEY_CHARS.sub("_", f"{tar_stem}-{key}-{i}")
            try:
                if uid in seen:
                    raise Reject("duplicate_id", f"region id {uid} appears twice")
                if not isinstance(region.get("caption"), str) or not region["caption"].strip():
                    raise Reject("bad_text", f"region {i} has no caption")
                if not isinstance(region.get("mask_rle"), dict):
                    raise Reject("malformed_annotation", f"region {i} has no mask_rle dict")
            except Reject as exc:
                result.rejects.append(self.reject(f"{record}[{i}]", exc, file=tar_rel))
                continue
            seen.add(uid)
            payload = {
                "tar": tar_rel,
                "key": key,
                "image": [f"{key}.{image_ext}", image_info.offset_data, image_info.size],
                "pickle": [pickle_info.offset_data, pickle_info.size],
                "region": i,
            }
            result.units.append(Unit(uid, payload, str(region.get("img_id", region.get("image", key))), tar_rel))

    # ---- build -------------------------------------------------------------------------------
    def image_identity(self, unit: Unit) -> int | None:
        """COCO-Stuff regions are on COCO images and keep COCO's image ids (leakage checks)."""
        return int(unit.image_ref) if self.subset == "COCOStuff" and unit.image_ref.isdigit() else None

    def image_location(self, unit: Unit) -> ImageLocation:
        member, offset, size = unit.payload["image"]
        return ImageLocation(unit.payload["tar"], offset, size)

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = unit.payload
        tar_path = checked_path(self.data_root, safe_relpath(p["tar"]))
        record = f"{p['tar']}#{p['key']}"
        region = _regions_of(safe_loads(read_range(tar_path, *p["pickle"]), f"{record}.pickle"))[p["region"]]
        member, offset, size = p["image"]
        image = check_image_bytes(
            read_range(tar_path, offset, size), f"{p['tar']}#{member}", options.max_image_pixels, options.image_check
        )
        rle = segmentation_to_rle(region["mask_rle"], image.height, image.width)
        rle, box = nonempty_region_mask(rle, f"{record} region {p['region']}")
        caption = region["caption"].strip()
        q_id, question = pick("dlc_question", options.seed, key)
        dq_id, dlres_template = pick("dlres_question", options.seed, key)
        da_id, answer = pick("dlres_answer", options.seed, key)
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                split="train",
                image_id=str(region.get("img_id", "")),
                ann_ids=[str(region.get("ann_id", p["region"]))],
                source_file=p["tar"],
                repeat=repeat,
            ),
            image=image,
            regions=[Region(mask=rle, bbox=box, label=_text_or_none(region.get("category")), caption=caption)],
            conversations=[Turn("user", with_image(question)), Turn("assistant", caption)],
            region_inputs=[0],
            seg_targets=[],
            pair=View(
                conversations=[
                    Turn("user", with_image(dlres_query(dlres_template, caption))),
                    Turn("assistant", answer),
                ],
                region_inputs=[],
                seg_targets=[0],
            ),
            templates=[q_id, dq_id, da_id],
        )
        return Built(sample, image)


def _split_member(name: str) -> tuple[str, str]:
    """webdataset grouping: the key is the path up to the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo | None) -> bytes | None:
    if info is None:
        return None
    handle = tar.extractfile(info)
    return handle.read() if handle is not None else None


def _regions_of(obj: Any) -> list[dict]:
    """The pickle holds a list of region dicts (a lone dict is accepted as a list of one)."""
    regions = [obj] if isinstance(obj, dict) else obj
    if not isinstance(regions, list) or not regions or not all(isinstance(r, dict) for r in regions):
        raise Reject("malformed_annotation", f"pickle holds {type(obj).__name__}, not a non-empty list of region dicts")
    return regions


def _text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


_SUBSETS = {
    "dam_cocostuff": ("COCOStuff", "Stage 2 Detailed Localized: COCO-Stuff 28,365"),
    "dam_mapillary": ("Mapillary", "Stage 2 Detailed Localized: Mapillary 17,762"),
    "dam_openimages": ("OpenImages", "Stage 2 Detailed Localized: OpenImages 64,874"),
    "dam_sam": ("SAM", "Stage 2 Detailed Localized: SAM (10%) 592,822"),
}
for _name, (_subset, _row) in _SUBSETS.items():
    register_source(_name, DamSource, f"Describe-Anything {_subset}: paired DLC + DL-RES", _row, subset=_subset)
