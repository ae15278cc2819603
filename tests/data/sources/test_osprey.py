"""Osprey-724K (ShortForm, LVISPosNeg, Conversations, DetailedDescription) read from the HF release layout."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from pycocotools import mask as mask_utils

from fclm_data.errors import Reject
from fclm_data.masks import decode_rle
from fclm_data.sources import BuildOptions, get_source
from fclm_data.sources.osprey import coco_image_candidates
from fclm_data.sources.osprey_tags import render_inline, repair_tags
from fclm_data.synthetic.osprey import SHORT_SUFFIX, TAG_VARIANTS

SOURCES = {
    "osprey_short_form": "osprey/osprey_short_form.json",
    "osprey_lvis_posneg": "osprey/osprey_lvis_positive_negative.json",
    "osprey_conversations": "osprey/osprey_conversation.json",
    "osprey_detailed_description": "osprey/osprey_detail_description.json",
}


def _release(root: Path, source: str) -> list[dict]:
    return json.loads((root / SOURCES[source]).read_text())


@pytest.fixture(scope="module")
def osprey_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("osprey")
    build(list(SOURCES), data_root, out)
    return out


@pytest.fixture(scope="module")
def samples(osprey_out: Path) -> dict:
    return read_samples(osprey_out)


def _osprey_mask(segmentation, h: int, w: int) -> np.ndarray:
    """Osprey's CustomDataset.annToMask: polygons merged, uncompressed RLE via frPyObjects, RLE as is."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_utils.decode(rle)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<region1]", "<region1>"), ("<region1.", "<region1>"), ("<region 1>", "<region1>"), ("<Region1>", "<region1>"),
        ("<regin1>", "<region1>"), ("<regin 1>", "<region1>"), ("<region of1>", "<region1>"), ("<region01>", "<region1>"),
        ("<REGION 2]", "<region2>"), ("<region2>", "<region2>"),
        ("<region>", "bad_text"), ("< region >", "bad_text"), ("<region3>", "malformed_annotation"),
        ("<region0>", "malformed_annotation"), ("<region1 is", "bad_text"), ("<regions>", "bad_text"), ("<reigon1>", "bad_text"),
    ],
)  # fmt: skip
def test_repair_tags_table(text: str, expected: str) -> None:
    if expected.startswith("<"):
        assert repair_tags(f"Is {text} red?", n_regions=2).text == f"Is {expected} red?"
    else:
        with pytest.raises(Reject) as info:
            repair_tags(f"Is {text} red?", n_regions=2)
        assert info.value.code == expected


@pytest.mark.parametrize(("variant", "outcome"), sorted(TAG_VARIANTS.items()))
def test_release_tag_noise_is_repaired_or_rejected_with_reason(
    data_root: Path, osprey_out: Path, samples: dict, variant: str, outcome: str
) -> None:
    records = _release(data_root, "osprey_conversations")
    pos = next(
        i
        for i, r in enumerate(records)
        if variant in r["conversations"][0]["value"] and "<region2>" not in r["conversations"][0]["value"]
    )
    key = f"osprey_conversations-{pos:07d}"
    rejects = [
        r
        for r in read_rejects(osprey_out)
        if r["source"] == "osprey_conversations" and r["record"].startswith(f"record #{pos} ")
    ]
    if outcome == "repaired":
        question = records[pos]["conversations"][0]["value"].replace("<image>\n", "").replace(variant, "<region>")
        sample = samples[key][0]
        assert sample["conversations"][0]["content"] == f"<image>\n{question}"
        assert sample["region_inputs"] == [0] and not rejects
    else:
        assert key not in samples
        assert [r["code"] for r in rejects] == [outcome] and rejects[0]["stage"] == "index"


def test_masks_match_osprey_decoding_for_all_three_encodings(data_root: Path, samples: dict) -> None:
    forms = Counter()
    for key, (sample, _, _) in samples.items():
        source = sample["source"]
        record = _release(data_root, source)[int(key.rsplit("-", 1)[1])]
        for region, ann_id in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            seg = record["annotation"][int(ann_id.removeprefix("region")) - 1]["segmentation"]
            forms["polygon" if isinstance(seg, list) else type(seg["counts"]).__name__] += 1
            expected = _osprey_mask(seg, record["height"], record["width"])
            assert np.array_equal(decode_rle(region["mask"]), expected), key
            ys, xs = np.nonzero(expected)
            assert region["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert forms["polygon"] and forms["list"] and forms["str"]  # polygon, uncompressed, compressed RLE


def test_region_named_twice_and_assistant_mentions(data_root: Path, samples: dict) -> None:
    records = _release(data_root, "osprey_conversations")
    pos = next(
        i for i, r in enumerate(records) if r["conversations"][0]["value"].startswith("<image>\nCompare <region2>")
    )
    sample = samples[f"osprey_conversations-{pos:07d}"][0]
    assert sample["conversations"][0]["content"] == "<image>\nCompare <region> with <region>. Is <region> bigger?"
    assert sample["region_inputs"] == [0, 1, 0, 1]  # region 2 was marked first
    assert sample["provenance"]["ann_ids"] == ["region2", "region1"]
    answers = [t["content"] for t in sample["conversations"] if t["role"] == "assistant"]
    assert (
        answers[0].startswith("region 1 is ") and " and region 2 is " in answers[0]
    )  # "<region2> is ..., <region1> is ..."
    assert answers[1].startswith("region 2 is in the ")  # "<region1> is in the ..."
    assert all("<region" not in a for a in answers)


def test_inline_numbering_of_assistant_only_regions() -> None:
    turns, order, inputs = render_inline(
        [("user", "Is <region3> red?"), ("assistant", "<region3> is, <region1> is not.")]
    )
    assert [t.content for t in turns] == ["Is <region> red?", "region 1 is, region 2 is not."]
    assert order == [2] and inputs == [0]  # region 1 of the release has no input: it is only named


def test_listed_style_reproduces_osprey_prefix(data_root: Path) -> None:
    source = get_source("osprey_conversations", data_root, region_style="listed")
    unit = next(u for u in source.index().units if "Compare" in source.payload_of(u)["turns"][0][1])
    sample = source.build(unit, "k", 0, BuildOptions()).sample
    n = len(_release(data_root, "osprey_conversations")[int(unit.uid)]["annotation"])
    listing = ", ".join(f"region {i + 1} <region>" for i in range(n))
    assert sample.conversations[0].content == (
        f"<image>\nThere are {n} part regions in the picture: {listing}. Compare region 2 with region 1. Is region 2 bigger?"
    )
    assert sample.region_inputs == list(range(n)) and sample.templates == ["region_list_intro:1"]
    assert "<region>" not in "".join(t.content for t in sample.conversations[1:])


def test_short_form_keeps_osprey_suffix_once(data_root: Path, samples: dict) -> None:
    written = [s for s, _, _ in samples.values() if s["source"] == "osprey_short_form"]
    assert len(written) == len(_release(data_root, "osprey_short_form"))
    for sample in written:
        assert sample["task"] == "region_caption"
        for turn in sample["conversations"]:
            assert turn["content"].count(SHORT_SUFFIX.strip()) == (turn["role"] == "user")


def test_posneg_bare_names_resolve_in_coco2017(data_root: Path, samples: dict) -> None:
    records = _release(data_root, "osprey_lvis_posneg")
    splits = set()
    for pos, record in enumerate(records):
        sample = samples[f"osprey_lvis_posneg-{pos:07d}"][0]
        image_id = int(record["file_name"][:-4])
        split = "train2017" if image_id % 2 == 0 else "val2017"
        assert sample["image"]["file_name"] == f"coco/{split}/{record['file_name']}"
        assert sample["provenance"]["image_id"] == str(image_id) and sample["task"] == "roc"
        splits.add(split)
    assert splits == {"train2017", "val2017"}


def test_coco_image_candidates() -> None:
    dirs = ("coco/train2017", "coco/val2017")
    assert coco_image_candidates("COCO_train2014_000000000042.jpg", "coco", "coco/train2014", dirs) == [
        "coco/train2014/COCO_train2014_000000000042.jpg", "coco/train2017/000000000042.jpg", "coco/val2017/000000000042.jpg",
    ]  # fmt: skip
    assert coco_image_candidates("000000000042.jpg", "coco", "coco/train2014", dirs) == [
        "coco/train2017/000000000042.jpg",
        "coco/val2017/000000000042.jpg",
    ]
    assert coco_image_candidates("val2017/000000000042.jpg", "coco", "coco/train2014", dirs) == [
        "coco/val2017/000000000042.jpg"
    ]


def test_detailed_description_one_sample_per_record(data_root: Path, osprey_out: Path, samples: dict) -> None:
    records = _release(data_root, "osprey_detailed_description")
    rejects = {r["record"]: r for r in read_rejects(osprey_out) if r["source"] == "osprey_detailed_description"}
    for pos, record in enumerate(records):
        sample = samples[f"osprey_detailed_description-{pos:07d}"][0]
        rejected = [
            d
            for j, d in enumerate(record["description"])
            if f"record #{pos} (id {record['id']}) description {j}" in rejects
        ]
        kept = [d for d in record["description"] if d not in rejected]
        assert [t["content"] for t in sample["conversations"][1::2]] == [re.sub(r"^<[^>]*>: ", "", d) for d in kept]
        assert all(t.startswith("dlc_question:") for t in sample["templates"]) and len(sample["templates"]) == len(kept)
        assert len(sample["region_inputs"]) == len(kept) and sample["task"] == "detailed_description"
        first_text = re.sub(r"^<[^>]*>: ", "", kept[0])
        assert sample["regions"][sample["region_inputs"][0]]["caption"] == first_text
    codes = sorted(r["code"] for r in rejects.values())
    assert codes == ["bad_text", "malformed_annotation"]  # two regions named; a region the record lacks
    assert any("names 2 regions" in r["detail"] for r in rejects.values())


def test_detailed_description_keep_multi_region(data_root: Path) -> None:
    source = get_source("osprey_detailed_description", data_root, multi_region="keep")
    units = source.index().units
    unit = next(u for u in units if any("<region2>" in text for _, text in source.payload_of(u)["descriptions"]))
    sample = source.build(unit, "k", 0, BuildOptions()).sample
    assert sample.conversations[1].content.endswith("It lies left of region 2.")


def test_alternative_detail_file_name(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "osprey").mkdir()
    shutil.copy(
        data_root / SOURCES["osprey_detailed_description"], tmp_path / "osprey/osprey_detailed_description.json"
    )
    (tmp_path / "coco").symlink_to(data_root / "coco")
    source = get_source("osprey_detailed_description", tmp_path)
    assert source.missing_paths() == [] and source.ann_file == "osprey/osprey_detailed_description.json"
    default = get_source("osprey_detailed_description", data_root).index()
    assert [u.uid for u in source.index().units] == [u.uid for u in default.units]
    manifest = build(["osprey_detailed_description"], tmp_path, tmp_path / "out")
    assert manifest["sources"]["osprey_detailed_description"]["written"] == len(default.units)


def test_referenced_region_with_empty_mask_rejects_the_record(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "osprey").mkdir()
    (tmp_path / "coco").symlink_to(data_root / "coco")
    records = _release(data_root, "osprey_lvis_posneg")
    h, w = records[0]["height"], records[0]["width"]
    records[0]["annotation"][0]["segmentation"] = {"size": [h, w], "counts": [h * w]}  # all zeros, uncompressed
    records[1]["annotation"].append({"segmentation": [[1.0, 2.0, 3.0, 4.0]]})  # broken but never referenced
    (tmp_path / SOURCES["osprey_lvis_posneg"]).write_text(json.dumps(records))
    manifest = build(["osprey_lvis_posneg"], tmp_path, tmp_path / "out")
    ledger = manifest["sources"]["osprey_lvis_posneg"]
    assert (ledger["written"], ledger["rejected"]) == (len(records) - 1, 1)
    (reject,) = read_rejects(tmp_path / "out")
    assert (
        reject["code"] == "empty_mask" and "region 1 is referenced" in reject["detail"] and reject["stage"] == "sample"
    )


def test_ledgers_balance_and_every_sample_is_valid(osprey_out: Path, samples: dict) -> None:
    manifest = json.loads((osprey_out / "manifest.json").read_text())
    for name in SOURCES:
        ledger = manifest["sources"][name]
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"]
        assert ledger["selected"] == ledger["written"] + ledger["rejected"] and ledger["rejected"] == 0
    for sample, _, _ in samples.values():
        first = sample["conversations"][0]["content"]
        assert (
            first.startswith("<image>\n")
            and "".join(t["content"] for t in sample["conversations"]).count("<image>") == 1
        )
        assert sample["seg_targets"] == [] and sample["provenance"]["split"] == "train"


CAPTIONING = [
    "vg", "vg_grit", "paco_lvis", "osprey_paco_roc_eval", "osprey_lvis_roc_eval",
    "osprey_short_form", "osprey_lvis_posneg", "osprey_conversations", "osprey_detailed_description",
]  # fmt: skip


@pytest.mark.parametrize("name", CAPTIONING)
@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', "[1, 2]"])
def test_broken_annotation_files_never_raise(tmp_path: Path, name: str, content: str) -> None:
    """A file that is not JSON or has the wrong shape is one reject naming it (or per-record rejects)."""
    source = get_source(name, tmp_path)
    ann_file = source.required_paths()[0]
    assert source.index().missing  # nothing there yet: reported, not raised
    (tmp_path / ann_file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / ann_file).write_text(content)
    result = get_source(name, tmp_path).index()
    assert result.units == [] and result.rejects
    assert all(r.code == "malformed_annotation" and r.file == ann_file for r in result.rejects)
