"""MUSE in PixelLM's release layout: ``muse/muse_{train,val,test_less,test_many}.json``.

Each file is a JSON list of per-image records (``file_name`` -> COCO train2014, or ``coco_url`` ->
COCO train2017/val2017) with ``questions``, ``answers`` (answer objects with polygon lists or
uncompressed RLE ``segmentation``, ``category_name``, ``rephrased_name``, ``bbox``) and usually
``text_answers`` with one ``{seg}`` per object. Quirks written on purpose (train): a record
without ``text_answers``, a text answer whose ``{seg}`` count does not match its objects, an
object made of two polygons, uncompressed-RLE objects, records with and without ``id``.
Images are the shared synthetic COCO, ids 200-229.
"""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import CATEGORY_IDS, Scene, SceneObject

#: split -> COCO ids of its images
SPLITS = {
    "train": list(range(200, 208)),
    "val": [210, 211],
    "test_less": [212, 213],
    "test_many": [214, 215],
}


def uncompressed_rle(polygon: list[float], height: int, width: int) -> dict:
    """The polygon's raster as an uncompressed RLE (``counts`` list, column-major runs)."""
    binary = mask_utils.decode(mask_utils.frPyObjects([polygon], height, width))[:, :, 0]
    flat = binary.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


def _object(obj: SceneObject, ann_id: int, scene: Scene, segmentation_form: str) -> dict:
    if segmentation_form == "rle":
        segmentation = uncompressed_rle(obj.polygon, scene.height, scene.width)
    elif segmentation_form == "two_polygons":  # a second, overlapping polygon: the union is the object
        x, y, w, h = obj.box
        extra = [x + w * 0.6, y - 1.0, x + w + 1.0, y - 1.0, x + w + 1.0, y + h * 0.4, x + w * 0.6, y + h * 0.4]
        segmentation = [obj.polygon, [round(v, 2) for v in extra]]
    else:
        segmentation = [obj.polygon]
    return {
        "id": ann_id,
        "category_id": CATEGORY_IDS[obj.shape],
        "category_name": obj.shape,
        "rephrased_name": f"{obj.size} {obj.colour} {obj.shape} in the {obj.position}",
        "bbox": obj.box,
        "segmentation": segmentation,
    }


def _questions(scene: Scene, rng: np.random.Generator, many: bool) -> list[tuple[str, list[int]]]:
    """(question, indexes of its target objects): learnable from the scene attributes."""
    objects = scene.objects
    first = objects[int(rng.integers(len(objects)))]
    colour_group = [i for i, o in enumerate(objects) if o.colour == first.colour]
    shape_group = [i for i, o in enumerate(objects) if o.shape == first.shape]
    everything = list(range(len(objects)))
    if many:
        return [("Which objects would you have to move to leave only the background in this picture?", everything)]
    return [
        (
            f"I am collecting everything that is {first.colour}. Which objects in this picture should I take?",
            colour_group,
        ),
        (f"Which things here have the outline of a {first.shape}?", shape_group),
        ("If I wanted to count every object in the scene, what would I point at?", everything),
    ][: int(rng.integers(1, 4))]


def _text_answer(objects: list[SceneObject]) -> str:
    parts = [f"the {o.size} {o.colour} {o.shape} {{seg}}" for o in objects]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"You should point at {joined}, which match what you asked for."


def _image_fields(image_id: int, scene: Scene, position: int) -> dict:
    if position % 3 == 0:  # RefCOCO-style record: file_name in train2014, no id
        return {"file_name": f"COCO_train2014_{image_id:012d}.jpg", "height": scene.height, "width": scene.width}
    split2017 = "train2017" if image_id % 2 == 0 else "val2017"
    url = f"http://images.cocodataset.org/{split2017}/{image_id:012d}.jpg"
    return {"id": image_id, "coco_url": url, "height": scene.height, "width": scene.width}


def write_split(ctx: SynthContext, split: str) -> None:
    rng = ctx.rng(f"muse/{split}")
    records = []
    for position, image_id in enumerate(SPLITS[split] * ctx.scale):
        scene = ctx.coco_image(image_id)
        forms = ["rle" if (position + k) % 4 == 1 else "polygon" for k in range(len(scene.objects))]
        if split == "train" and position == 2:
            forms[0] = "two_polygons"
        objects = [_object(o, image_id * 100 + k, scene, forms[k]) for k, o in enumerate(scene.objects)]
        qas = _questions(scene, rng, many=split == "test_many")
        if split == "test_less":
            qas = [(q, targets[:1]) for q, targets in qas]
        record = {
            **_image_fields(image_id, scene, position),
            "ann_list": [{"category_id": o["category_id"], "bbox": o["bbox"]} for o in objects],
            "questions": [q for q, _ in qas],
            "answers": [[objects[i] for i in targets] for _, targets in qas],
            "text_answers": [_text_answer([scene.objects[i] for i in targets]) for _, targets in qas],
        }
        if split == "train" and position == 1:
            del record["text_answers"]  # PixelLM answers from its templates
        if split == "train" and position == 3:
            record["text_answers"][0] = record["text_answers"][0].replace(" {seg}", "", 1)  # one {seg} short
        records.append(record)
    ctx.write_text(f"muse/muse_{split}.json", json.dumps(records))


def write(ctx: SynthContext) -> None:
    for split in SPLITS:
        write_split(ctx, split)


register_generator("muse", write)
