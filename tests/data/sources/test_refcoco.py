"""RefCOCO family read from the lichengunc/refer layout (instances.json + refs(<splitBy>).p)."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.masks import decode_rle
from fclm_data.sources import get_source


def _release(root: Path, dataset: str, split_by: str) -> tuple[dict, list[dict]]:
    instances = json.loads((root / f"refer_seg/{dataset}/instances.json").read_text())
    refs = pickle.loads((root / f"refer_seg/{dataset}/refs({split_by}).p").read_bytes())
    return instances, refs


@pytest.fixture(scope="module")
def refcoco_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("refcoco")
    build(["refcoco", "refcoco_plus", "refcocog"], data_root, out)
    return out


def test_train_is_one_sample_per_image(data_root: Path, refcoco_out: Path) -> None:
    manifest = json.loads((refcoco_out / "manifest.json").read_text())
    for name, dataset, split_by in (
        ("refcoco", "refcoco", "unc"),
        ("refcoco_plus", "refcoco+", "unc"),
        ("refcocog", "refcocog", "umd"),
    ):
        _, refs = _release(data_root, dataset, split_by)
        train_images = {r["image_id"] for r in refs if r["split"] == "train"}
        assert manifest["sources"][name]["written"] == len(train_images)


def test_image_name_comes_from_instances_not_the_ref_suffix(data_root: Path, refcoco_out: Path) -> None:
    instances, refs = _release(data_root, "refcoco", "unc")
    ref = next(r for r in refs if r["split"] == "train")
    assert not (data_root / "coco/train2014" / ref["file_name"]).exists()  # the suffixed name is not a file
    sample, image, _ = read_samples(refcoco_out)[f"refcoco-train-{ref['image_id']}"]
    image_entry = next(i for i in instances["images"] if i["id"] == ref["image_id"])
    assert sample["image"]["file_name"] == f"coco/train2014/{image_entry['file_name']}"
    assert image == (data_root / sample["image"]["file_name"]).read_bytes()  # original bytes, no re-encode


def test_masks_are_pixel_identical_to_pycocotools(data_root: Path, refcoco_out: Path) -> None:
    instances, refs = _release(data_root, "refcocog", "umd")
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    checked = 0
    for key, (sample, _, _) in read_samples(refcoco_out).items():
        if sample["source"] != "refcocog":
            continue
        for region, ann_ref in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            ann = anns[int(ann_ref.split("/ann")[1])]
            h, w = images[ann["image_id"]]["height"], images[ann["image_id"]]["width"]
            # LISA: decode each polygon's RLE, sum over polygons, clip to {0, 1}
            expected = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], h, w)).sum(axis=2) > 0
            assert np.array_equal(decode_rle(region["mask"]).astype(bool), expected)
            checked += 1
    assert checked > 5


def test_expressions_and_seg_targets(refcoco_out: Path) -> None:
    for sample, _, _ in read_samples(refcoco_out).values():
        turns = sample["conversations"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert len(sample["seg_targets"]) == len(turns) // 2 <= 5
        assert sorted(set(sample["seg_targets"])) == list(range(len(sample["regions"])))
        assert sample["region_inputs"] == [] and sample["pair"] is None and sample["task"] == "res"


def test_expression_cap_is_seeded_and_configurable(data_root: Path) -> None:
    source = get_source("refcocog", data_root, max_expressions=2)
    unit = max(source.index().units, key=lambda u: sum(len(r["sentences"]) for r in u.payload["refs"]))
    from fclm_data.sources import BuildOptions

    first = source.build(unit, "k", 0, BuildOptions(seed=1)).sample
    again = source.build(unit, "k", 0, BuildOptions(seed=1)).sample
    assert len(first.seg_targets) == 2 and first.to_dict() == again.to_dict()


def test_eval_splits_are_one_sample_per_expression(data_root: Path, tmp_path: Path) -> None:
    _, refs = _release(data_root, "refcoco", "unc")
    for split in ("val", "testA", "testB"):
        expected = sum(len(r["sentences"]) for r in refs if r["split"] == split)
        units = get_source("refcoco", data_root, split=split).index().units
        assert len(units) == expected
    from fclm_data.recipes import Recipe, RecipeEntry

    recipe = Recipe("refcoco_val", [RecipeEntry("refcoco", options={"split": "val"})])
    build(recipe, data_root, tmp_path)
    samples = read_samples(tmp_path)
    assert len(samples) == sum(len(r["sentences"]) for r in refs if r["split"] == "val")
    assert all(len(s["seg_targets"]) == 1 and s["provenance"]["split"] == "val" for s, _, _ in samples.values())


def test_bad_refs_are_rejected_with_reasons(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(data_root / "refer_seg/refcoco", root / "refer_seg/refcoco")
    shutil.copytree(data_root / "coco/train2014", root / "coco/train2014")
    instances, refs = _release(root, "refcoco", "unc")
    train = [r for r in refs if r["split"] == "train"]
    refs.append(dict(train[0]))  # duplicate ref_id
    refs.append({**train[1], "ref_id": 10_000, "ann_id": 999_999})  # ann missing from instances
    anns = {a["id"]: a for a in instances["annotations"]}
    anns[train[2]["ann_id"]]["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # 2-point polygon
    (root / "refer_seg/refcoco/instances.json").write_text(json.dumps(instances))
    (root / "refer_seg/refcoco/refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    manifest = build(["refcoco"], root, tmp_path / "out")
    reasons = Counter(r["code"] for r in read_rejects(tmp_path / "out"))
    assert reasons["duplicate_id"] == 1 and reasons["malformed_annotation"] == 1 and reasons["bad_polygon"] == 1
    ledger = manifest["sources"]["refcoco"]
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"]


def test_a_refs_mask_is_converted_once_and_handed_out_as_copies(data_root: Path) -> None:
    """val: one unit per expression, so a ref's mask is asked for 2-3 times; the per-process cache converts it once
    (pycocotools' result, equal for every expression) and gives each sample its own dicts to edit."""
    from fclm_data.sources import BuildOptions

    source = get_source("refcoco", data_root, split="val")
    units = source.index().units
    by_ref: dict[int, list] = {}
    for unit in units:
        by_ref.setdefault(unit.payload["refs"][0]["ref_id"], []).append(unit)
    first, second = next(group for group in by_ref.values() if len(group) > 1)[:2]
    one = source.build(first, "k1", 0, BuildOptions()).sample.regions[0]
    assert len(source._mask_cache) >= 1
    one.mask["counts"], one.bbox[0] = "edited", -1.0  # a sample editing its region must not reach the cache
    two = source.build(second, "k2", 0, BuildOptions()).sample.regions[0]
    ref = first.payload["refs"][0]
    expected = mask_utils.frPyObjects(ref["segmentation"], two.mask["size"][0], two.mask["size"][1])
    assert np.array_equal(decode_rle(two.mask), mask_utils.decode(expected).max(axis=2))
    assert two.bbox[0] >= 0
