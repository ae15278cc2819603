"""Osprey-724K in its HF release layout: ``osprey/osprey_<name>.json``.

``<name>`` is ``short_form``, ``lvis_positive_negative``, ``conversation`` or ``detail_description``.

Each file is a JSON list of per-image records ``{id, file_name, height, width, annotation:
[{segmentation, bbox, area}], conversations | description}``. Conversation, short-form and detail
records name synthetic COCO train2014 images (``COCO_train2014_%012d.jpg``); LVIS pos/neg names
are bare ``%012d.jpg`` (COCO 2017, even ids in train2017 and odd ids in val2017). Region masks
rotate through the three pycocotools encodings. Quirks written on purpose (tests look them up by
their text): every region-tag spelling of :data:`TAG_VARIANTS`, a region named twice, assistant
turns naming regions, an unanswered question, an existing short-answer suffix, a detail
description naming two regions and one naming a region the record lacks.
"""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import Scene

SEGMENTATION_FORMS = ("polygon", "rle_uncompressed", "rle_compressed")
SHORT_SUFFIX = " Answer the question using a single word or phrase."
#: tag spelling in the release -> "repaired" or the reject code it must produce (region 1 of 2+)
TAG_VARIANTS = {
    "<region1]": "repaired",
    "<region 1>": "repaired",
    "<Region1>": "repaired",
    "<regin1>": "repaired",
    "<region1.": "repaired",
    "<region of1>": "repaired",
    "<region>": "bad_text",
    "<region9>": "malformed_annotation",
    "<region1 is": "bad_text",
}
#: COCO ids of this family: conversation / short form / detail use 440-479, pos/neg 480-499.
FIRST_ID = {"conversation": 440, "short_form": 452, "detail_description": 460, "lvis_positive_negative": 480}


def polygon_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.frPyObjects([polygon], height, width)[0])


def encode_segmentation(mask: np.ndarray, form: str, polygon: list[float] | None = None):
    """A binary mask in one pycocotools form (the polygon form needs the polygon it came from)."""
    if form == "polygon":
        return [polygon]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if form == "rle_compressed":
        return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts  # uncompressed counts always start with a run of zeros
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def annotation(scene: Scene, serial: int) -> list[dict]:
    """One region per scene object, encodings rotating with ``serial``."""
    regions = []
    for k, obj in enumerate(scene.objects):
        form = SEGMENTATION_FORMS[(serial + k) % 3]
        mask = polygon_mask(obj.polygon, scene.height, scene.width)
        regions.append(
            {"segmentation": encode_segmentation(mask, form, obj.polygon), "bbox": obj.box, "area": int(mask.sum())}
        )
    return regions


def _record(image_id: int, scene: Scene, file_name: str, serial: int) -> dict:
    return {
        "id": image_id,
        "file_name": file_name,
        "height": scene.height,
        "width": scene.width,
        "annotation": annotation(scene, serial),
    }


def _turns(*pairs: tuple[str, str]) -> list[dict]:
    out = []
    for human, gpt in pairs:
        out += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return out


def _scenes(ctx: SynthContext, first: int, count: int, min_objects: int = 1) -> list[tuple[int, Scene]]:
    """``count`` synthetic COCO images from ``first`` on with at least ``min_objects`` objects."""
    found, image_id = [], first
    while len(found) < count:
        scene = ctx.coco_image(image_id)
        if len(scene.objects) >= min_objects:
            found.append((image_id, scene))
        image_id += 1
    return found


def conversation_records(ctx: SynthContext) -> list[dict]:
    records = []
    variants = list(TAG_VARIANTS)
    pool = _scenes(ctx, FIRST_ID["conversation"], 6, min_objects=2)  # records share images to stay small
    for serial in range(len(variants) + 3):
        image_id, scene = pool[serial % len(pool)]
        a, b = scene.objects[0], scene.objects[1]
        record = _record(image_id, scene, f"COCO_train2014_{image_id:012d}.jpg", serial)
        if serial < len(variants):  # one record per tag spelling, in the first question
            tag = variants[serial]
            record["conversations"] = _turns((f"<image>\nWhat colour is {tag} in the picture?", f"It is {a.colour}."))
        elif serial == len(variants):  # a region named twice and assistant turns naming regions
            record["conversations"] = _turns(
                (
                    "<image>\nCompare <region2> with <region1>. Is <region2> bigger?",
                    f"<region2> is {b.size} and <region1> is {a.size}.",
                ),
                ("Where is <region1>?", f"<region1> is in the {a.position} part of the image."),
            )
        elif serial == len(variants) + 1:  # an unanswered last question
            record["conversations"] = _turns(("<image>\nWhat is <region1>?", f"A {a.name}."))[:1]
        else:
            record["conversations"] = _turns(
                ("<image>\nWhat is in <region1>?", f"A {a.texture} {a.name}."),
                ("And what about <region2>?", f"<region2> shows a {b.name} in the {b.position} part."),
            )
        records.append(record)
    return records


def short_form_records(ctx: SynthContext) -> list[dict]:
    records = []
    for serial, (image_id, scene) in enumerate(_scenes(ctx, FIRST_ID["short_form"], 3)):
        obj = scene.objects[-1]
        n = len(scene.objects)
        record = _record(image_id, scene, f"COCO_train2014_{image_id:012d}.jpg", serial)
        first = "<image>\nWhat colour is <region1>?" + (SHORT_SUFFIX if serial == 0 else "")
        record["conversations"] = _turns((first, scene.objects[0].colour), (f"What shape is <region{n}>?", obj.shape))
        records.append(record)
    return records


def detail_records(ctx: SynthContext) -> list[dict]:
    records = []
    for serial, (image_id, scene) in enumerate(_scenes(ctx, FIRST_ID["detail_description"], 4, min_objects=2)):
        record = _record(image_id, scene, f"COCO_train2014_{image_id:012d}.jpg", serial)
        descriptions = [f"<region{k + 1}>: {obj.caption()}" for k, obj in enumerate(scene.objects)]
        if serial == 0:
            descriptions[0] = descriptions[0].replace("<region1>", "<Region1>")
            descriptions[1] = descriptions[1].replace("<region2>", "<regin2>")
        elif serial == 1:
            descriptions[0] += " It lies left of <region2>."  # names two regions
        elif serial == 2:
            descriptions.append(f"<region{len(scene.objects) + 1}>: A region the record does not have.")
        record["description"] = descriptions
        records.append(record)
    return records


def posneg_records(ctx: SynthContext) -> list[dict]:
    records = []
    for serial, (image_id, scene) in enumerate(_scenes(ctx, FIRST_ID["lvis_positive_negative"], 4)):
        obj = scene.objects[0]
        wrong = "square" if obj.shape != "square" else "circle"
        record = _record(image_id, scene, f"{image_id:012d}.jpg", serial)
        record["conversations"] = _turns(
            (f"<image>\nIs <region1> a {obj.shape}?", "Yes"), (f"Is <region1> a {wrong}?", "No")
        )
        records.append(record)
    return records


def write(ctx: SynthContext) -> None:
    files = {
        "conversation": conversation_records(ctx),
        "short_form": short_form_records(ctx),
        "detail_description": detail_records(ctx),
        "lvis_positive_negative": posneg_records(ctx),
    }
    for name, records in files.items():
        ctx.write_text(f"osprey/osprey_{name}.json", json.dumps(records))


register_generator("osprey", write)
