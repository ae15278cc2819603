"""gRefCOCO in its release layout: ``refer_seg/grefcoco/grefs(unc).json`` + ``instances.json`` over COCO
train2014 images (the shared synthetic COCO), with single-, multi- and no-target expressions in every split."""

from __future__ import annotations

import json

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import CATEGORY_IDS

SPLITS = {"train": 2, "val": 2, "testA": 1, "testB": 1}  #: images per split (times ``ctx.scale``)
FIRST_ID = 1  #: the same COCO ids as RefCOCO's (gRefCOCO is built on RefCOCO's images)
ABSENT = ("the purple elephant", "a zebra on the left", "the flying car")  #: no-target expressions


def write(ctx: SynthContext) -> None:
    images, annotations, refs = [], [], []
    image_id, sent_id = FIRST_ID, 0

    def add_ref(split: str, ann_ids: list[int], categories: list[int], texts: list[str]) -> None:
        nonlocal sent_id
        sentences = [{"tokens": t.split(), "raw": t, "sent_id": sent_id + i, "sent": t.lower()}
                     for i, t in enumerate(texts)]  # fmt: skip
        sent_id += len(texts)
        refs.append({"ref_id": len(refs), "ann_id": ann_ids, "image_id": image_id, "category_id": categories,
                     "split": split, "sent_ids": [s["sent_id"] for s in sentences], "no_target": ann_ids == [-1],
                     "file_name": f"COCO_train2014_{image_id:012d}.jpg", "sentences": sentences})  # fmt: skip

    for split, n in SPLITS.items():
        for _ in range(ctx.count(n)):
            scene = ctx.coco_image(image_id)
            images.append({"id": image_id, "file_name": f"COCO_train2014_{image_id:012d}.jpg",
                           "height": scene.height, "width": scene.width})  # fmt: skip
            ids = []
            for k, obj in enumerate(scene.objects):
                ann_id = image_id * 100 + k
                ids.append(ann_id)
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": CATEGORY_IDS[obj.shape],
                                    "bbox": obj.box, "segmentation": [obj.polygon], "iscrowd": 0,
                                    "area": round(obj.box[2] * obj.box[3], 2)})  # fmt: skip
            objects = scene.objects
            add_ref(split, [ids[0]], [CATEGORY_IDS[objects[0].shape]], [objects[0].expression()])
            if len(objects) > 1:
                add_ref(split, ids[:2], [CATEGORY_IDS[o.shape] for o in objects[:2]],
                        [f"{objects[0].expression()} and {objects[1].expression()}"])  # fmt: skip
            add_ref(split, [-1], [-1], [ABSENT[image_id % len(ABSENT)]])
            image_id += 1
    categories = [{"id": i, "name": name, "supercategory": "shape"} for name, i in CATEGORY_IDS.items()]
    ctx.write_text("refer_seg/grefcoco/instances.json",
                   json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    ctx.write_text("refer_seg/grefcoco/grefs(unc).json", json.dumps(refs))


register_generator("grefcoco", write)
