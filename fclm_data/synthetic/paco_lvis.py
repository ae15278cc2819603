"""PACO-LVIS (``paco/paco_lvis_v1_{train,val}.json``) and Osprey's ROC eval files.

The eval files are ``osprey/eval/paco_val_1k_category.json`` and ``lvis_val_1k_category.json``.

PACO: COCO JSON whose ``categories`` hold object names and "object:part" names (the training
release's 531-category form), plus ``part_categories``; ``file_name`` carries the COCO 2017 split
directory ("train2017/000000000400.jpg" for even ids, "val2017/..." for odd ids, where the shared
synthetic COCO puts them). Each object has an object annotation and one part annotation (the
object's upper half), with compressed RLE masks; one mask is an uncompressed RLE. Quirks: names
with "_(...)" qualifiers, an all-zero mask, an annotation with an unknown category.

Osprey eval: a list of ``{file_name (bare %012d.jpg), height, width, categories, annotations}``
aligned by index, masks as polygons or compressed RLE. Quirks: a record whose lists differ in
length and a region with an empty category name.
"""

from __future__ import annotations

import json

import numpy as np

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.osprey import encode_segmentation, polygon_mask
from fclm_data.synthetic.scenes import Scene

#: shape -> (PACO object name, part name): names keep PACO's "_(...)" and underscore quirks
OBJECTS = {
    "circle": ("clock", "hand"),
    "square": ("television_set", "screen"),
    "triangle": ("glass_(drink_container)", "rim"),
    "rectangle": ("car_(automobile)", "back_cover"),
}
SPLITS = {"train": (400, 6), "val": (412, 2)}  #: split -> (first COCO id, images)
EVAL_FIRST_ID = {"paco": 420, "lvis": 426}
UNKNOWN_CATEGORY = 999
#: eval-file masks alternate between Osprey's two encodings
EVAL_FORMS = ("polygon", "rle_compressed")


def categories() -> tuple[list[dict], list[dict]]:
    """(categories with objects then object:part names, part_categories)."""
    objects = [name for name, _ in OBJECTS.values()]
    pairs = [f"{name}:{part}" for name, part in OBJECTS.values()]
    cats = [{"id": i + 1, "name": n, "supercategory": "OBJECT"} for i, n in enumerate(objects + pairs)]
    parts = [{"id": i + 1, "name": part, "supercategory": "PART"} for i, (_, part) in enumerate(OBJECTS.values())]
    return cats, parts


def _category_id(name: str) -> int:
    return next(c["id"] for c in categories()[0] if c["name"] == name)


def part_mask(scene: Scene, polygon: list[float]) -> np.ndarray:
    """The object's upper half: a part that lies inside its object."""
    mask = polygon_mask(polygon, scene.height, scene.width)
    rows = np.flatnonzero(mask.any(axis=1))
    mask[(rows[0] + rows[-1]) // 2 + 1 :, :] = 0
    return mask


def paco_split(ctx: SynthContext, split: str) -> dict:
    first, n = SPLITS[split]
    images, anns = [], []
    for image_id in range(first, first + ctx.count(n)):
        scene = ctx.coco_image(image_id)
        directory = "train2017" if image_id % 2 == 0 else "val2017"
        images.append({"id": image_id, "file_name": f"{directory}/{image_id:012d}.jpg", "height": scene.height,
                       "width": scene.width, "neg_category_ids": [], "not_exhaustive_category_ids": []})  # fmt: skip
        for k, obj in enumerate(scene.objects):
            name, part = OBJECTS[obj.shape]
            object_mask = polygon_mask(obj.polygon, scene.height, scene.width)
            object_id = image_id * 100 + 2 * k
            pair = ((object_id, object_mask, name), (object_id + 1, part_mask(scene, obj.polygon), f"{name}:{part}"))
            for ann_id, mask, category in pair:
                form = "rle_uncompressed" if ann_id == first * 100 else "rle_compressed"
                anns.append({"id": ann_id, "image_id": image_id, "category_id": _category_id(category), "bbox": obj.box,
                             "area": int(mask.sum()), "segmentation": encode_segmentation(mask, form),
                             "obj_ann_id": object_id, "attribute_ids": []})  # fmt: skip
    if split == "train":
        empty = np.zeros((images[0]["height"], images[0]["width"]), np.uint8)
        anns[1]["segmentation"] = encode_segmentation(empty, "rle_compressed")
        anns[2]["category_id"] = UNKNOWN_CATEGORY
    cats, parts = categories()
    return {"images": images, "annotations": anns, "categories": cats, "part_categories": parts, "attributes": []}


def roc_eval_records(ctx: SynthContext, which: str) -> list[dict]:
    records = []
    for serial, image_id in enumerate(range(EVAL_FIRST_ID[which], EVAL_FIRST_ID[which] + 4)):
        scene = ctx.coco_image(image_id)
        names, segs = [], []
        for k, obj in enumerate(scene.objects):
            name, part = OBJECTS[obj.shape]
            mask = polygon_mask(obj.polygon, scene.height, scene.width)
            if which == "paco" and k % 2:
                names.append(f"{name}:{part}")
                mask = part_mask(scene, obj.polygon)
                segs.append({"segmentation": encode_segmentation(mask, "rle_compressed")})
            else:
                names.append(name)
                segs.append({"segmentation": encode_segmentation(mask, EVAL_FORMS[k % 2], obj.polygon)})
        record = {"file_name": f"{image_id:012d}.jpg", "height": scene.height, "width": scene.width,
                  "categories": names, "annotations": segs}  # fmt: skip
        if serial == 2:
            record["annotations"] = record["annotations"] + [segs[0]]  # lists of different lengths
        elif serial == 3:
            record["categories"] = [""] + names[1:]  # an empty category name
        records.append(record)
    return records


def write(ctx: SynthContext) -> None:
    for split in SPLITS:
        ctx.write_text(f"paco/paco_lvis_v1_{split}.json", json.dumps(paco_split(ctx, split)))
    for which in EVAL_FIRST_ID:
        ctx.write_text(f"osprey/eval/{which}_val_1k_category.json", json.dumps(roc_eval_records(ctx, which)))


register_generator("paco_lvis", write)
