"""Visual Genome region captions: Osprey's masked release (vg) and GLaMM's GRiT boxes (vg_grit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.masks import box_to_rle, decode_rle
from fclm_data.sources import BuildOptions, get_source
from fclm_data.templates import REGION_CAPTION_QUESTIONS, REGION_CAPTION_SUFFIX, template_text

FILES = {"vg": "vg/vg_train_with_mask.json", "vg_grit": "visual_genome/train.json"}


def _release(root: Path, name: str) -> dict:
    return json.loads((root / FILES[name]).read_text())


@pytest.fixture(scope="module")
def vg_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vg")
    build(list(FILES), data_root, out)
    return out


def _decode(segmentation, h: int, w: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w)))
    if isinstance(segmentation["counts"], list):
        return mask_utils.decode(mask_utils.frPyObjects(segmentation, h, w))
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})


def test_vg_one_sample_per_image_with_masks(data_root: Path, vg_out: Path) -> None:
    release = _release(data_root, "vg")
    images = {i["id"]: i for i in release["images"]}
    anns = {a["id"]: a for a in release["annotations"]}
    samples = [s for s, _, _ in read_samples(vg_out).values() if s["source"] == "vg"]
    assert sorted(int(s["provenance"]["image_id"]) for s in samples) == sorted(images)
    forms = set()
    for sample in samples:
        image = images[int(sample["provenance"]["image_id"])]
        assert sample["image"]["file_name"] == f"vg/image/{image['file_name']}" and sample["task"] == "region_caption"
        assert 1 <= len(sample["regions"]) <= 3 and sample["region_inputs"] == list(range(len(sample["regions"])))
        ann_ids = [int(a) for a in sample["provenance"]["ann_ids"]]
        assert ann_ids == sorted(ann_ids)  # release order
        for n, (region, ann_id) in enumerate(zip(sample["regions"], ann_ids)):
            ann = anns[ann_id]
            forms.add(
                "polygon" if isinstance(ann["segmentation"], list) else type(ann["segmentation"]["counts"]).__name__
            )
            assert np.array_equal(
                decode_rle(region["mask"]), _decode(ann["segmentation"], image["height"], image["width"])
            )
            assert region["caption"] == ann["caption"] == sample["conversations"][2 * n + 1]["content"]
            question = sample["conversations"][2 * n]["content"].removeprefix("<image>\n")
            assert question == template_text(sample["templates"][n]) + REGION_CAPTION_SUFFIX
            assert template_text(sample["templates"][n]) in REGION_CAPTION_QUESTIONS and not region["box_only"]
    assert forms == {"polygon", "list", "str"}


def test_vg_bad_annotations_are_counted(data_root: Path, vg_out: Path) -> None:
    rejects = [r for r in read_rejects(vg_out) if r["source"] == "vg"]
    by_code = {r["code"]: r for r in rejects}
    assert set(by_code) == {"bad_text", "bad_polygon"}
    assert by_code["bad_text"]["stage"] == "index" and "caption" in by_code["bad_text"]["detail"]
    assert by_code["bad_polygon"]["stage"] == "annotation"  # dropped inside a written sample
    manifest = json.loads((vg_out / "manifest.json").read_text())["sources"]["vg"]
    assert manifest["dropped_annotations"] == {"bad_polygon": 1} and manifest["rejected"] == 0


def test_vg_grit_boxes_clipped_and_bad_boxes_rejected(data_root: Path, vg_out: Path) -> None:
    release = _release(data_root, "vg_grit")
    images = {i["id"]: i for i in release["images"]}
    anns = {a["id"]: a for a in release["annotations"]}
    samples = [s for s, _, _ in read_samples(vg_out).values() if s["source"] == "vg_grit"]
    seen_clipped = False
    for sample in samples:
        image = images[int(sample["provenance"]["image_id"])]
        assert sample["image"]["file_name"] == f"visual_genome/images/{image['file_name']}"
        for region, ann_id in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            x, y, w, h = anns[int(ann_id)]["bbox"]
            clipped = [max(0.0, x), max(0.0, y), min(float(image["width"]), x + w), min(float(image["height"]), y + h)]
            seen_clipped |= clipped != [x, y, x + w, y + h]
            assert region["box_only"] and region["bbox"] == clipped
            assert region["mask"] == box_to_rle(clipped, image["height"], image["width"])
    assert seen_clipped
    rejects = {r["record"]: r for r in read_rejects(vg_out) if r["source"] == "vg_grit"}
    zero = next(a for a in release["annotations"] if a["area"] == 0)
    thin = next(a for a in release["annotations"] if 0 < a["bbox"][2] < 1)
    outside = next(a for a in release["annotations"] if a["bbox"][0] >= images[a["image_id"]]["width"])
    for ann, reason in ((zero, "area"), (thin, "1 pixel"), (outside, "outside")):
        reject = rejects[f"ann {ann['id']}"]
        assert reject["code"] == "bbox_outside_image" and reason in reject["detail"] and reject["stage"] == "index"
    assert len(rejects) == 3


def test_region_draw_is_seeded_and_capped(data_root: Path) -> None:
    source = get_source("vg_grit", data_root, max_regions=2)
    unit = max(source.index().units, key=lambda u: len(u.payload["anns"]))
    assert len(unit.payload["anns"]) > 2
    first = source.build(unit, "k", 0, BuildOptions(seed=5)).sample
    assert first.to_dict() == source.build(unit, "k", 0, BuildOptions(seed=5)).sample.to_dict()
    assert len(first.regions) == 2
    draws = {tuple(source.build(unit, f"k{i}", 0, BuildOptions()).sample.provenance.ann_ids) for i in range(12)}
    assert len(draws) > 1
    assert get_source("vg_grit", data_root).max_regions == 10 and get_source("vg", data_root).max_regions == 3


def test_ledgers_balance(vg_out: Path) -> None:
    manifest = json.loads((vg_out / "manifest.json").read_text())
    for name in FILES:
        ledger = manifest["sources"][name]
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
        assert ledger["selected"] == ledger["written"] + ledger["rejected"]
        assert ledger["written"] == ledger["available"]
