"""ReasonSeg in LISA's release layout: ``reason_seg/ReasonSeg/{train,val,test}/image_N.{jpg,json}``.

Per-image LabelMe-style JSON (``text``, ``is_sentence``, ``shapes`` with target/ignore/flag
polygons as ``[[x, y], ...]``) and ``explanatory/train.json`` (``{image, query, outputs}``).
Quirks written on purpose: an ignore polygon inside a target (a hole LISA labels 255), an ignore
polygon around a smaller target (the target wins), a flag shape, a JSON file encoded as cp1252
with non-ASCII text, files with and without LabelMe's ``imageHeight``/``imageWidth``, and a train
image without an explanation. Images are their own scenes (ReasonSeg is not COCO).
"""

from __future__ import annotations

import json

import numpy as np

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import Scene, SceneObject, make_scene

ROOT = "reason_seg/ReasonSeg"
SPLITS = {"train": 6, "val": 3, "test": 3}
#: (split, image number) of the special files
CP1252_IMAGE = ("train", 3)
UNEXPLAINED_IMAGE = ("train", 4)


def _points(flat: list[float]) -> list[list[float]]:
    return [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]


def _box_polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _shape(label: str, points: list[list[float]], image_name: str) -> dict:
    return {
        "label": label,
        "points": points,
        "group_id": None,
        "shape_type": "polygon",
        "flags": {},
        "image_name": image_name,
    }


def _instructions(target: SceneObject, is_sentence: bool, n: int, cp1252: bool) -> list[str]:
    if not is_sentence:
        side = target.position.split()[-1]
        return [f"{target.colour} {target.shape}", f"{target.size} {target.shape}", f"{target.shape} on the {side}"][:n]
    texts = [
        f"Something {target.colour} is needed to finish the decoration. Which shape in the picture could provide it?",
        f"If you had to find every {target.shape} in this scene, what would you point at?",
        f"Which object in the {target.position} part of the image would you pick up first?",
        f"What could be used as a {target.size} {target.texture} token in a board game here?",
        f"Which {target.shape}-shaped item would you trace to copy its outline?",
    ][:n]
    if cp1252:  # cp1252-only bytes: é (0xE9) and a curly apostrophe (0x92)
        texts[0] = f"At the café, the {target.colour} thing is the waiter’s tray. Which shape in the picture is it?"
    return texts


def _annotation(scene: Scene, split: str, number: int, rng: np.random.Generator) -> dict:
    name = f"image_{number}.jpg"
    target = scene.objects[0]
    targets = [o for o in scene.objects if o.shape == target.shape]
    shapes = [_shape("target", _points(o.polygon), name) for o in targets]
    x, y, w, h = target.box
    if number % 3 == 0:  # a hole: ignore polygon inside the target
        shapes.append(_shape("ignore", _box_polygon(x + w * 0.35, y + h * 0.35, x + w * 0.65, y + h * 0.65), name))
    elif number % 3 == 1:  # an ignore band around the target: the (smaller) target is painted last
        pad = 4.0
        x0, y0 = max(0.0, x - pad), max(0.0, y - pad)
        band = _box_polygon(x0, y0, min(scene.width - 1.0, x + w + pad), min(scene.height - 1.0, y + h + pad))
        shapes.insert(0, _shape("ignore", band, name))
    if number % 2 == 0:  # a deprecated flag shape, skipped by every loader
        shapes.append(_shape("flag", _box_polygon(2, 2, 12, 12), name))
    is_sentence = number % 4 != 1
    n_texts = int(rng.integers(1, 6)) if split == "train" else int(rng.integers(1, 3))
    data = {
        "version": "4.5.6",
        "flags": {},
        "text": _instructions(target, is_sentence, n_texts, (split, number) == CP1252_IMAGE),
        "is_sentence": is_sentence,
        "shapes": shapes,
        "imagePath": name,
        "imageData": None,
    }
    if number % 2 == 1:
        data.update(imageHeight=scene.height, imageWidth=scene.width)
    return data


def _explanation(target: SceneObject) -> str:
    return (
        f"The {target.size} {target.colour} {target.shape} in the {target.position} part of the picture fits the "
        f"request: its {target.texture} surface and its outline make it the only sensible choice."
    )


def write(ctx: SynthContext) -> None:
    rng = ctx.rng("reasonseg")
    explanations = []
    for split, count in SPLITS.items():
        for number in range(ctx.count(count)):
            scene = make_scene(np.random.default_rng([ctx.seed, 5903, len(split), number]), *ctx.image_size)
            data = _annotation(scene, split, number, rng)
            ctx.write_bytes(f"{ROOT}/{split}/image_{number}.jpg", scene.jpeg_bytes())
            encoding = "cp1252" if (split, number) == CP1252_IMAGE else "utf-8"
            ctx.write_bytes(
                f"{ROOT}/{split}/image_{number}.json", json.dumps(data, ensure_ascii=False).encode(encoding)
            )
            if split == "train" and (split, number) != UNEXPLAINED_IMAGE:
                explanation = _explanation(scene.objects[0])
                explanations.append({"image": f"image_{number}.jpg", "query": data["text"][0], "outputs": explanation})
    ctx.write_text(f"{ROOT}/explanatory/train.json", json.dumps(explanations, indent=1))


register_generator("reasonseg", write)
