"""ReasonSeg read from LISA's layout (reason_seg/ReasonSeg/<split>/image_N.{jpg,json} + explanatory)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.masks import decode_rle
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import BuildOptions, get_source
from fclm_data.templates import REASON_EXPLANATORY_QUESTIONS, RES_ANSWERS

ROOT = "reason_seg/ReasonSeg"


def _annotation(root: Path, split: str, stem: str) -> dict:
    raw = (root / f"{ROOT}/{split}/{stem}.json").read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))


def _raster(points: list, h: int, w: int) -> np.ndarray:
    flat = [v for pt in points for v in pt]
    return mask_utils.decode(mask_utils.frPyObjects([flat], h, w))[:, :, 0] > 0


def _explanations(root: Path) -> dict[str, str]:
    return {e["image"]: e["outputs"] for e in json.loads((root / f"{ROOT}/explanatory/train.json").read_text())}


@pytest.fixture(scope="module")
def repeated_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train images repeated by the recipe (as Table 7's 40,000 from 239 images)."""
    out = tmp_path_factory.mktemp("reasonseg")
    build(Recipe("reasonseg", [RecipeEntry("reasonseg", count=60, repeat=True)]), data_root, out)
    return out


def test_train_is_one_unit_per_image_and_repeats_balance(data_root: Path, repeated_out: Path) -> None:
    images = sorted((data_root / f"{ROOT}/train").glob("*.jpg"))
    assert len(get_source("reasonseg", data_root).index().units) == len(images)
    ledger = json.loads((repeated_out / "manifest.json").read_text())["sources"]["reasonseg"]
    assert ledger["written"] == ledger["selected"] == 60 and ledger["repeats"] == 10
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"] == len(images)


def test_masks_are_the_pycocotools_union_of_targets_and_lisa_ignore(data_root: Path, repeated_out: Path) -> None:
    kinds = Counter()
    for sample, _, _ in read_samples(repeated_out).values():
        if not sample["regions"]:
            continue
        stem = sample["provenance"]["image_id"]
        h, w = sample["image"]["height"], sample["image"]["width"]
        shapes = [s for s in _annotation(data_root, "train", stem)["shapes"] if s["label"] != "flag"]
        rasters = [(s["label"], _raster(s["points"], h, w)) for s in shapes]
        target = np.any([r for label, r in rasters if label == "target"], axis=0)
        region = sample["regions"][0]
        assert np.array_equal(decode_rle(region["mask"]).astype(bool), target)
        # LISA: paint largest-area first, so smaller later polygons overwrite; 255 = ignore
        painted = np.zeros((h, w), np.uint8)
        for label, r in sorted(rasters, key=lambda lr: -lr[1].sum()):
            painted[r] = 255 if label == "ignore" else 1
        if region["ignore"] is None:
            assert not (painted == 255).any()
            continue
        ignore = decode_rle(region["ignore"]).astype(bool)
        assert np.array_equal(ignore, painted == 255)
        assert np.array_equal(target & ~ignore, painted == 1)  # mask minus ignore == LISA's label 1
        kinds["hole" if (ignore & target).any() else "band"] += 1
    assert kinds["hole"] and kinds["band"]


def test_flag_shapes_are_skipped(data_root: Path) -> None:
    source = get_source("reasonseg", data_root)
    flagged = 0
    for unit in source.index().units:
        shapes = _annotation(data_root, "train", unit.image_ref)["shapes"]
        labels = [s["label"] for s in shapes]
        flagged += "flag" in labels
        assert [kind for kind, _ in unit.payload["shapes"]] == [label for label in labels if label != "flag"]
    assert flagged


def test_cp1252_file_is_read_correctly(data_root: Path) -> None:
    cp1252 = [p for p in (data_root / f"{ROOT}/train").glob("*.json") if not _is_utf8(p.read_bytes())]
    assert len(cp1252) == 1
    unit = next(u for u in get_source("reasonseg", data_root).index().units if u.image_ref == cp1252[0].stem)
    texts = [t for _, t in unit.payload["texts"]]
    assert any("café" in t and "waiter’s" in t for t in texts)
    assert any("café" in _built_text(data_root, unit, f"k{k}") for k in range(30))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _built_text(root: Path, unit, key: str) -> str:
    return get_source("reasonseg", root).build(unit, key, 0, BuildOptions()).sample.conversations[0].content


def test_instruction_is_drawn_afresh_per_repetition(data_root: Path, repeated_out: Path) -> None:
    used: dict[str, set] = {}
    for sample, _, _ in read_samples(repeated_out).values():
        used.setdefault(sample["provenance"]["image_id"], set()).update(sample["provenance"]["ann_ids"])
    for stem, ids in used.items():
        n_texts = len(_annotation(data_root, "train", stem)["text"])
        assert ids <= {f"text{i}" for i in range(n_texts)}
        assert len(ids) > 1 or n_texts == 1


def test_explanatory_modes_follow_lisa(data_root: Path, repeated_out: Path) -> None:
    explanations = _explanations(data_root)
    modes = Counter()
    for sample, _, _ in read_samples(repeated_out).values():
        explanation = explanations.get(f"{sample['provenance']['image_id']}.jpg")
        user, answer = (t["content"] for t in sample["conversations"])
        if explanation is None:
            assert not any(t.startswith("reason_explanatory") for t in sample["templates"]) and sample["regions"]
            modes["unexplained"] += 1
        elif not sample["regions"]:  # text only: the bare instruction, the explanation, no mask
            assert answer == explanation and "[SEG]" not in answer and sample["seg_targets"] == []
            assert (
                user.removeprefix("<image>\n")
                in _annotation(data_root, "train", sample["provenance"]["image_id"])["text"]
            )
            modes["text"] += 1
        elif answer.endswith(explanation):
            assert user.endswith(REASON_EXPLANATORY_QUESTIONS) and answer[: -len(explanation) - 1] in RES_ANSWERS
            modes["explain"] += 1
        else:
            assert answer in RES_ANSWERS
            modes["seg"] += 1
    assert all(modes[m] for m in ("unexplained", "text", "explain", "seg")), modes


def test_explanations_can_be_disabled(data_root: Path) -> None:
    source = get_source("reasonseg", data_root, explanatory_file="")
    for unit in source.index().units:
        assert unit.payload["explanation"] is None
        for k in range(5):
            sample = source.build(unit, f"k{k}", 0, BuildOptions()).sample
            assert sample.regions and sample.conversations[1].content in RES_ANSWERS


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_splits_one_sample_per_instruction_with_lisa_prompt(data_root: Path, tmp_path: Path, split: str) -> None:
    jsons = sorted((data_root / f"{ROOT}/{split}").glob("*.json"))
    build(Recipe(f"reasonseg_{split}", [RecipeEntry("reasonseg", options={"split": split})]), data_root, tmp_path)
    samples = read_samples(tmp_path)
    assert len(samples) == sum(len(_annotation(data_root, split, p.stem)["text"]) for p in jsons)
    for sample, _, _ in samples.values():
        data = _annotation(data_root, split, sample["provenance"]["image_id"])
        text = data["text"][int(sample["provenance"]["ann_ids"][0].removeprefix("text"))]
        question = text if data["is_sentence"] else f"What is {text} in this image?"
        expected = f"{question} Please output segmentation mask."
        assert [t["content"] for t in sample["conversations"]] == [f"<image>\n{expected}", "[SEG]."]
        assert len(sample["regions"]) == 1 and sample["provenance"]["split"] == split


def test_bad_images_are_rejected_with_reasons(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(data_root / ROOT, root / ROOT)
    train = root / f"{ROOT}/train"
    good = len(list(train.glob("*.jpg")))

    def variant(name: str, **changes) -> None:
        data = {**_annotation(root, "train", "image_0"), **changes}
        shutil.copy(train / "image_0.jpg", train / f"{name}.jpg")
        (train / f"{name}.json").write_text(json.dumps(data))

    shapes = _annotation(root, "train", "image_0")["shapes"]
    variant("bad_label", shapes=[{**shapes[0], "label": "background"}])
    variant("no_target", shapes=[s for s in shapes if s["label"] != "target"])
    variant("two_points", shapes=[{**shapes[0], "points": [[1, 1], [5, 5]]}])
    variant("no_text", text=[" "])
    shutil.copy(train / "image_0.jpg", train / "no_json.jpg")
    (train / "no_jpg.json").write_text(json.dumps(_annotation(root, "train", "image_0")))
    explanations = json.loads((root / f"{ROOT}/explanatory/train.json").read_text())
    explanations.append({"image": "ghost.jpg", "query": "?", "outputs": "nothing"})
    (root / f"{ROOT}/explanatory/train.json").write_text(json.dumps(explanations))
    manifest = build(["reasonseg"], root, tmp_path / "out")
    rejects = read_rejects(tmp_path / "out")
    assert Counter(r["code"] for r in rejects) == {
        "malformed_annotation": 1, "no_regions": 1, "bad_polygon": 1, "bad_text": 1, "missing_file": 1, "missing_image": 2,
    }  # fmt: skip
    ghost = f"{ROOT}/explanatory/train.json#{len(explanations) - 1}"
    assert {r["record"] for r in rejects if r["code"] == "missing_image"} == {"train/no_jpg", ghost}
    ledger = manifest["sources"]["reasonseg"]
    assert ledger["written"] == good
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"]
