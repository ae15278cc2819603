"""Pix2Cap-COCO: ``pix2cap/pix2cap_coco_{train,val}.json`` + COCO panoptic PNGs + COCO 2017 images.

The JSON is COCO-panoptic (``images``, ``annotations`` with ``segments_info`` carrying a
``description`` per segment, ``categories``); masks live in ``coco/panoptic_{split}2017/<id>.png``
with segment id = R + 256 G + 256^2 B. Every shape is a "thing" segment and the rest of the image a
"stuff" background segment. Quirks written on purpose: segment ids whose colours use all three
channels, void pixels (id 0 and an id missing from ``segments_info``), a train image with a
too-short description (pix2cap's training registration drops it), a listed segment without any
pixel, and a val segment with an empty description. Images: shared synthetic COCO ids 300-319.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import CATEGORY_IDS, Scene

#: split -> (first COCO id, images): even ids are COCO train2017 images, odd ids val2017
#: (see SynthContext.coco_image); ids stay within 300-399 up to scale 8
SPLITS = {"train": (300, 6), "val": (301, 2)}
SHORT_DESCRIPTION_IMAGE = 304  #: a train image pix2cap's registration drops
EMPTY_SEGMENT_IMAGE = 306  #: a listed segment whose pixels are all void
EMPTY_DESCRIPTION_IMAGE = 303  #: a val image with one undescribed segment
BACKGROUND = {"id": 200, "name": "background-other", "supercategory": "other", "isthing": 0}


def segment_ids(rng: np.random.Generator, n: int) -> list[int]:
    """Distinct ids whose R, G and B bytes are all non-zero (as real panoptic colours often are)."""
    ids: list[int] = []
    while len(ids) < n:
        r, g, b = (int(v) for v in rng.integers(1, 256, size=3))
        if (sid := r + 256 * g + 65536 * b) not in ids:
            ids.append(sid)
    return ids


def _raster(polygon: list[float], scene: Scene) -> np.ndarray:
    return mask_utils.decode(mask_utils.frPyObjects([polygon], scene.height, scene.width))[:, :, 0].astype(bool)


def _png(ids: np.ndarray) -> bytes:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _segment(sid: int, category_id: int, region: np.ndarray, description: str) -> dict:
    ys, xs = np.nonzero(region)
    box = (
        [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        if xs.size
        else [0, 0, 0, 0]
    )
    area = int(region.sum())
    return {"id": sid, "category_id": category_id, "iscrowd": 0, "bbox": box, "area": area, "description": description}


def _image(ctx: SynthContext, image_id: int, rng: np.random.Generator) -> tuple[dict, dict, bytes]:
    scene = ctx.coco_image(image_id)
    n = len(scene.objects)
    sids = segment_ids(rng, n + 3)  # objects, background, an unlisted (void) id, an absent segment
    ids = np.full((scene.height, scene.width), sids[n], dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        ids[_raster(obj.polygon, scene)] = sids[k]
    ids[scene.height - 12 :, :10] = 0  # void: unlabeled pixels
    ids[:6, scene.width - 14 :] = sids[n + 1]  # void: an id segments_info does not list
    segments = [
        _segment(sids[k], CATEGORY_IDS[o.shape], ids == sids[k], o.caption()) for k, o in enumerate(scene.objects)
    ]
    background = "The smooth, softly shaded background that fills the rest of the picture around the shapes."
    segments.append(_segment(sids[n], BACKGROUND["id"], ids == sids[n], background))
    if image_id == SHORT_DESCRIPTION_IMAGE:
        segments[0]["description"] = "ok"
    if image_id == EMPTY_DESCRIPTION_IMAGE:
        segments[-1]["description"] = ""
    if image_id == EMPTY_SEGMENT_IMAGE:
        absent = "A patch of floor that the panoptic map does not show."
        segments.append(_segment(sids[n + 2], BACKGROUND["id"], ids == sids[n + 2], absent))
    name = f"{image_id:012d}"
    image = {"id": image_id, "file_name": f"{name}.jpg", "height": scene.height, "width": scene.width}
    annotation = {"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments}
    return image, annotation, _png(ids)


def write(ctx: SynthContext) -> None:
    rng = ctx.rng("pix2cap")
    categories = [{"id": i, "name": s, "supercategory": "shape", "isthing": 1} for s, i in CATEGORY_IDS.items()] + [
        BACKGROUND
    ]
    for split, (first_id, count) in SPLITS.items():
        images, annotations = [], []
        for image_id in range(first_id, first_id + 2 * ctx.count(count), 2):
            image, annotation, png = _image(ctx, image_id, rng)
            ctx.write_bytes(f"coco/panoptic_{split}2017/{annotation['file_name']}", png)
            images.append(image)
            annotations.append(annotation)
        body = {
            "info": {"description": "Pix2Cap-COCO (synthetic)"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        ctx.write_text(f"pix2cap/pix2cap_coco_{split}.json", json.dumps(body))


register_generator("pix2cap", write)
