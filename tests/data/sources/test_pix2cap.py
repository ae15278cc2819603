"""Pix2Cap-COCO read from its COCO-panoptic JSON + the COCO panoptic PNGs + COCO 2017 images."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from PIL import Image

from fclm_data.masks import decode_rle
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import BuildOptions, get_source
from fclm_data.templates import dlres_query, template_text


def _release(root: Path, split: str = "train") -> dict:
    return json.loads((root / f"pix2cap/pix2cap_coco_{split}.json").read_text())


def _panoptic_ids(root: Path, split: str, image_id: str) -> np.ndarray:
    rgb = np.asarray(
        Image.open(root / f"coco/panoptic_{split}2017/{int(image_id):012d}.png").convert("RGB"), dtype=np.int64
    )
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@pytest.fixture(scope="module")
def pix2cap_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pix2cap")
    build(["pix2cap"], data_root, out)
    return out


def test_train_filter_drops_images_with_short_descriptions(data_root: Path, pix2cap_out: Path) -> None:
    anns = _release(data_root)["annotations"]
    short = {a["image_id"] for a in anns if any(len(s["description"]) < 3 for s in a["segments_info"])}
    assert len(short) == 1
    samples = read_samples(pix2cap_out)
    written = {s["provenance"]["image_id"] for s, _, _ in samples.values()}
    assert written == {str(a["image_id"]) for a in anns} - {str(i) for i in short}
    rejects = [r for r in read_rejects(pix2cap_out) if r["stage"] == "index"]
    assert [(r["record"], r["code"]) for r in rejects] == [(f"image {short.pop()}", "bad_text")]
    ledger = json.loads((pix2cap_out / "manifest.json").read_text())["sources"]["pix2cap"]
    assert ledger["records"] == len(anns) == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"]


def test_masks_are_pixel_identical_to_panoptic_ids(data_root: Path, pix2cap_out: Path) -> None:
    segments = {s["id"]: s for a in _release(data_root)["annotations"] for s in a["segments_info"]}
    checked = all_channels = 0
    for sample, _, _ in read_samples(pix2cap_out).values():
        ids = _panoptic_ids(data_root, "train", sample["provenance"]["image_id"])
        for region, sid in zip(sample["regions"], sample["provenance"]["ann_ids"], strict=True):
            sid = int(sid)
            assert np.array_equal(decode_rle(region["mask"]).astype(bool), ids == sid)
            assert region["caption"] == segments[sid]["description"]
            all_channels += all(sid // 256**c % 256 for c in range(3))
            checked += 1
    assert checked > 10 and all_channels > 0


def test_void_pixels_belong_to_no_region(data_root: Path) -> None:
    """Id 0 and ids missing from segments_info are void; every listed id maps to its region."""
    source = get_source("pix2cap", data_root, max_regions=100)
    for ann in _release(data_root)["annotations"]:
        units = [u for u in source.index().units if u.image_ref == str(ann["image_id"])]
        if not units:
            continue
        sample = source.build(units[0], "k", 0, BuildOptions()).sample
        ids = _panoptic_ids(data_root, "train", str(ann["image_id"]))
        listed = {s["id"] for s in ann["segments_info"]}
        void = ~np.isin(ids, list(listed))
        assert (ids == 0).any() and (void & (ids != 0)).any()  # both kinds of void occur
        covered = np.any([decode_rle(r.mask).astype(bool) for r in sample.regions], axis=0)
        assert not (covered & void).any() and np.array_equal(covered, ~void)


def test_conversation_asks_for_each_description_with_dlres_templates(pix2cap_out: Path) -> None:
    for sample, _, _ in read_samples(pix2cap_out).values():
        turns = sample["conversations"]
        assert sample["task"] == "region_seg_caption" and len(turns) == 2 * len(sample["regions"]) <= 10
        assert sample["seg_targets"] == list(range(len(sample["regions"]))) and sample["region_inputs"] == []
        for n, region in enumerate(sample["regions"]):
            q_id, a_id = sample["templates"][2 * n : 2 * n + 2]
            question = dlres_query(template_text(q_id), region["caption"])
            assert turns[2 * n]["content"] == (f"<image>\n{question}" if n == 0 else question)
            assert turns[2 * n + 1]["content"] == template_text(a_id) and q_id.startswith("dlres_question:")


def test_region_cap_is_seeded_and_keeps_release_order(data_root: Path) -> None:
    source = get_source("pix2cap", data_root, max_regions=2)
    unit = max(source.index().units, key=lambda u: len(u.payload["segments"]))
    order = [sid for sid, _, _ in unit.payload["segments"]]
    picks = set()
    for k in range(12):
        sample = source.build(unit, f"k{k}", 0, BuildOptions(seed=3)).sample
        chosen = [int(s) for s in sample.provenance.ann_ids]
        assert len(chosen) == 2 == len(sample.regions) and chosen == sorted(chosen, key=order.index)
        assert sample.to_dict() == source.build(unit, f"k{k}", 0, BuildOptions(seed=3)).sample.to_dict()
        picks.add(tuple(chosen))
    assert len(picks) > 1


def test_listed_segment_without_pixels_is_a_counted_drop(data_root: Path, pix2cap_out: Path) -> None:
    drops = [r for r in read_rejects(pix2cap_out) if r["stage"] == "annotation"]
    assert [r["code"] for r in drops] == ["empty_mask"]
    manifest = json.loads((pix2cap_out / "manifest.json").read_text())
    assert manifest["sources"]["pix2cap"]["dropped_annotations"] == {"empty_mask": 1}


def test_val_is_one_sample_per_described_segment(data_root: Path, tmp_path: Path) -> None:
    anns = _release(data_root, "val")["annotations"]
    build(Recipe("pix2cap_val", [RecipeEntry("pix2cap", options={"split": "val"})]), data_root, tmp_path)
    samples = read_samples(tmp_path)
    described = [(a["image_id"], s["id"]) for a in anns for s in a["segments_info"] if len(s["description"]) >= 3]
    assert len(samples) == len(described) < sum(len(a["segments_info"]) for a in anns)
    for sample, _, _ in samples.values():
        ids = _panoptic_ids(data_root, "val", sample["provenance"]["image_id"])
        [sid] = sample["provenance"]["ann_ids"]
        assert np.array_equal(decode_rle(sample["regions"][0]["mask"]).astype(bool), ids == int(sid))
        assert sample["image"]["file_name"] == f"coco/val2017/{int(sample['provenance']['image_id']):012d}.jpg"
    assert Counter(r["code"] for r in read_rejects(tmp_path)) == {"bad_text": 1}


def test_broken_inputs_are_rejected_with_reasons(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("pix2cap", "coco/train2017", "coco/panoptic_train2017"):
        shutil.copytree(data_root / folder, root / folder)
    release = _release(root)
    anns = release["annotations"]
    anns.append(dict(anns[0]))  # duplicate image id
    anns.append({**anns[1], "image_id": 999_001, "segments_info": []})  # no segment
    anns.append({**anns[1], "image_id": 999_002, "file_name": "000000999002.png"})  # PNG and image missing
    (root / f"coco/panoptic_train2017/{anns[1]['file_name']}").write_bytes(b"not a png")
    (root / "pix2cap/pix2cap_coco_train.json").write_text(json.dumps(release))
    manifest = build(["pix2cap"], root, tmp_path / "out")
    reasons = Counter(r["code"] for r in read_rejects(tmp_path / "out") if r["stage"] != "annotation")
    assert reasons == {"bad_text": 1, "duplicate_id": 1, "no_regions": 1, "malformed_annotation": 1, "missing_image": 1}
    ledger = manifest["sources"]["pix2cap"]
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"] and ledger["written"] == 4
