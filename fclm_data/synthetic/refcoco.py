"""RefCOCO / RefCOCO+ / RefCOCOg in the lichengunc/refer release layout.

``refer_seg/<dataset>/instances.json`` (COCO images/annotations/categories over the dataset's
images, polygon segmentations) and ``refs(<splitBy>).p`` (pickled list of refs whose ``file_name``
carries the fake ``_<ann_id>`` suffix), images in ``coco/train2014``.
"""

from __future__ import annotations

import json
import pickle

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import CATEGORY_IDS

#: dataset -> (splitBy, split sizes in images, first COCO id)
DATASETS = {
    "refcoco": ("unc", {"train": 8, "val": 2, "testA": 1, "testB": 1}, 1),
    "refcoco+": ("unc", {"train": 8, "val": 2, "testA": 1, "testB": 1}, 1),
    "refcocog": ("umd", {"train": 8, "val": 2, "test": 2}, 7),
}


def write_refer_dataset(ctx: SynthContext, dataset: str, split_sizes: dict[str, int] | None = None) -> None:
    """One refer dataset; ``split_sizes`` (split -> images, scaled by ``ctx.scale``) overrides :data:`DATASETS`."""
    split_by, default_sizes, first_id = DATASETS[dataset]
    split_sizes = default_sizes if split_sizes is None else split_sizes
    rng = ctx.rng(f"refer/{dataset}")
    images, annotations, refs = [], [], []
    image_id = first_id
    sent_id = 0
    for split, n in split_sizes.items():
        for _ in range(ctx.count(n)):
            scene = ctx.coco_image(image_id)
            images.append(
                {
                    "id": image_id,
                    "file_name": f"COCO_train2014_{image_id:012d}.jpg",
                    "height": scene.height,
                    "width": scene.width,
                }
            )
            for k, obj in enumerate(scene.objects):
                ann_id = image_id * 100 + k
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": CATEGORY_IDS[obj.shape],
                        "bbox": obj.box,
                        "segmentation": [obj.polygon],
                        "area": round(obj.box[2] * obj.box[3], 2),
                        "iscrowd": 0,
                    }
                )
                if rng.random() < 0.25 and k > 0:
                    continue  # not every object is referred to, as in the release
                sentences = []
                for variant in range(int(rng.integers(1, 4))):
                    raw = _variant(obj.expression(), variant, obj)
                    sentences.append(
                        {"tokens": raw.lower().split(), "raw": raw, "sent_id": sent_id, "sent": raw.lower()}
                    )
                    sent_id += 1
                refs.append(
                    {
                        "ref_id": len(refs),
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "category_id": CATEGORY_IDS[obj.shape],
                        "split": split,
                        "sent_ids": [s["sent_id"] for s in sentences],
                        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                        "sentences": sentences,
                    }
                )
            image_id += 1
    categories = [{"id": i, "name": name, "supercategory": "shape"} for name, i in CATEGORY_IDS.items()]
    instances = {"images": images, "annotations": annotations, "categories": categories}
    ctx.write_text(f"refer_seg/{dataset}/instances.json", json.dumps(instances))
    ctx.write_bytes(f"refer_seg/{dataset}/refs({split_by}).p", pickle.dumps(refs, protocol=2))


def _variant(expression: str, variant: int, obj) -> str:
    if variant == 0:
        return expression
    if variant == 1:
        return f"The {obj.colour} {obj.shape}"
    return f"{obj.texture} {obj.shape} in the {obj.position}"


def write(ctx: SynthContext) -> None:
    for dataset in DATASETS:
        write_refer_dataset(ctx, dataset)


register_generator("refcoco", write)
