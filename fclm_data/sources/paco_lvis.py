"""PACO-LVIS referring object classification, and Osprey's PACO / LVIS ROC evaluation files.

Layouts (defaults, all overridable):

* ``paco_lvis``: ``paco/paco_lvis_v1_{split}.json`` (facebookresearch/paco ``paco_lvis_v1.zip``),
  COCO JSON: ``images [{id, file_name, height, width, ...}]`` with ``file_name`` carrying the COCO
  split directory ("train2017/000000000042.jpg", resolved under ``coco_root``), ``annotations
  [{id, image_id, category_id, segmentation (RLE, compressed or not), bbox, obj_ann_id, ...}]``,
  ``categories`` (the training release's 531 = 75 objects + 456 "object:part" names) and
  ``part_categories`` (200 parts). A part annotation whose ``category_id`` is only in
  ``part_categories`` is named "<object of obj_ann_id>:<part>".
* ``osprey_paco_roc_eval`` / ``osprey_lvis_roc_eval``: Osprey's ``paco_val_1k_category.json`` /
  ``lvis_val_1k_category.json`` (HF ``sunshine-lwt/Osprey-ValData``) under ``osprey/eval/``: a
  list of ``{file_name, height, width, categories: [name], annotations: [{segmentation}]}`` aligned
  by index, ``file_name`` a bare ``%012d.jpg`` of COCO 2017 (Osprey's eval reads one folder of all
  COCO images; we try ``coco2017_dirs`` in order: train2017, then val2017).

Labels: the release name stays in ``Region.label``; the answer is rendered by ``label_style``:
"natural" (default) drops "_(...)" qualifiers and underscores and writes "object:part" as "part of
the object" ("car_(automobile)" -> "car", "dog:head" -> "head of the dog", as in the supplement's
Fig. 7), "osprey" is Osprey's evaluation form (underscores and ':' to spaces: "dog head").

Units: ``unit="image"`` (default) is one sample per image with up to ``max_regions`` regions
(objects and parts; seeded draw per sample key, release order), one ROC turn pair each;
``unit="region"`` is one sample per annotation. Table 7's 113,212 matches neither (45,790 train
images; 217,117 objects + 395,071 parts): recipes subsample or repeat. The eval sources are one
sample per region, with the question fixed by ``question_template`` (1 = Fig. 7's prompt).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fclm_data.coco import CocoFile, annotation_label, is_id, iter_coco_annotations, names_of, read_coco_tables
from fclm_data.errors import Reject
from fclm_data.images import ImageData, expect_size, read_first_image, safe_relpath
from fclm_data.jsonstream import SpanReader
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.schema import Provenance, Region, Turn
from fclm_data.seeding import stable_hash
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.sources.osprey import coco_image_candidates, coco_image_id
from fclm_data.sources.pairing import as_view, paired, text_to_seg_view
from fclm_data.sources.visual_genome import id_order, key_safe
from fclm_data.templates import ROC_QUESTIONS, pick, with_image

_QUALIFIER = re.compile(r"_\([^)]*\)")
LABEL_STYLES = ("natural", "osprey")


def natural_label(name: str) -> str:
    """ "car_(automobile)" -> "car"; "bottle:cap" -> "cap of the bottle"; "trash_can" -> "trash can"."""
    parts = [" ".join(_QUALIFIER.sub("", p).replace("_", " ").split()) for p in name.split(":")]
    return f"{parts[1]} of the {parts[0]}" if len(parts) == 2 else " ".join(parts)


def osprey_label(name: str) -> str:
    """Osprey's evaluation rendering (osprey/eval/lvis_paco_eval.py): '_' and ':' become spaces."""
    return name.replace("_", " ").replace(":", " ")


def render_label(name: str, style: str) -> str:
    return natural_label(name) if style == "natural" else osprey_label(name)


@dataclass
class _RocSource(Source):
    coco_root: str = "coco"
    coco2017_dirs: tuple[str, ...] = ("coco/train2017", "coco/val2017")
    label_style: str = "natural"  #: "natural" ("head of the dog") | "osprey" ("dog head")
    question_template: int = 0  #: 0: seeded choice among ROC_QUESTIONS; n: always question n
    max_regions: int = 1
    split = "train"
    task = "roc"

    def __post_init__(self) -> None:
        if self.label_style not in LABEL_STYLES:
            raise ValueError(f"label_style must be one of {LABEL_STYLES}, got {self.label_style!r}")
        if not 0 <= self.question_template <= len(ROC_QUESTIONS):
            raise ValueError(f"question_template must be 0..{len(ROC_QUESTIONS)}, got {self.question_template}")

    def _question(self, key: str, seed: int, n: int) -> tuple[str, str]:
        if self.question_template:
            return f"roc_question:{self.question_template}", ROC_QUESTIONS[self.question_template - 1]
        return pick("roc_question", seed, key, f"turn{n}")

    def image_candidates(self, unit: Unit) -> list[str]:
        train2014 = f"{self.coco_root}/train2014"
        return coco_image_candidates(unit.payload["file_name"], self.coco_root, train2014, tuple(self.coco2017_dirs))

    def _build(self, p: dict, key: str, repeat: int, options: BuildOptions, source_file: str) -> Built:
        """Read the image, convert up to ``max_regions`` of ``p["anns"]`` and ask for each label."""
        image = read_first_image(
            self.data_root, self.image_candidates(Unit("", p)), options.max_image_pixels, options.image_check
        )
        expect_size(image, p["width"], p["height"], f"{source_file} {p['record']}")
        anns = p["anns"]
        chosen, dropped = [], []
        draw = sorted(range(len(anns)), key=lambda i: stable_hash("roc_region", options.seed, key, anns[i]["ann_id"]))
        for position in draw:
            if len(chosen) == self.max_regions:
                break
            try:
                chosen.append((position, _region(anns[position], image)))
            except Reject as exc:
                exc.file = exc.file or source_file
                dropped.append((f"ann {anns[position]['ann_id']}", exc))
        if not chosen:
            raise Reject(dropped[0][1].code, f"no usable region: {dropped[0][1].detail}", source_file)
        chosen.sort(key=lambda c: c[0])
        turns, templates = [], []
        for n, (position, region) in enumerate(chosen):
            template_id, question = self._question(key, options.seed, n)
            answer = render_label(region.label, self.label_style)
            turns += [Turn("user", with_image(question) if n == 0 else question), Turn("assistant", answer)]
            templates.append(template_id)
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                self.split, p["image_id"], [str(anns[i]["ann_id"]) for i, _ in chosen], source_file, repeat
            ),
            image=image,
            regions=[region for _, region in chosen],
            conversations=turns,
            region_inputs=list(range(len(chosen))),
            seg_targets=[],
            templates=templates,
        )
        return Built(sample, image, dropped)


def _region(ann: dict, image: ImageData) -> Region:
    rle = segmentation_to_rle(ann["segmentation"], image.height, image.width)
    rle, box = nonempty_region_mask(rle, f"ann {ann['ann_id']}")
    return Region(mask=rle, bbox=box, label=ann["name"])


@dataclass
class PacoLvisSource(_RocSource):
    split: str = "train"
    file: str = "paco/paco_lvis_v1_{split}.json"
    unit: str = "image"  #: "image": up to max_regions regions per sample | "region": one per annotation
    max_regions: int = 3
    include_parts: bool = True  #: False keeps only the 75 object categories
    #: write, as ``pair``, a RES view (LISA's questions, the rendered name -> [SEG]) of every region whose name
    #: is unique among the image's annotations (a name shared by two objects would not say which to segment);
    #: a sample with no such region stays unpaired. Default off (``pairing.py``).
    pair: bool = False

    @property
    def ann_file(self) -> str:
        return self.file.format(split=self.split)

    def required_paths(self) -> list[str]:
        return [self.ann_file, self.coco_root]

    def index(self) -> IndexResult:
        missing = self.missing_paths()
        if self.ann_file in missing:
            return IndexResult([], [], missing)
        try:  # streamed twice (tables with each annotation's id/category, then the annotations): masks stay on disk
            coco = read_coco_tables(self.data_root, self.ann_file, ("images", "annotations", "categories"),
                                    ann_fields=("id", "category_id"))  # fmt: skip
            parts = coco.others.get("part_categories")
            if parts is not None and not isinstance(parts, list):
                raise Reject("malformed_annotation", f"{self.ann_file} 'part_categories' is not a list", self.ann_file)
            result = IndexResult([], [], missing)
            result.rejects += [self.reject(label, exc, file=self.ann_file) for label, exc in coco.entry_rejects]
            images, per_image = self._index_annotations(coco, names_of(parts or []), result)
        except Reject as exc:
            return IndexResult([], [self.reject(self.ann_file, exc)], missing)
        for image_id in sorted(per_image, key=id_order):
            meta = {**images[image_id], "record": f"image {image_id}", "image_id": str(image_id)}
            if self.pair:  # which names the image holds once (only then: the default payload is unchanged)
                names_here = [e["name"] for e in per_image[image_id]]
                meta["unique_names"] = sorted(n for n in set(names_here) if names_here.count(n) == 1)
            entries = sorted(per_image[image_id], key=lambda e: id_order(e["ann_id"]))
            groups = [entries] if self.unit == "image" else [[e] for e in entries]
            for group in groups:
                uid = key_safe(f"{self.split}-{image_id if self.unit == 'image' else group[0]['ann_id']}")
                result.units.append(Unit(uid, {**meta, "anns": group}, str(image_id)))
        return result

    def _index_annotations(
        self, coco: CocoFile, part_names: dict, result: IndexResult
    ) -> tuple[dict[Any, dict], dict[Any, list[dict]]]:
        """Image metas and slim entries (the mask's byte span in place of the mask) per image; rejects recorded."""
        names = (coco.categories, part_names)
        images: dict[Any, dict] = {}
        per_image: dict[Any, list[dict]] = defaultdict(list)
        seen: set = set()
        for pos, (offset, length, ann) in enumerate(iter_coco_annotations(self.data_root, self.ann_file)):
            ann_id = annotation_label(ann, pos)
            try:
                entry = _paco_entry(ann, ann_id, coco, names, seen)
                images[ann["image_id"]] = _paco_image(coco.image_meta(ann["image_id"]))
            except Reject as exc:
                result.rejects.append(self.reject(f"ann {ann_id}", exc, file=self.ann_file))
                continue
            if self.include_parts or ":" not in entry["name"]:
                per_image[ann["image_id"]].append({"ann_id": ann_id, "name": entry["name"], "span": (offset, length)})
        return images, per_image

    def payload_of(self, unit: Unit) -> dict:
        """The unit with each annotation's mask re-read from its span."""
        p = unit.payload
        with SpanReader(self.data_root / self.ann_file, self.ann_file) as read:
            anns = [{"ann_id": e["ann_id"], "name": e["name"], "segmentation": read(*e["span"])["segmentation"]}
                    for e in p["anns"]]  # fmt: skip
        return {**p, "anns": anns}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unit not in ("image", "region"):
            raise ValueError(f"unit must be 'image' or 'region', got {self.unit!r}")
        if self.unit == "region":
            self.max_regions = 1  # a region unit holds exactly one annotation

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        built = self._build(self.payload_of(unit), key, repeat, options, self.ann_file)
        if self.pair:
            sample, unique = built.sample, set(unit.payload["unique_names"])
            items = [(i, render_label(sample.regions[i].label, "natural")) for i in sample.region_inputs
                     if sample.regions[i].label in unique]  # fmt: skip
            if items:
                seg_view, res_templates = text_to_seg_view(items, "expression", options.seed, key)
                built.sample = paired(sample, as_view(sample), seg_view, sample.templates + res_templates)
        return built


def _paco_image(meta: dict) -> dict:
    return {"file_name": meta["file_name"], "height": meta["height"], "width": meta["width"]}


def _paco_entry(ann: Any, ann_id: Any, coco: CocoFile, names: tuple[dict, dict], seen: set) -> dict:
    if not isinstance(ann, dict):
        raise Reject("malformed_annotation", f"annotation is a {type(ann).__name__}, not a dict")
    if ann_id in seen:
        raise Reject("duplicate_id", f"annotation id {ann_id} appears twice")
    seen.add(ann_id)
    coco.image(ann.get("image_id"))  # missing or ambiguous image: this annotation's reject
    if not isinstance(ann.get("segmentation"), (dict, list)):
        raise Reject("malformed_annotation", "segmentation is missing")
    return {"ann_id": ann_id, "name": _category_name(ann, names, coco), "segmentation": ann["segmentation"]}


def _category_name(ann: dict, all_names: tuple[dict, dict], coco: CocoFile) -> str:
    """The release's category name; a part id found only in part_categories gets its object's name."""
    names, part_names = all_names
    category = ann.get("category_id")
    if is_id(category) and category in names:
        return names[category]
    part = part_names.get(category) if is_id(category) else None
    parent = coco.annotation(ann.get("obj_ann_id")) if part is not None and "obj_ann_id" in ann else None
    parent_category = parent.get("category_id") if parent is not None else None
    if part is not None and is_id(parent_category) and parent_category in names:
        return f"{names[parent_category]}:{part}"
    detail = f"category_id {category!r:.40} is in neither 'categories' nor (with obj_ann_id) 'part_categories'"
    raise Reject("malformed_annotation", detail)


@dataclass
class OspreyRocEvalSource(_RocSource):
    """Osprey's ``*_val_1k_category.json``: one sample per region, the label as the answer."""

    file: str = "osprey/eval/paco_val_1k_category.json"
    question_template: int = 1
    split = "val"

    def required_paths(self) -> list[str]:
        return [self.file, self.coco_root]

    def index(self) -> IndexResult:
        result = IndexResult([], [], self.missing_paths())
        records = self.load_index_file(self.file, result, list)
        if records is None:
            return result
        for pos, record in enumerate(records):
            try:
                meta = _eval_meta(record, pos)
            except Reject as exc:
                result.rejects.append(self.reject(f"record #{pos}", exc, file=self.file))
                continue
            for i, (name, ann) in enumerate(zip(record["categories"], record["annotations"])):
                problem = None
                if not isinstance(name, str) or not name.strip():
                    problem = Reject("bad_text", "category name is empty")
                elif not isinstance(ann, dict) or not isinstance(ann.get("segmentation"), (dict, list)):
                    problem = Reject("malformed_annotation", "no segmentation")
                if problem:
                    result.rejects.append(self.reject(f"record #{pos} region {i}", problem, file=self.file))
                else:
                    entry = {"ann_id": f"{pos}/{i}", "name": name.strip(), "segmentation": ann["segmentation"]}
                    result.units.append(Unit(f"{pos:05d}-{i:03d}", {**meta, "anns": [entry]}, meta["image_id"]))
        return result

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        return self._build(unit.payload, key, repeat, options, self.file)


def _eval_meta(record: Any, pos: int) -> dict:
    if not isinstance(record, dict) or not {"file_name", "height", "width", "categories", "annotations"} <= set(record):
        raise Reject("malformed_annotation", "record lacks file_name/height/width/categories/annotations")
    if not isinstance(record["categories"], list) or not isinstance(record["annotations"], list):
        raise Reject("malformed_annotation", "'categories'/'annotations' are not lists")
    if len(record["categories"]) != len(record["annotations"]):
        counts = f"{len(record['categories'])} categories for {len(record['annotations'])} annotations"
        raise Reject("malformed_annotation", counts)
    try:
        height, width = int(record["height"]), int(record["width"])
    except (TypeError, ValueError) as exc:
        raise Reject("malformed_annotation", f"height/width are not integers: {exc}") from exc
    file_name = safe_relpath(record["file_name"])
    image_id = coco_image_id(file_name, pos)
    return {"file_name": file_name, "height": height, "width": width, "image_id": image_id, "record": f"record #{pos}"}


register_source(
    "paco_lvis", PacoLvisSource, "PACO-LVIS referring object classification (objects and object parts)",
    "Stage 1 Captioning: PACO.LVIS 113,212",
)  # fmt: skip
register_source(
    "osprey_paco_roc_eval", OspreyRocEvalSource, "Osprey's PACO ROC evaluation (1K val images, one sample per region)",
    "Evaluation: PACO ROC", file="osprey/eval/paco_val_1k_category.json",
)  # fmt: skip
register_source(
    "osprey_lvis_roc_eval", OspreyRocEvalSource, "Osprey's LVIS ROC evaluation (1K val images, one sample per region)",
    "Evaluation: LVIS ROC", file="osprey/eval/lvis_val_1k_category.json",
)  # fmt: skip
