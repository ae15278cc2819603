"""MUSE read from PixelLM's layout (muse/muse_<split>.json + COCO 2014/2017 images)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.masks import decode_rle
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import BuildOptions, get_source
from fclm_data.sources.muse import _answer_text
from fclm_data.templates import template_text

FALLBACK_TABLES = ("muse_single_answer", "muse_multi_answer")


def _records(root: Path, split: str = "train") -> list[dict]:
    return json.loads((root / f"muse/muse_{split}.json").read_text())


def _coco_id(record: dict) -> str:
    return str(record.get("id") or int(record["file_name"].rsplit("_", 1)[1].split(".")[0]))


@pytest.fixture(scope="module")
def muse_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("muse")
    build(["muse"], data_root, out)
    return out


def _by_question(data_root: Path, muse_out: Path):
    """(sample, record, question index) for every written train sample."""
    records = {(_coco_id(r), n): (r, n) for r in _records(data_root) for n in range(len(r["questions"]))}
    for sample, _, _ in read_samples(muse_out).values():
        n = int(sample["key"].rsplit("-q", 1)[1])
        yield (sample, *records[(sample["provenance"]["image_id"], n)])


def test_one_sample_per_question_and_ledger(data_root: Path, muse_out: Path) -> None:
    questions = sum(len(r["questions"]) for r in _records(data_root))
    manifest = json.loads((muse_out / "manifest.json").read_text())
    ledger = manifest["sources"]["muse"]
    assert ledger["written"] == questions == ledger["records"]
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"]


def test_masks_are_pixel_identical_to_pycocotools(data_root: Path, muse_out: Path) -> None:
    forms = Counter()
    for sample, record, n in _by_question(data_root, muse_out):
        h, w = record["height"], record["width"]
        assert len(sample["regions"]) == len(record["answers"][n])
        for region, obj in zip(sample["regions"], record["answers"][n]):
            seg = obj["segmentation"]
            if isinstance(seg, dict):
                forms["uncompressed_rle"] += 1
                expected = mask_utils.decode(mask_utils.frPyObjects(seg, h, w)) > 0
            else:  # PixelLM: decode every polygon, sum over polygons, clip
                forms["polygons" if len(seg) > 1 else "polygon"] += 1
                expected = mask_utils.decode(mask_utils.frPyObjects(seg, h, w)).sum(axis=2) > 0
            assert np.array_equal(decode_rle(region["mask"]).astype(bool), expected)
            x0, y0, x1, y1 = region["bbox"]
            ys, xs = np.nonzero(expected)
            assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert region["label"] == obj["category_name"] and region["caption"] == obj["rephrased_name"]
    assert forms["uncompressed_rle"] and forms["polygon"] and forms["polygons"]


def test_text_answers_get_seg_tokens_in_order(data_root: Path, muse_out: Path) -> None:
    used = 0
    for sample, record, n in _by_question(data_root, muse_out):
        text = (record.get("text_answers") or [None] * (n + 1))[n]
        objects = record["answers"][n]
        answer = sample["conversations"][1]["content"]
        assert answer.count("[SEG]") == len(objects) == len(sample["seg_targets"])
        assert sample["seg_targets"] == list(range(len(objects)))
        if text is not None and text.count("{seg}") == len(objects):
            assert answer == text.replace("{seg}", "[SEG]") and not _fallback_ids(sample)
            used += 1
    assert used > 5


def _fallback_ids(sample: dict) -> list[str]:
    return [t for t in sample["templates"] if t.split(":")[0] in FALLBACK_TABLES]


def test_missing_or_mismatched_text_answers_fall_back_and_are_counted(data_root: Path, muse_out: Path) -> None:
    expected = set()
    for record in _records(data_root):
        texts = record.get("text_answers")
        for n, objects in enumerate(record["answers"]):
            if texts is None or texts[n].count("{seg}") != len(objects):
                expected.add(f"muse-train-{_coco_id(record)}-q{n}")
    assert any("text_answers" not in r for r in _records(data_root)) and len(expected) >= 2
    fallback = {k for k, (s, _, _) in read_samples(muse_out).items() if _fallback_ids(s)}
    assert fallback == expected
    rows = pq.read_table(muse_out / "manifest.parquet").to_pylist()  # the count is in the ledger files
    assert sum(any(t.split(":")[0] in FALLBACK_TABLES for t in row["templates"]) for row in rows) == len(expected)


def test_fallback_answer_follows_pixellm_composition() -> None:
    objects = [
        {"category_name": "teddy_bear", "rephrased_name": "Brown Teddy"},
        {"category_name": "cup"},
        {"category_name": "hat", "rephrased_name": "red hat"},
    ]
    seen_tables = set()
    for k in range(40):
        answer, ids = _answer_text(None, objects, 0, f"key{k}", rephrased_rate=1.0)
        table = ids[0].split(":")[0]
        seen_tables.add(table)
        assert answer.count("[SEG]") == 3
        if table == "muse_single_answer":
            assert answer == "Brown Teddy is [SEG], cup is [SEG] and red hat is [SEG]."
        else:
            template = template_text(ids[0])
            expected = template.replace("{class_name}", "brown teddy, cup, red hat")
            assert answer == expected.replace("{seg}", "[SEG], [SEG] and [SEG]")
    assert seen_tables == set(FALLBACK_TABLES)
    answer, _ = _answer_text(None, objects[:1], 0, "k", rephrased_rate=0.0)
    assert "teddy bear" in answer and "[SEG]" in answer and "and" not in answer  # LVIS underscores dropped
    assert _answer_text("It is the {seg} here.", objects[:1], 0, "k", 0.9) == ("It is the [SEG] here.", [])


def test_both_image_reference_forms(data_root: Path, muse_out: Path) -> None:
    seen = set()
    for sample, record, _ in _by_question(data_root, muse_out):
        name = sample["image"]["file_name"]
        if "file_name" in record:
            assert name == f"coco/train2014/{record['file_name']}" and "id" not in record
            seen.add("train2014")
        else:
            folder = "train2017" if "train2017" in record["coco_url"] else "val2017"
            assert name == f"coco/{folder}/{record['coco_url'].rsplit('/', 1)[1]}"
            seen.add(folder)
        assert sample["provenance"]["image_id"] == _coco_id(record)
        assert (data_root / name).is_file()
    assert seen == {"train2014", "train2017", "val2017"}


@pytest.mark.parametrize("split", ["val", "test_less", "test_many"])
def test_eval_splits_one_sample_per_question_with_fixed_prompt(data_root: Path, tmp_path: Path, split: str) -> None:
    records = _records(data_root, split)
    build(Recipe(f"muse_{split}", [RecipeEntry("muse", options={"split": split})]), data_root, tmp_path)
    samples = read_samples(tmp_path)
    assert len(samples) == sum(len(r["questions"]) for r in records)
    for sample, _, _ in samples.values():
        assert sample["provenance"]["split"] == split and sample["templates"][0] == "reason_long_question:1"
        assert sample["conversations"][0]["content"].endswith("Please respond with segmentation mask.")
    if split == "test_less":
        assert all(len(s["regions"]) == 1 for s, _, _ in samples.values())


def test_bad_records_are_rejected_with_reasons(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("muse", "coco/train2014", "coco/train2017", "coco/val2017"):
        shutil.copytree(data_root / folder, root / folder)
    records = _records(root)
    good = len(records)
    base = next(r for r in records if "coco_url" in r and len(r["questions"]) == 1)
    records += [
        {k: v for k, v in base.items() if k not in ("questions", "answers", "text_answers")},  # no questions
        {k: v for k, v in base.items() if k not in ("file_name", "coco_url")},  # no image reference
        {**base, "height": base["height"] + 1},  # size differs from the image
        {**base, "questions": ["   "]},  # empty question
        {**base, "answers": [[{**base["answers"][0][0], "segmentation": [[1.0, 2.0, 3.0, 4.0]]}]]},  # 2-point polygon
    ]
    (root / "muse/muse_train.json").write_text(json.dumps(records))
    manifest = build(["muse"], root, tmp_path / "out")
    reasons = Counter(r["code"] for r in read_rejects(tmp_path / "out"))
    assert reasons == {"malformed_annotation": 2, "image_size_mismatch": 1, "bad_text": 1, "bad_polygon": 1}
    ledger = manifest["sources"]["muse"]
    assert ledger["written"] == sum(len(r["questions"]) for r in records[:good])
    assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
    assert ledger["selected"] == ledger["written"] + ledger["rejected"]


def test_malformed_file_is_one_reject(data_root: Path, tmp_path: Path) -> None:
    text = (data_root / "muse/muse_train.json").read_text()
    (tmp_path / "muse").mkdir()
    (tmp_path / "muse/muse_train.json").write_text(text[: len(text) // 2])  # cut mid-record
    result = get_source("muse", tmp_path).index()
    assert result.units == [] and [r.code for r in result.rejects] == ["malformed_annotation"]
    assert result.rejects[0].file == "muse/muse_train.json"


def test_records_are_re_read_from_byte_spans(data_root: Path, tmp_path: Path) -> None:
    """Non-ASCII text, a BOM and pretty-printing must not shift the byte spans units carry."""
    shutil.copytree(data_root / "coco", tmp_path / "coco")
    records = _records(data_root)
    records[0]["questions"][0] = "Qu’est-ce qui est bleu au café? ☕"
    (tmp_path / "muse").mkdir()
    (tmp_path / "muse/muse_train.json").write_bytes(
        b"\xef\xbb\xbf" + json.dumps(records, indent=2, ensure_ascii=False).encode()
    )
    source = get_source("muse", tmp_path)
    units = source.index().units
    assert len(units) == sum(len(r["questions"]) for r in records)
    for unit in units:
        sample = source.build(unit, f"muse-{unit.uid}", 0, BuildOptions()).sample
        record = records[unit.payload["record"]]
        assert record["questions"][unit.payload["qa"]] in sample.conversations[0].content
    assert "☕" in source.build(units[0], "k", 0, BuildOptions()).sample.conversations[0].content
