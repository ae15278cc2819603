"""RefCOCO / RefCOCO+ / RefCOCOg referring expression segmentation (lichengunc/refer release).

Layout (defaults, all overridable): ``refer_seg/<dataset>/instances.json`` (COCO images,
annotations with polygon ``segmentation``, categories) and ``refer_seg/<dataset>/refs(<splitBy>).p``
(a pickled list of refs: ``ref_id, ann_id, image_id, category_id, split, sentences, file_name``),
images from COCO train2014 (``coco/train2014``) for every split.

* Image names come from ``instances.json``: a ref's ``file_name`` carries a suffix that is not a
  real file ("COCO_train2014_000000581857_16.jpg").
* Train: one sample per image with up to ``max_expressions`` of its (ref, sentence) pairs, one
  ``[SEG]`` each (LISA/FCLM count images: Table 7's 55,885 = 16,994 + 16,992 + 21,899 train images).
* Val/test splits: one sample per expression, for evaluation.
* ``pair: true`` (default off): the sample becomes a consistency pair (``fclm_data/sources/pairing.py``):
  its conversation asks for each chosen region's expression (REG: ``<region>`` -> expression) and ``pair``
  is the RES conversation above (expression -> ``[SEG]``), region for region.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fclm_data.coco import CocoFile, is_id, read_coco
from fclm_data.errors import Reject
from fclm_data.images import expect_size, join_checked
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.safe_pickle import safe_loads
from fclm_data.schema import Provenance, Region, Sample, Turn
from fclm_data.seeding import stable_hash
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.sources.pairing import as_view, paired, region_to_text_view
from fclm_data.templates import pick, res_question, with_image


@dataclass
class RefCocoSource(Source):
    dataset: str = "refcoco"  #: folder under refer_seg/
    split_by: str = "unc"  #: refs(<split_by>).p: unc (RefCOCO, RefCOCO+), umd (RefCOCOg)
    split: str = "train"
    ann_dir: str = "refer_seg/{dataset}"
    image_dir: str = "coco/train2014"
    #: (ref, sentence) pairs per training sample; FCLM samples up to 5 objects per segmentation sample
    max_expressions: int = 5
    #: write the REG view with the RES view as its ``pair`` (consistency on grounding data, Table 11)
    pair: bool = False
    task = "res"

    @property
    def _ann_dir(self) -> str:
        return self.ann_dir.format(dataset=self.dataset)

    @property
    def refs_file(self) -> str:
        return f"{self._ann_dir}/refs({self.split_by}).p"

    @property
    def instances_file(self) -> str:
        return f"{self._ann_dir}/instances.json"

    def required_paths(self) -> list[str]:
        return [self.instances_file, self.refs_file, self.image_dir]

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        missing = self.missing_paths()
        if self.instances_file in missing or self.refs_file in missing:
            return IndexResult([], [], missing)
        try:
            coco = read_coco(self.data_root, self.instances_file)
            refs = safe_loads((self.data_root / self.refs_file).read_bytes(), self.refs_file)
            if not isinstance(refs, list):
                raise Reject("malformed_annotation", f"{self.refs_file} holds a {type(refs).__name__}, not a list")
        except Reject as exc:
            return IndexResult([], [self.reject(exc.file or self.refs_file, exc, file=exc.file or self.refs_file)], missing)
        result = IndexResult([], [], missing)
        result.rejects += [self.reject(label, exc, file=self.instances_file) for label, exc in coco.entry_rejects]
        per_image: dict[int, list[dict]] = defaultdict(list)
        images: dict[int, dict] = {}
        seen_refs: set = set()
        for position, ref in enumerate(refs):
            if isinstance(ref, dict) and "split" in ref and ref["split"] != self.split:
                continue  # other splits are other sources' records
            ref_id = ref.get("ref_id") if isinstance(ref, dict) else None
            record = f"ref {ref_id if is_id(ref_id) else f'#{position}'}"
            try:
                entry, image = _check_ref(ref, coco, seen_refs)
            except Reject as exc:
                result.rejects.append(self.reject(record, exc, file=exc.file or self.refs_file))
                continue
            images[ref["image_id"]] = image
            per_image[ref["image_id"]].append(entry)
        result.units = self._units(per_image, images)
        return result

    def _units(self, per_image: dict[int, list[dict]], images: dict[int, dict]) -> list[Unit]:
        units = []
        for image_id in sorted(per_image):
            image = images[image_id]
            refs = sorted(per_image[image_id], key=lambda r: r["ref_id"])
            if self.split == "train":
                units.append(
                    Unit(f"{self.split}-{image_id}", {"image": image, "refs": refs}, str(image_id), self.refs_file)
                )
                continue
            for ref in refs:
                for sent_id, sent in ref["sentences"]:
                    one = {**ref, "sentences": [(sent_id, sent)]}
                    uid = f"{self.split}-{ref['ref_id']}-{sent_id}"
                    units.append(Unit(uid, {"image": image, "refs": [one]}, str(image_id), self.refs_file))
        return units

    # ---- build -------------------------------------------------------------------------------
    def image_candidates(self, unit: Unit) -> list[str]:
        return [join_checked(self.image_dir, unit.payload["image"]["file_name"])]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        image_meta = unit.payload["image"]
        image = self.read_unit_image(unit, options)
        expect_size(image, image_meta["width"], image_meta["height"], f"{self.instances_file} image {image_meta['id']}")
        regions, region_of_ref, dropped = self._regions(unit.payload["refs"], image.height, image.width)
        expressions = [
            (ref, sent_id, sent)
            for ref in unit.payload["refs"]
            if ref["ref_id"] in region_of_ref
            for sent_id, sent in ref["sentences"]
        ]
        if not expressions:
            reason = dropped[0][1] if dropped else Reject("no_regions", "no referring expression left")
            raise Reject(reason.code, f"no usable ref left: {reason.detail}", self.refs_file)
        chosen = self._choose(expressions, key, options.seed)
        turns, seg_targets, templates = [], [], []
        for n, (ref, sent_id, sent) in enumerate(chosen):
            qid, question = pick("res_question", options.seed, key, f"turn{n}")
            aid, answer = pick("res_answer", options.seed, key, f"turn{n}")
            text = res_question(question, sent)
            turns += [Turn("user", with_image(text) if n == 0 else text), Turn("assistant", answer)]
            seg_targets.append(region_of_ref[ref["ref_id"]])
            templates += [qid, aid]
        used_refs = list(dict.fromkeys(ref["ref_id"] for ref, _, _ in chosen))
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                split=self.split,
                image_id=str(image_meta["id"]),
                ann_ids=[f"ref{r}/ann{_ann_of(unit, r)}" for r in used_refs],
                source_file=self.refs_file,
                repeat=repeat,
            ),
            image=image,
            regions=regions,
            conversations=turns,
            region_inputs=[],
            seg_targets=seg_targets,
            templates=templates,
        )
        sample = _drop_unused_regions(sample)
        if self.pair:
            items = [(region, sent) for region, (_, _, sent) in zip(sample.seg_targets, chosen)]
            main, reg_templates = region_to_text_view(items, "expression", options.seed, key)
            sample = paired(sample, main, as_view(sample), sample.templates + reg_templates)
        return Built(sample, image, dropped)

    def _regions(self, refs: list[dict], height: int, width: int):
        regions, region_of_ref, dropped = [], {}, []
        for ref in refs:
            try:
                rle, box = self._region_mask(ref, height, width)
            except Reject as exc:
                exc.file = exc.file or self.instances_file
                dropped.append((f"ref {ref['ref_id']} ann {ref['ann_id']}", exc))
                continue
            region_of_ref[ref["ref_id"]] = len(regions)
            regions.append(Region(mask=rle, bbox=box, label=ref.get("category")))
        return regions, region_of_ref, dropped

    def _region_mask(self, ref: dict, height: int, width: int) -> tuple[dict, list[float]]:
        """(RLE, box) of a ref's annotation, converted once per process: in val / test splits every expression
        of a ref is its own sample (2-3 per ref in the releases), and a recipe's repeats build a unit again; ann
        ids are unique in ``instances.json`` (the COCO reader rejects duplicates), so (ann id, image size) names
        one mask."""
        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (ref["ann_id"], height, width)
        if key not in cache:
            rle = segmentation_to_rle(ref["segmentation"], height, width)
            if len(cache) >= _MASK_CACHE_SIZE:
                cache.clear()
            cache[key] = nonempty_region_mask(rle, f"ann {ref['ann_id']}")
        rle, box = cache[key]
        return dict(rle), list(box)  # copies: a sample may edit its regions

    def _choose(self, expressions: list[tuple], key: str, seed: int) -> list[tuple]:
        """Seeded choice of at most ``max_expressions`` pairs, kept in release order."""
        if self.split != "train" or len(expressions) <= self.max_expressions:
            return expressions
        ranked = sorted(range(len(expressions)), key=lambda i: stable_hash("expr", seed, key, i))
        return [expressions[i] for i in sorted(ranked[: self.max_expressions])]


#: masks kept per process (a few KB each): more than the refs of any one shard's images
_MASK_CACHE_SIZE = 4096


def _ann_of(unit: Unit, ref_id: int) -> int:
    return next(r["ann_id"] for r in unit.payload["refs"] if r["ref_id"] == ref_id)


def _drop_unused_regions(sample: Sample) -> Sample:
    """Regions of refs whose expressions were not chosen are removed and indexes remapped."""
    used = sorted(set(sample.seg_targets))
    if len(used) == len(sample.regions):
        return sample
    remap = {old: new for new, old in enumerate(used)}
    sample.regions = [sample.regions[i] for i in used]
    sample.seg_targets = [remap[i] for i in sample.seg_targets]
    return sample


def _check_ref(ref: Any, coco: CocoFile, seen: set) -> tuple[dict, dict]:
    """Validate one ref against instances.json; return the compact entry units carry and its image."""
    if not isinstance(ref, dict):
        raise Reject("malformed_annotation", f"ref is a {type(ref).__name__}, not a dict")
    missing = {"ref_id", "ann_id", "image_id", "split", "sentences"} - set(ref)
    if missing:
        raise Reject("malformed_annotation", f"ref lacks {sorted(missing)}")
    if not all(is_id(ref[k]) for k in ("ref_id", "ann_id", "image_id")):
        raise Reject("malformed_annotation", "ref_id/ann_id/image_id are not ints or strings")
    if ref["ref_id"] in seen:
        raise Reject("duplicate_id", f"ref_id {ref['ref_id']} appears twice")
    seen.add(ref["ref_id"])
    ann = coco.annotation(ref["ann_id"])
    image = coco.image_meta(ref["image_id"], check_name=False)  # the name is checked when the image is read
    if ann.get("image_id") != ref["image_id"]:
        raise Reject("malformed_annotation", f"image_id {ref['image_id']} is not the image of ann {ref['ann_id']}")
    if not isinstance(ref["sentences"], list):
        raise Reject("bad_text", "ref 'sentences' is not a list")
    sentences = [
        (s.get("sent_id"), s.get("sent", s.get("raw", ""))) for s in ref["sentences"] if isinstance(s, dict)
    ]
    sentences = [(sid, text.strip()) for sid, text in sentences if isinstance(text, str) and text.strip()]
    if not sentences:
        raise Reject("bad_text", "ref has no non-empty sentence")
    category = ann.get("category_id")
    return {
        "ref_id": ref["ref_id"],
        "ann_id": ref["ann_id"],
        "segmentation": ann.get("segmentation"),
        "sentences": sentences,
        "category": coco.categories.get(category) if is_id(category) else None,
    }, image


_TABLE7 = "Stage 1 Grounding: RefCOCO/+/g 55,885"
register_source(
    "refcoco", RefCocoSource, "RefCOCO (UNC splits) referring expression segmentation", _TABLE7,
    dataset="refcoco", split_by="unc",
)  # fmt: skip
register_source(
    "refcoco_plus", RefCocoSource, "RefCOCO+ (UNC splits) referring expression segmentation", _TABLE7,
    dataset="refcoco+", split_by="unc",
)  # fmt: skip
register_source(
    "refcocog", RefCocoSource, "RefCOCOg (UMD splits) referring expression segmentation", _TABLE7,
    dataset="refcocog", split_by="umd",
)  # fmt: skip
