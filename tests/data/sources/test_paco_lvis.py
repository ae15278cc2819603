"""PACO-LVIS referring object classification and Osprey's PACO / LVIS ROC evaluation files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.masks import decode_rle
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import BuildOptions, get_source
from fclm_data.sources.paco_lvis import natural_label, osprey_label
from fclm_data.templates import ROC_QUESTIONS

EVAL = {
    "osprey_paco_roc_eval": "osprey/eval/paco_val_1k_category.json",
    "osprey_lvis_roc_eval": "osprey/eval/lvis_val_1k_category.json",
}


def _paco(root: Path, split: str = "train") -> dict:
    return json.loads((root / f"paco/paco_lvis_v1_{split}.json").read_text())


def _decode(segmentation, h: int, w: int) -> np.ndarray:
    """pycocotools' own reading of any segmentation form (the reference for our masks)."""
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w)))
    if isinstance(segmentation["counts"], list):
        return mask_utils.decode(mask_utils.frPyObjects(segmentation, h, w))
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})


@pytest.fixture(scope="module")
def roc_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("roc")
    build(["paco_lvis", *EVAL], data_root, out)
    return out


@pytest.fixture(scope="module")
def region_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paco_regions")
    build(Recipe("paco_regions", [RecipeEntry("paco_lvis", options={"unit": "region"})]), data_root, out)
    return out


@pytest.mark.parametrize(
    ("name", "natural", "osprey"),
    [
        ("car_(automobile)", "car", "car (automobile)"),
        ("bottle:cap", "cap of the bottle", "bottle cap"),
        ("telephone:back_cover", "back cover of the telephone", "telephone back cover"),
        ("dog:head", "head of the dog", "dog head"),
        ("glass_(drink_container):rim", "rim of the glass", "glass (drink container) rim"),
        ("trash_can", "trash can", "trash can"),
    ],
)
def test_label_rendering(name: str, natural: str, osprey: str) -> None:
    assert (natural_label(name), osprey_label(name)) == (natural, osprey)


def test_image_unit_samples(data_root: Path, roc_out: Path) -> None:
    release = _paco(data_root)
    images = {i["id"]: i for i in release["images"]}
    names = {c["id"]: c["name"] for c in release["categories"]}
    anns = {a["id"]: a for a in release["annotations"]}
    written = {k: s for k, (s, _, _) in read_samples(roc_out).items() if s["source"] == "paco_lvis"}
    assert len(written) == len(images)
    for key, sample in written.items():
        image = images[int(sample["provenance"]["image_id"])]
        assert key == f"paco_lvis-train-{image['id']}" and sample["image"]["file_name"] == f"coco/{image['file_name']}"
        assert 1 <= len(sample["regions"]) <= 3 and sample["region_inputs"] == list(range(len(sample["regions"])))
        for n, (region, ann_id) in enumerate(zip(sample["regions"], sample["provenance"]["ann_ids"])):
            ann = anns[int(ann_id)]
            assert region["label"] == names[ann["category_id"]]
            assert sample["conversations"][2 * n + 1]["content"] == natural_label(region["label"])
            assert np.array_equal(
                decode_rle(region["mask"]), _decode(ann["segmentation"], image["height"], image["width"])
            )
        assert all(t.startswith("roc_question:") for t in sample["templates"])
    assert {s["image"]["file_name"].split("/")[1] for s in written.values()} == {"train2017", "val2017"}


def test_region_unit_rejects_with_reasons(data_root: Path, region_out: Path) -> None:
    release = _paco(data_root)
    manifest = json.loads((region_out / "manifest.json").read_text())
    ledger = manifest["sources"]["paco_lvis"]
    assert ledger["records"] == len(release["annotations"])
    assert ledger["index_rejected"] == 1 and ledger["reject_reasons"] == {"malformed_annotation": 1, "empty_mask": 1}
    assert (ledger["written"], ledger["rejected"]) == (len(release["annotations"]) - 2, 1)
    rejects = {r["code"]: r for r in read_rejects(region_out)}
    assert "category_id 999" in rejects["malformed_annotation"]["detail"] and rejects["empty_mask"]["stage"] == "sample"
    written = [s for s, _, _ in read_samples(region_out).values()]
    labels = Counter(s["conversations"][1]["content"] for s in written)
    assert labels["hand of the clock"] or labels["rim of the glass"] or labels["screen of the television set"]
    assert not any("_" in label or ":" in label for label in labels)


def test_parts_named_only_in_part_categories(data_root: Path, tmp_path: Path) -> None:
    """The paper-version JSON (75 categories + part_categories): parts take their object's name."""
    release = _paco(data_root)
    objects = [c for c in release["categories"] if ":" not in c["name"]]
    part_id = {c["name"]: c["id"] + 1000 for c in release["part_categories"]}
    for ann in release["annotations"]:
        name = next((c["name"] for c in release["categories"] if c["id"] == ann["category_id"]), "")
        if ":" in name:
            ann["category_id"] = part_id[name.split(":")[1]]
    release["categories"] = objects
    release["part_categories"] = [{**c, "id": part_id[c["name"]]} for c in release["part_categories"]]
    (tmp_path / "paco").mkdir()
    (tmp_path / "paco/paco_lvis_v1_train.json").write_text(json.dumps(release))
    (tmp_path / "coco").symlink_to(data_root / "coco")
    index = get_source("paco_lvis", tmp_path, unit="region").index()
    names = {e["name"] for u in index.units for e in u.payload["anns"]}
    assert "clock:hand" in names or "car_(automobile):back_cover" in names
    # the part of the object whose category is unknown (999) cannot be named either
    assert len(index.units) == len(get_source("paco_lvis", data_root, unit="region").index().units) - 1
    assert [r.code for r in index.rejects] == ["malformed_annotation"] * 2


def test_options_split_parts_and_seeded_draw(data_root: Path) -> None:
    val = get_source("paco_lvis", data_root, split="val").index()
    assert {u.uid for u in val.units} == {f"val-{i['id']}" for i in _paco(data_root, "val")["images"]}
    objects_only = get_source("paco_lvis", data_root, unit="region", include_parts=False).index().units
    assert objects_only and all(":" not in u.payload["anns"][0]["name"] for u in objects_only)
    source = get_source("paco_lvis", data_root, max_regions=2, question_template=2)
    unit = max(source.index().units, key=lambda u: len(u.payload["anns"]))
    first = source.build(unit, "k", 0, BuildOptions(seed=3)).sample
    assert first.to_dict() == source.build(unit, "k", 0, BuildOptions(seed=3)).sample.to_dict()
    assert len(first.regions) == 2 and first.templates == ["roc_question:2", "roc_question:2"]
    draws = {tuple(source.build(unit, f"k{i}", 0, BuildOptions()).sample.provenance.ann_ids) for i in range(12)}
    assert len(draws) > 1  # the regions asked about depend on the sample key


@pytest.mark.parametrize("name", sorted(EVAL))
def test_roc_eval_one_sample_per_region(data_root: Path, roc_out: Path, name: str) -> None:
    records = json.loads((data_root / EVAL[name]).read_text())
    samples = {k: s for k, (s, _, _) in read_samples(roc_out).items() if s["source"] == name}
    rejects = [r for r in read_rejects(roc_out) if r["source"] == name]
    assert sorted(r["code"] for r in rejects) == ["bad_text", "malformed_annotation"]
    expected = 0
    for pos, record in enumerate(records):
        if len(record["categories"]) != len(record["annotations"]):
            assert f"{name}-{pos:05d}-000" not in samples
            continue
        for i, (category, ann) in enumerate(zip(record["categories"], record["annotations"])):
            key = f"{name}-{pos:05d}-{i:03d}"
            if not category:
                assert key not in samples
                continue
            sample, expected = samples[key], expected + 1
            assert sample["conversations"][0]["content"] == "<image>\n" + ROC_QUESTIONS[0]
            assert (
                sample["conversations"][1]["content"] == natural_label(category)
                and sample["regions"][0]["label"] == category
            )
            mask = _decode(ann["segmentation"], record["height"], record["width"])
            assert np.array_equal(decode_rle(sample["regions"][0]["mask"]), mask)
            assert sample["image"]["file_name"].endswith(record["file_name"]) and sample["provenance"]["split"] == "val"
    assert len(samples) == expected


def test_ledgers_balance(roc_out: Path, region_out: Path) -> None:
    ledgers = [json.loads((out / "manifest.json").read_text())["sources"] for out in (roc_out, region_out)]
    for ledger in [ledgers[0][name] for name in ("paco_lvis", *EVAL)] + [ledgers[1]["paco_lvis"]]:
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
        assert ledger["selected"] == ledger["written"] + ledger["rejected"]
        assert (
            ledger["reject_reasons"].get("invalid_sample", 0) == 0
            and ledger["reject_reasons"].get("unexpected_error", 0) == 0
        )
