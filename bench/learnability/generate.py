"""Synthetic scenes for the learnability benchmark, in the Describe-Anything, RefCOCO and PACO-LVIS layouts.

One *data root* per split (``train``, ``heldout``), seeded apart so that no held-out scene is a training scene.
Scenes come from :func:`fclm_data.synthetic.scenes.make_scene` with a :class:`SceneSpec` (the difficulty) and are
written by the toolkit's own release writers:

* Describe-Anything -- ``dam.write_subset`` (subset ``SAM``): every object a region with its detailed caption and
  its shape as ``category`` -> DLC + DL-RES pairs (and ROC labels for evaluation);
* RefCOCO -- ``refcoco.write_refer_dataset`` (``train`` or ``val`` split): short referring expressions -> RES;
* PACO-LVIS -- a COCO JSON whose categories are the shapes, on the same synthetic COCO images -> ROC training
  (the paco_lvis source asks the ROC questions and answers with the category name).

Deterministic: the same arguments write the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.dam import write_subset
from fclm_data.synthetic.osprey import encode_segmentation, polygon_mask
from fclm_data.synthetic.refcoco import write_refer_dataset
from fclm_data.synthetic.scenes import SHAPES, SceneSpec

#: COCO ids of the PACO images (after RefCOCO's, which start at 1)
PACO_FIRST_ID = 100_000


@dataclass(frozen=True)
class SplitSize:
    """Images written per format."""

    dam: int = 600  #: Describe-Anything images (1-4 regions each)
    refcoco: int = 200  #: RefCOCO images
    paco: int = 200  #: PACO-LVIS images


@dataclass(frozen=True)
class Difficulty:
    """The scene spec and image size of the benchmark (see README for the choice)."""

    image_size: tuple[int, int] = (128, 96)  #: (width, height); the model's frame is the long side
    spec: SceneSpec = field(default_factory=lambda: SceneSpec(max_objects=3, radius_scale=1.2, unique="colour"))


def generate_split(root: Path | str, split: str, sizes: SplitSize, difficulty: Difficulty, seed: int = 0) -> Path:
    """Write one split's releases under ``root``; ``split`` is "train" or "heldout" (RefCOCO's val)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    root = Path(root)
    # the held-out root draws every scene from another seed stream: no held-out scene is a training scene
    ctx = SynthContext(root, seed=seed * 2 + (split == "heldout"), image_size=difficulty.image_size,
                       scene_spec=difficulty.spec)  # fmt: skip
    if sizes.dam:
        write_subset(ctx, "SAM", per_tar=sizes.dam, tars=1)
    if sizes.refcoco:
        refer_split = "train" if split == "train" else "val"
        write_refer_dataset(ctx, "refcoco", {"train": 0, "val": 0, "testA": 0, "testB": 0, refer_split: sizes.refcoco})
    if sizes.paco:
        ctx.write_text(f"paco/paco_lvis_v1_{'train' if split == 'train' else 'val'}.json",
                       json.dumps(paco_json(ctx, sizes.paco)))  # fmt: skip
    (root / "learnability.json").write_text(json.dumps({"split": split, "seed": seed, "sizes": asdict(sizes),
                                                        "difficulty": asdict(difficulty)}, indent=1))  # fmt: skip
    return root


def paco_json(ctx: SynthContext, n_images: int) -> dict:
    """PACO-LVIS COCO JSON over ``n_images`` synthetic COCO images; one object annotation per shape, named by it."""
    categories = [{"id": i + 1, "name": shape, "supercategory": "OBJECT"} for i, shape in enumerate(SHAPES)]
    images, annotations = [], []
    for image_id in range(PACO_FIRST_ID, PACO_FIRST_ID + n_images):
        scene = ctx.coco_image(image_id)
        directory = "train2017" if image_id % 2 == 0 else "val2017"  # where ctx.coco_image writes it
        images.append({"id": image_id, "file_name": f"{directory}/{image_id:012d}.jpg", "height": scene.height,
                       "width": scene.width})  # fmt: skip
        for k, obj in enumerate(scene.objects):
            mask = polygon_mask(obj.polygon, scene.height, scene.width)
            annotations.append({"id": image_id * 10 + k, "image_id": image_id, "bbox": obj.box,
                                "category_id": SHAPES.index(obj.shape) + 1, "area": int(np.count_nonzero(mask)),
                                "segmentation": encode_segmentation(mask, "rle_compressed"),
                                "obj_ann_id": image_id * 10 + k})  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories, "part_categories": []}
