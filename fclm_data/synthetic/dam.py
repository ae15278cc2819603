"""Describe-Anything release layout: ``describe-anything-dataset/<Subset>/images/NNNNNNNN.tar``.

Each tar sample is ``<key>.jpg`` + ``<key>.pickle``; the pickle is a list of region dicts
``{img_id, ann_id, image, category, caption, mask_rle}`` with ``mask_rle`` a compressed COCO RLE.
COCOStuff images are synthetic COCO images (so COCO-based leakage is realistic); the other
subsets get their own scenes. Counts are written as ``str`` in some subsets and ``bytes`` in
others, since third-party readers show both.
"""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import Scene

#: subset -> (images per tar, tars, counts as bytes?)
SUBSETS = {"COCOStuff": (6, 1, False), "Mapillary": (4, 1, True), "OpenImages": (5, 1, False), "SAM": (4, 2, False)}
COCO_FIRST_ID = 21


def region_records(scene: Scene, img_id: int, image_name: str, first_ann: int, as_bytes: bool) -> list[dict]:
    records = []
    for k, obj in enumerate(scene.objects):
        rle = mask_utils.merge(mask_utils.frPyObjects([obj.polygon], scene.height, scene.width))
        counts = rle["counts"] if as_bytes else rle["counts"].decode("ascii")
        records.append(
            {
                "img_id": img_id,
                "ann_id": first_ann + k,
                "image": image_name,
                "category": obj.shape,
                "caption": obj.caption(),
                "mask_rle": {"size": [scene.height, scene.width], "counts": counts},
            }
        )
    return records


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_subset(ctx: SynthContext, subset: str, per_tar: int | None = None, tars: int | None = None) -> None:
    """One subset's tars; ``per_tar`` / ``tars`` override :data:`SUBSETS` (``per_tar`` is then not scaled)."""
    default_per_tar, default_tars, as_bytes = SUBSETS[subset]
    tars = default_tars if tars is None else tars
    per_tar = ctx.count(default_per_tar) if per_tar is None else per_tar
    serial = 0
    for t in range(tars):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for _ in range(per_tar):
                if subset == "COCOStuff":
                    img_id = COCO_FIRST_ID + serial
                    scene, image_name = ctx.coco_image(img_id), f"{img_id:012d}.jpg"
                else:
                    img_id = serial
                    scene = ctx.scene(np.random.default_rng([ctx.seed, len(subset), serial]))
                    image_name = f"{subset.lower()}_{serial:06d}.jpg"
                key = f"{t:04d}{serial:06d}"
                add_member(tar, f"{key}.jpg", scene.jpeg_bytes())
                records = region_records(scene, img_id, image_name, serial * 10, as_bytes)
                add_member(tar, f"{key}.pickle", pickle.dumps(records, protocol=4))
                serial += 1
        ctx.write_bytes(f"describe-anything-dataset/{subset}/images/{t:08d}.tar", buf.getvalue())


def write(ctx: SynthContext) -> None:
    for subset in SUBSETS:
        write_subset(ctx, subset)


register_generator("dam", write)
