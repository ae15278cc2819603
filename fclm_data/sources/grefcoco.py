"""gRefCOCO generalized referring expression segmentation (henghuiding/gRefCOCO release, CVPR 2023 GRES).

Layout (defaults, overridable): ``refer_seg/grefcoco/grefs(unc).json`` (a JSON list of refs) and
``refer_seg/grefcoco/instances.json`` (COCO images / annotations / categories), images from COCO train2014
(``coco/train2014``), as ReLA's ``G_REFER`` and LISA's loader read them.

A gRefCOCO ref differs from a RefCOCO ref in three ways, all handled here:

* ``ann_id`` is a list (one or more target instances, or ``[-1]``) and ``no_target`` marks expressions that
  refer to nothing in the image (``ann_id == [-1]``);
* ``category_id`` is a list too;
* ``grefs(unc).p`` (pickle) may be shipped instead of the JSON: ReLA tries the pickle first, so do we (read with
  the restricted unpickler).

One sample per (ref, sentence) in every split (the GRES evaluation unit; gRefCOCO is not in FCLM's Table 7).
Regions: one per non-crowd target instance, in ``ann_id`` order (ReLA's ``getMaskByRef`` drops crowd masks);
the answer has one ``[SEG]`` per target (PixelLM's multi-target answers for several, LISA's for one) and no
``[SEG]`` for a no-target expression (:data:`~fclm_data.templates.GRES_NO_TARGET_ANSWERS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fclm_data.coco import CocoFile, is_id, read_coco
from fclm_data.errors import Reject
from fclm_data.images import expect_size, join_checked
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.safe_pickle import safe_loads
from fclm_data.schema import SEG_TOKEN, Provenance, Region, Turn
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit, load_json_file
from fclm_data.templates import pick, res_question, with_image


@dataclass
class GRefCocoSource(Source):
    split: str = "val"  #: train | val | testA | testB
    ann_dir: str = "refer_seg/grefcoco"
    split_by: str = "unc"
    image_dir: str = "coco/train2014"
    task = "gres"

    @property
    def refs_json(self) -> str:
        return f"{self.ann_dir}/grefs({self.split_by}).json"

    @property
    def refs_pickle(self) -> str:
        return f"{self.ann_dir}/grefs({self.split_by}).p"

    @property
    def instances_file(self) -> str:
        return f"{self.ann_dir}/instances.json"

    @property
    def refs_file(self) -> str:
        """The refs file used: the pickle when present (ReLA's order), else the JSON."""
        return self.refs_pickle if (self.data_root / self.refs_pickle).exists() else self.refs_json

    def required_paths(self) -> list[str]:
        return [self.instances_file, self.refs_file, self.image_dir]

    def index(self) -> IndexResult:
        missing = self.missing_paths()
        if self.instances_file in missing or self.refs_file in missing:
            return IndexResult([], [], missing)
        try:
            coco = read_coco(self.data_root, self.instances_file)
            refs = self._load_refs()
        except Reject as exc:
            return IndexResult([], [self.reject(exc.file or self.refs_file, exc)], missing)
        result = IndexResult([], [], missing)
        result.rejects += [self.reject(label, exc, file=self.instances_file) for label, exc in coco.entry_rejects]
        seen: set = set()
        for position, ref in enumerate(refs):
            if isinstance(ref, dict) and ref.get("split") != self.split:
                continue
            record = f"ref {ref.get('ref_id', f'#{position}') if isinstance(ref, dict) else f'#{position}'}"
            try:
                entry, image = _check_gref(ref, coco, seen)
            except Reject as exc:
                result.rejects.append(self.reject(record, exc, file=exc.file or self.refs_file))
                continue
            for sent_id, sent in entry.pop("sentences"):
                uid = f"{self.split}-{entry['ref_id']}-{sent_id}"
                payload = {"image": image, "ref": entry, "sent_id": sent_id, "sent": sent}
                result.units.append(Unit(uid, payload, str(ref["image_id"]), self.refs_file))
        return result

    def _load_refs(self) -> list:
        rel = self.refs_file
        if rel.endswith(".p"):
            refs = safe_loads((self.data_root / rel).read_bytes(), rel)
        else:
            refs = load_json_file(self.data_root, rel)
        if not isinstance(refs, list):
            raise Reject("malformed_annotation", f"{rel} holds a {type(refs).__name__}, not a list", rel)
        return refs

    def image_candidates(self, unit: Unit) -> list[str]:
        return [join_checked(self.image_dir, unit.payload["image"]["file_name"])]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        meta, ref = unit.payload["image"], unit.payload["ref"]
        image = self.read_unit_image(unit, options)
        expect_size(image, meta["width"], meta["height"], f"{self.instances_file} image {meta['id']}")
        regions, dropped = [], []
        for ann_id, segmentation, category in zip(ref["ann_ids"], ref["segmentations"], ref["categories"]):
            try:
                rle, box = nonempty_region_mask(segmentation_to_rle(segmentation, image.height, image.width),
                                                f"ann {ann_id}")  # fmt: skip
            except Reject as exc:
                exc.file = exc.file or self.instances_file
                dropped.append((f"ref {ref['ref_id']} ann {ann_id}", exc))
                continue
            regions.append(Region(mask=rle, bbox=box, label=category))
        if ref["ann_ids"] and not regions:  # a target expression whose every mask is unusable is not "no target"
            reason = dropped[0][1]
            raise Reject(reason.code, f"no usable target mask left: {reason.detail}", self.instances_file)
        qid, question = pick("res_question", options.seed, key, "turn0")
        answer_id, answer = self._answer(unit.payload["sent"], len(regions), options.seed, key)
        sample = self.new_sample(
            key=key,
            provenance=Provenance(self.split, str(meta["id"]), [f"ref{ref['ref_id']}/ann{a}" for a in ref["ann_ids"]]
                                  or [f"ref{ref['ref_id']}/no_target"], self.refs_file, repeat),  # fmt: skip
            image=image, regions=regions,
            conversations=[Turn("user", with_image(res_question(question, unit.payload["sent"]))),
                           Turn("assistant", answer)],
            region_inputs=[], seg_targets=list(range(len(regions))), templates=[qid, answer_id],
        )  # fmt: skip
        return Built(sample, image, dropped)

    @staticmethod
    def _answer(expression: str, targets: int, seed: int, key: str) -> tuple[str, str]:
        """LISA's single-target answer, PixelLM's multi-target answer, or a no-target answer."""
        if targets == 0:
            return pick("gres_no_target_answer", seed, key, "answer")
        if targets == 1:
            return pick("res_answer", seed, key, "answer")
        aid, template = pick("muse_multi_answer", seed, key, "answer")
        segs = ", ".join([SEG_TOKEN] * (targets - 1)) + f" and {SEG_TOKEN}"
        return aid, template.format(class_name=expression.strip(), seg=segs)


def _check_gref(ref: Any, coco: CocoFile, seen: set) -> tuple[dict, dict]:
    """Validate one gRefCOCO ref against instances.json (the shared COCO reader: duplicated ids are rejected);
    returns the compact entry the units carry and the image's checked metadata."""
    if not isinstance(ref, dict):
        raise Reject("malformed_annotation", f"ref is a {type(ref).__name__}, not a dict")
    missing = {"ref_id", "ann_id", "image_id", "split", "sentences"} - set(ref)
    if missing:
        raise Reject("malformed_annotation", f"ref lacks {sorted(missing)}")
    if not is_id(ref["ref_id"]) or not is_id(ref["image_id"]):
        raise Reject("malformed_annotation", "ref_id/image_id are not ints or strings")
    if ref["ref_id"] in seen:
        raise Reject("duplicate_id", f"ref_id {ref['ref_id']} appears twice")
    seen.add(ref["ref_id"])
    image = coco.image_meta(ref["image_id"], check_name=False)  # the name is checked when the image is read
    ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
    no_target = ann_ids == [-1]
    if bool(ref.get("no_target", no_target)) != no_target:
        raise Reject("malformed_annotation", f"no_target={ref.get('no_target')} but ann_id={ann_ids}")
    targets = []
    for ann_id in [] if no_target else ann_ids:
        ann = coco.annotation(ann_id)
        if ann.get("image_id") != ref["image_id"]:
            raise Reject("malformed_annotation", f"ann_id {ann_id} is not on image {ref['image_id']}")
        if not ann.get("iscrowd"):
            targets.append(ann)
    if not no_target and not targets:
        raise Reject("malformed_annotation", f"every target of ann_id {ann_ids} is a crowd annotation")
    sentences = [(s.get("sent_id"), str(s.get("sent", s.get("raw", ""))).strip())
                 for s in ref["sentences"] if isinstance(s, dict)]  # fmt: skip
    sentences = [(sid, text) for sid, text in sentences if text]
    if not sentences:
        raise Reject("bad_text", "ref has no non-empty sentence")
    categories = [coco.categories.get(a.get("category_id")) if is_id(a.get("category_id")) else None for a in targets]
    return {"ref_id": ref["ref_id"], "ann_ids": [a["id"] for a in targets], "categories": categories,
            "segmentations": [a.get("segmentation") for a in targets], "sentences": sentences}, image  # fmt: skip


register_source(
    "grefcoco", GRefCocoSource, "gRefCOCO (UNC splits) generalized RES: multi-target and no-target expressions",
    "not in Table 7 (gRES evaluation)",
)  # fmt: skip
