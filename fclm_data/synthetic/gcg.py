"""GLaMM's GranD-f release layout (GCG family), with the quirks the readers must survive.

Writes under the data root:

* ``GranDf/annotations/train/GranDf_HA_GCG_train.json`` + ``GranDf_HA_images/train/sa_<id>.jpg``
* ``GranDf/annotations/train/OpenPsgGCG_{train,val}.json`` on COCO train2017 (even ids 600-698)
* ``GranDf/annotations/train/flickr_mergedGT_GCG_{train,val}.json`` + ``flickr30k/<photo>.jpg``
* ``GranDf/annotations/train/RefCOCOg_GCG_{train,val}.json`` on COCO train2014 (ids 700-799)
* ``GranDf/annotations/val_test/{val,test}_gcg_coco_{caption,mask}_gt.json`` + ``GranDf_HA_images/val_test``

Quirks: a caption wrapped in '"' (offsets valid after stripping), a null grounding, a record
without height/width/image_id, a phrase key whose case differs from the caption, a phrase's
masks split over several RLEs, overlapping spans, a wrong offset, a phrase absent from the
caption, an RLE of the wrong size; Flickr string width/height, a caption of < 3 words, a tiny
image, a zero-area box, a repeated annotation id, a prefixed file name, an ``ignore`` flag, two
spans on one annotation; RefCOCOg-GCG capitalised and repeated sentences, a sentence nested in
a longer one, a sentence absent from the caption, a 2-point polygon, a two-polygon ref; GT
labels out of caption order, a label absent from the caption, an empty GT mask.
"""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.synthetic import register_generator
from fclm_data.synthetic.context import SynthContext
from fclm_data.synthetic.scenes import Scene, SceneObject, make_scene

ANN_DIR = "GranDf/annotations/train"
EVAL_DIR = "GranDf/annotations/val_test"
SA_FIRST_ID, SA_EVAL_FIRST_ID, FLICKR_FIRST_ID = 10010541, 20010001, 1000092795
OPENPSG_FIRST_ID, REFCOCOG_FIRST_ID = 600, 700  # OpenPSG: even ids, the COCO 2017 *train* copies


class Caption:
    """A caption assembled piece by piece, remembering the character span of every tagged piece."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: list[tuple[str, list[int]]] = []

    def add(self, text: str, tag: str | None = None) -> Caption:
        if tag is not None:
            self.spans.append((tag, [len(self.text), len(self.text) + len(text)]))
        self.text += text
        return self


def phrase(obj: SceneObject) -> str:
    return f"a {obj.size} {obj.colour} {obj.shape}"


def rle(scene: Scene, polygons: list[list[float]], size: tuple[int, int] | None = None) -> dict:
    h, w = size or (scene.height, scene.width)
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    return {"size": [h, w], "counts": merged["counts"].decode("ascii")}


def scene_with(ctx: SynthContext, rng: np.random.Generator, min_objects: int) -> Scene:
    """A scene with at least ``min_objects`` distinctly described objects."""
    while True:
        scene = make_scene(rng, *ctx.image_size)
        if len({phrase(o) for o in scene.objects}) == len(scene.objects) >= min_objects:
            return scene


def coco_scenes(ctx: SynthContext, first: int, step: int, count: int, min_objects: int) -> list[tuple[int, Scene]]:
    """``count`` shared COCO images from id ``first`` on (every ``step``) with enough objects."""
    picked, image_id = [], first
    while len(picked) < count:
        scene = ctx.coco_image(image_id)
        if len({phrase(o) for o in scene.objects}) == len(scene.objects) >= min_objects:
            picked.append((image_id, scene))
        image_id += step
    return picked


def describe(scene: Scene) -> Caption:
    """'In this picture, <a large red circle> sits in the upper left, and ...'."""
    caption = Caption().add("In this picture, ")
    for k, obj in enumerate(scene.objects):
        if k:
            caption.add(", and " if k == len(scene.objects) - 1 else ", ")
        caption.add(phrase(obj), tag=str(k)).add(f" sits in the {obj.position}")
    return caption.add(".")


# ---- GranD-f HA / OpenPSG -------------------------------------------------------------------------
def grounding(scene: Scene, span: list[int], *objects: SceneObject) -> dict:
    return {"token_positives": span, "rle_masks": [rle(scene, [o.polygon]) for o in objects]}


def grandf_record(scene: Scene, file_name: str, caption: Caption, image_id: str | None) -> dict:
    objects = scene.objects
    groundings = {phrase(objects[int(tag)]): grounding(scene, span, objects[int(tag)]) for tag, span in caption.spans}
    record = {"file_name": file_name, "caption": caption.text, "groundings": groundings}
    if image_id is not None:
        record.update(height=scene.height, width=scene.width, image_id=image_id)
    return record


def grandf_quirks(scene: Scene, kind: str, record: dict) -> dict:
    groundings, first = record["groundings"], phrase(scene.objects[0])
    if kind == "quoted":
        record["caption"] = f'"{record["caption"]}"'  # offsets stay relative to the stripped text
    elif kind == "null_grounding":
        for key in ("height", "width", "image_id"):
            record.pop(key, None)
        groundings["the background"] = None
    elif kind == "union_overlap_case":
        objects = scene.objects
        caption = Caption().add(phrase(objects[0]), tag="p0").add(" and ").add(phrase(objects[1]), tag="p1")
        caption.add(" are ").add("the shapes in this picture", tag="all").add(".")
        spans = dict(caption.spans)
        inner = [spans["p0"][0] + len("a "), spans["p0"][1]]  # "<size> <colour> <shape>" inside "a <size> ..."
        record["caption"] = caption.text
        record["groundings"] = {
            phrase(objects[0]): grounding(scene, spans["p0"], objects[0]),
            phrase(objects[1]).upper(): grounding(scene, spans["p1"], objects[1]),  # key case differs from the caption
            phrase(objects[0])[2:]: grounding(scene, inner, objects[0]),  # nested in the first phrase
            "the shapes in this picture": grounding(scene, spans["all"], *objects),  # one phrase, several RLEs
        }
    elif kind == "only_null":
        record["groundings"] = {first: None}
    elif kind == "bad_rle_size":
        groundings[first]["rle_masks"] = [rle(scene, [scene.objects[0].polygon], (scene.height + 1, scene.width))]
    elif kind == "bad_offsets":
        start, end = groundings[first]["token_positives"]
        groundings[first]["token_positives"] = [start + 2, end + 2]  # repaired to the nearest occurrence
        groundings["a green hexagon"] = {"token_positives": [0, 15], "rle_masks": groundings[first]["rle_masks"]}
    return record


GRANDF_KINDS = ("normal", "quoted", "null_grounding", "union_overlap_case", "only_null", "bad_rle_size", "bad_offsets")


def write_grandf(ctx: SynthContext) -> None:
    rng = ctx.rng("gcg/grandf")
    kinds = list(GRANDF_KINDS) + ["normal"] * ctx.count(2)
    records = []
    for n, kind in enumerate(kinds):
        scene = scene_with(ctx, rng, 2)
        name = f"sa_{SA_FIRST_ID + n}.jpg"
        ctx.write_bytes(f"GranDf_HA_images/train/{name}", scene.jpeg_bytes())
        record = grandf_record(scene, name, describe(scene), str(SA_FIRST_ID + n))
        records.append(grandf_quirks(scene, kind, record))
    ctx.write_text(f"{ANN_DIR}/GranDf_HA_GCG_train.json", json.dumps(records))


def write_openpsg(ctx: SynthContext) -> None:
    picked = coco_scenes(ctx, OPENPSG_FIRST_ID, 2, 6, 1)
    for split, chosen in (("train", picked[:4]), ("val", picked[4:])):
        records = []
        for n, (image_id, scene) in enumerate(chosen):
            record = grandf_record(scene, f"{image_id:012d}.jpg", describe(scene), str(image_id))
            records.append(grandf_quirks(scene, "quoted" if n == 1 else "normal", record))
        ctx.write_text(f"{ANN_DIR}/OpenPsgGCG_{split}.json", json.dumps(records))


# ---- Flickr30K GCG (COCO format, one images[] entry per caption) -----------------------------------
class FlickrFile:
    def __init__(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def entry(self, scene: Scene, photo: int, caption: Caption, **overrides) -> int:
        entry_id = len(self.images) + 1
        image = {"id": entry_id, "file_name": f"{photo}.jpg", "height": scene.height, "width": scene.width}
        self.images.append({**image, "caption": caption.text, **overrides})
        return entry_id

    def ann(self, entry_id: int, scene: Scene, obj: SceneObject, spans: list[list[int]], **overrides) -> dict:
        x, y, w, h = obj.box
        ann = {
            "id": 100 + len(self.annotations), "image_id": entry_id, "category_id": 1, "iscrowd": 0,
            "bbox": obj.box, "area": round(w * h, 2), "tokens_positive": spans,
            "sam_mask": rle(scene, [obj.polygon]),
        }  # fmt: skip
        ann.update(overrides)
        self.annotations.append(ann)
        return ann

    def described(self, scene: Scene, photo: int, **overrides) -> int:
        caption = describe(scene)
        entry_id = self.entry(scene, photo, caption, **overrides)
        for tag, span in caption.spans:
            self.ann(entry_id, scene, scene.objects[int(tag)], [span])
        return entry_id

    def json(self) -> str:
        categories = [{"id": 1, "name": "object"}]
        return json.dumps({"images": self.images, "annotations": self.annotations, "categories": categories})


def write_flickr(ctx: SynthContext) -> None:
    rng = ctx.rng("gcg/flickr")
    scenes = [scene_with(ctx, rng, 2) for _ in range(4 + ctx.count(1))]
    photos = [FLICKR_FIRST_ID + k for k in range(len(scenes) + 1)]
    for photo, scene in zip(photos, scenes):
        ctx.write_bytes(f"flickr30k/{photo}.jpg", scene.jpeg_bytes())
    tiny = make_scene(rng, 40, 24)
    ctx.write_bytes(f"flickr30k/{photos[-1]}.jpg", tiny.jpeg_bytes())
    train, (s0, s1, s2) = FlickrFile(), scenes[:3]
    first = train.described(s0, photos[0])
    o0, o1 = s0.objects[:2]
    caption = Caption().add(phrase(o0), "a").add(" is next to ").add(phrase(o1), "b")
    caption.add("; ").add(f"the {o0.colour} {o0.shape}", "a2").add(" is bigger.")
    second = train.entry(s0, photos[0], caption)
    spans = dict(caption.spans)
    train.ann(second, s0, o0, [spans["a"], spans["a2"]])  # two spans: the first is used
    train.ann(second, s0, o1, [spans["b"]], bbox=[o1.box[0], o1.box[1], 0.0, o1.box[3]], area=0.0)  # zero-area box
    duplicate_id = next(a["id"] for a in train.annotations if a["image_id"] == first)
    train.ann(second, s0, o1, [spans["b"]], id=duplicate_id)  # repeated annotation id
    train.described(s1, photos[1], width=str(s1.width), height=str(s1.height))  # string sizes
    train.described(s1, photos[1], file_name=f"flickr30k_images_{photos[1]}.jpg")  # prefixed file name
    short = train.entry(s2, photos[2], Caption().add("Two ").add("shapes", "s"))  # < 3 words
    train.ann(short, s2, s2.objects[0], [[4, 10]])
    small = train.entry(tiny, photos[-1], Caption().add("A tiny picture ").add("of nothing", "n"))
    square = SceneObject(
        "square", "red", "plain", "small", [2, 2, 20, 2, 20, 20, 2, 20], [2, 2, 18, 18], "middle centre"
    )
    train.ann(small, tiny, square, [[15, 25]])
    flagged = train.described(s2, photos[2])
    next(a for a in train.annotations if a["image_id"] == flagged)["ignore"] = True
    for photo, scene in zip(photos[4:-1], scenes[4:]):
        train.described(scene, photo)
    ctx.write_text(f"{ANN_DIR}/flickr_mergedGT_GCG_train.json", train.json())
    val = FlickrFile()
    val.described(scenes[3], photos[3])
    ctx.write_text(f"{ANN_DIR}/flickr_mergedGT_GCG_val.json", val.json())


# ---- RefCOCOg GCG (single-key dicts, sentences located in the caption) -----------------------------
def ref(obj: SceneObject, sentence: str, segmentation: list | None = None) -> dict:
    return {"sentence": sentence, "bbox": obj.box, "segmentation": segmentation or [obj.polygon]}


def refcocog_refs(kind: str, scene: Scene) -> tuple[str, list[dict]]:
    o0, o1 = scene.objects[:2]
    e0, e1 = o0.expression(), o1.expression()
    if kind == "capitalised":  # GLaMM's caption.find(sentence) on the lowercased caption gives -1
        return f"In this photo the {e0} is near the {e1}.", [ref(o0, f"The {e0}"), ref(o1, e1)]
    if kind == "repeated":
        refs = [ref(o0, "a coloured shape"), ref(o1, "a coloured shape")]
        return "There is a coloured shape here and a coloured shape there.", refs
    if kind == "nested":
        outer, inner = f"the {o0.name} beside the {o1.name}", f"the {o1.name}"
        refs = [ref(o1, inner), ref(o0, outer), ref(o0, "a purple star")]
        refs.append(ref(o1, "the biggest thing", [[1.0, 2.0, 3.0, 4.0]]))  # a 2-point "polygon"
        return f"We see {outer}, the biggest thing here.", refs
    if kind == "quoted_two_polygons":
        return f'"There is {e0}."', [ref(o0, e0, [o0.polygon, o1.polygon])]
    if kind == "absent":
        return f"There is {e0}.", [ref(o0, "a flying saucer")]
    return f"The picture has {e0}. There is also {e1}.", [ref(o0, e0), ref(o1, e1)]


REFCOCOG_KINDS = ("normal", "capitalised", "repeated", "nested", "quoted_two_polygons", "absent")


def write_refcocog(ctx: SynthContext) -> None:
    kinds = list(REFCOCOG_KINDS) + ["normal"] * ctx.count(1)
    picked = coco_scenes(ctx, REFCOCOG_FIRST_ID, 1, len(kinds) + 1, 2)
    splits = {"train": list(zip(kinds, picked)), "val": [("normal", picked[-1])]}
    for split, chosen in splits.items():
        records = []
        for kind, (image_id, scene) in chosen:
            caption, refs = refcocog_refs(kind, scene)
            record = {"refs": refs, "img_file_name": f"COCO_train2014_{image_id:012d}.jpg", "caption": caption}
            records.append({str(image_id): record})
        ctx.write_text(f"{ANN_DIR}/RefCOCOg_GCG_{split}.json", json.dumps(records))


# ---- GranD-f val/test ground truth (COCO caption GT with labels + COCO mask GT) --------------------
def write_eval(ctx: SynthContext) -> None:
    rng = ctx.rng("gcg/grandf_eval")
    serial = 0
    for split, n_images in (("val", 3), ("test", 2)):
        cap_images, cap_anns, mask_images, mask_anns = [], [], [], []
        for n in range(n_images):
            scene = scene_with(ctx, rng, 2)
            stem = f"sa_{SA_EVAL_FIRST_ID + serial}"
            serial += 1
            ctx.write_bytes(f"GranDf_HA_images/val_test/{stem}.jpg", scene.jpeg_bytes())
            caption = describe(scene)
            labels = [phrase(scene.objects[int(tag)]) for tag, _ in caption.spans]
            masks = [rle(scene, [scene.objects[int(tag)].polygon]) for tag, _ in caption.spans]
            if split == "test" and n == 1:  # a label the caption does not contain: an untagged GT region
                labels.append("a hidden shape")
                masks.append(rle(scene, [scene.objects[0].polygon]))
            if split == "val" and n == 0:  # GT phrases listed in another order than the caption's
                labels, masks = labels[::-1], masks[::-1]
            if split == "val" and n == 2:  # an empty GT mask
                empty = mask_utils.encode(np.zeros((scene.height, scene.width), np.uint8, order="F"))
                masks[-1] = {"size": [scene.height, scene.width], "counts": empty["counts"].decode()}
            cap_images.append({"id": stem})
            cap_anns.append({"id": len(cap_anns), "image_id": stem, "caption": caption.text, "labels": labels})
            mask_images.append({"id": stem, "file_name": f"{stem}.jpg", "height": scene.height, "width": scene.width})
            for m in masks:
                ann_id = serial * 100 + len(mask_anns)
                mask_anns.append({"id": ann_id, "image_id": stem, "category_id": 1, "iscrowd": 0, "segmentation": m})
        categories = [{"id": 1, "name": "object"}]
        captions_gt = {"images": cap_images, "annotations": cap_anns}
        ctx.write_text(f"{EVAL_DIR}/{split}_gcg_coco_caption_gt.json", json.dumps(captions_gt))
        masks_gt = {"images": mask_images, "annotations": mask_anns, "categories": categories}
        ctx.write_text(f"{EVAL_DIR}/{split}_gcg_coco_mask_gt.json", json.dumps(masks_gt))


def write(ctx: SynthContext) -> None:
    write_grandf(ctx)
    write_openpsg(ctx)
    write_flickr(ctx)
    write_refcocog(ctx)
    write_eval(ctx)


register_generator("gcg", write)
