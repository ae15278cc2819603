"""Visual Genome region captions: Osprey's ``vg/vg_train_with_mask.json`` + ``vg/image/`` and GLaMM's
GRiT ``visual_genome/train.json`` + ``visual_genome/images/`` (the same VG images in both places).

Both files are COCO-style (``images`` / ``annotations``, annotation ``caption``). Osprey's has
HQ-SAM-like masks rotating through the three pycocotools encodings; GRiT's has ``bbox`` [x, y, w,
h] and ``area`` only. VG images are their own scenes (ids 1..n, ``<id>.jpg``), not COCO. Quirks:
Osprey file: an empty caption and a 2-point polygon (in the image with the fewest regions); GRiT
file: a zero-area box, a box under 1 pixel wide, one partly outside the image (clipped) and one
wholly outside.
"""

from __future__ import annotations

import json

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.osprey import SEGMENTATION_FORMS, encode_segmentation, polygon_mask
from fclm_data.synthetic.scenes import Scene, make_scene

IMAGES = 5


def vg_scenes(ctx: SynthContext) -> list[tuple[int, Scene]]:
    rng = ctx.rng("visual_genome")
    scenes = []
    for vg_id in range(1, ctx.count(IMAGES) + 1):
        scene = make_scene(rng, *ctx.image_size)
        data = scene.jpeg_bytes()
        ctx.write_bytes(f"vg/image/{vg_id}.jpg", data)
        ctx.write_bytes(f"visual_genome/images/{vg_id}.jpg", data)
        scenes.append((vg_id, scene))
    return scenes


def _image_entry(vg_id: int, scene: Scene) -> dict:
    return {"id": vg_id, "file_name": f"{vg_id}.jpg", "height": scene.height, "width": scene.width}


def osprey_vg(scenes: list[tuple[int, Scene]]) -> dict:
    images, anns = [], []
    for vg_id, scene in scenes:
        images.append(_image_entry(vg_id, scene))
        for k, obj in enumerate(scene.objects):
            mask = polygon_mask(obj.polygon, scene.height, scene.width)
            form = SEGMENTATION_FORMS[(vg_id + k) % 3]
            anns.append({"id": vg_id * 100 + k, "image_id": vg_id, "caption": obj.expression(), "bbox": obj.box,
                         "area": int(mask.sum()), "segmentation": encode_segmentation(mask, form, obj.polygon)})  # fmt: skip
    small = min(scenes, key=lambda s: len(s[1].objects))[0]
    anns.append({"id": small * 100 + 50, "image_id": small, "caption": "a broken outline", "bbox": [1, 1, 2, 2], "area": 0,
                 "segmentation": [[1.0, 1.0, 3.0, 3.0]]})  # fmt: skip
    anns.append({"id": scenes[0][0] * 100 + 51, "image_id": scenes[0][0], "caption": "  ", "bbox": [1, 1, 5, 5], "area": 25,
                 "segmentation": [[1.0, 1.0, 6.0, 1.0, 6.0, 6.0]]})  # fmt: skip
    return {"images": images, "annotations": anns}


def grit_vg(scenes: list[tuple[int, Scene]]) -> dict:
    images, anns = [], []
    for vg_id, scene in scenes:
        images.append(_image_entry(vg_id, scene))
        for k, obj in enumerate(scene.objects):
            x, y, w, h = obj.box
            anns.append(
                {
                    "id": vg_id * 100 + k,
                    "image_id": vg_id,
                    "bbox": [x, y, w, h],
                    "area": round(w * h, 2),
                    "caption": obj.expression(),
                }
            )
    vg_id, scene = scenes[0]
    base = vg_id * 100 + 50
    anns += [
        {"id": base, "image_id": vg_id, "bbox": [10.0, 10.0, 0.0, 8.0], "area": 0.0, "caption": "nothing at all"},
        {"id": base + 1, "image_id": vg_id, "bbox": [10.0, 10.0, 0.5, 8.0], "area": 4.0, "caption": "a thin line"},
        {
            "id": base + 2,
            "image_id": vg_id,
            "bbox": [scene.width - 30.0, -12.0, 60.0, 40.0],
            "area": 2400.0,
            "caption": "the top right corner",
        },
        {
            "id": base + 3,
            "image_id": vg_id,
            "bbox": [scene.width + 5.0, 5.0, 20.0, 20.0],
            "area": 400.0,
            "caption": "beyond the edge",
        },
    ]
    return {"images": images, "annotations": anns}


def write(ctx: SynthContext) -> None:
    scenes = vg_scenes(ctx)
    ctx.write_text("vg/vg_train_with_mask.json", json.dumps(osprey_vg(scenes)))
    ctx.write_text("visual_genome/train.json", json.dumps(grit_vg(scenes)))


register_generator("visual_genome", write)
