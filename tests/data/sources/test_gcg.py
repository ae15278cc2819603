"""GCG family (GranD-f, OpenPSG, Flickr30K, RefCOCOg-GCG, GranD-f val/test GT) read from GLaMM's layout."""

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

from fclm_data.masks import decode_rle
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.schema import validate_sample
from fclm_data.sources import get_source
from fclm_data.sources.gcg import check_span, render_answer, resolve_overlaps
from fclm_data.templates import GCG_QUESTIONS, template_text

ANN = "GranDf/annotations/train"
TRAIN_SOURCES = ["grandf", "openpsg_gcg", "flickr30k_gcg", "refcocog_gcg"]
_TAG = re.compile(r"<p> (.*?) </p> \[SEG\]")


def _json(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def _decode(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _tagged(sample: dict) -> list[str]:
    return _TAG.findall(sample["conversations"][1]["content"])


def _by_source(out: Path, source: str) -> dict[str, dict]:
    return {k: s for k, (s, _, _) in read_samples(out).items() if s["source"] == source}


@pytest.fixture(scope="module")
def gcg_out(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gcg")
    build(TRAIN_SOURCES, data_root, out)
    return out


@pytest.fixture(scope="module")
def eval_outs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outs = {}
    for split in ("val", "test"):
        outs[split] = tmp_path_factory.mktemp(f"gcg_eval_{split}")
        recipe = Recipe(f"gcg_{split}", [RecipeEntry("grandf_gcg_eval", options={"split": split})])
        build(recipe, data_root, outs[split])
    return outs


# ---- every source ----------------------------------------------------------------------------------
def test_ledgers_balance_and_every_sample_is_valid(data_root: Path, gcg_out: Path) -> None:
    manifest = json.loads((gcg_out / "manifest.json").read_text())
    flickr = _json(data_root, f"{ANN}/flickr_mergedGT_GCG_train.json")
    expected_records = {
        "grandf": len(_json(data_root, f"{ANN}/GranDf_HA_GCG_train.json")),
        "openpsg_gcg": len(_json(data_root, f"{ANN}/OpenPsgGCG_train.json")),
        "flickr30k_gcg": len(flickr["images"]),
        "refcocog_gcg": len(_json(data_root, f"{ANN}/RefCOCOg_GCG_train.json")),
    }
    for name, records in expected_records.items():
        ledger = manifest["sources"][name]
        assert ledger["records"] == records == ledger["available"] + ledger["index_rejected"]
        assert ledger["selected"] == ledger["written"] + ledger["rejected"] and ledger["rejected"] == 0
    samples = read_samples(gcg_out)
    assert len(samples) == sum(manifest["sources"][n]["written"] for n in TRAIN_SOURCES)
    for sample, image, _ in samples.values():
        assert validate_sample(sample) == [] and sample["task"] == "gcg"
        assert image == (data_root / sample["image"]["file_name"]).read_bytes()


def test_answer_is_the_caption_with_tagged_phrases_in_order(data_root: Path, gcg_out: Path) -> None:
    sources = {name: get_source(name, data_root) for name in TRAIN_SOURCES}
    captions = {f"{name}-{u.uid}": s.payload_of(u)["caption"] for name, s in sources.items() for u in s.index().units}
    for key, (sample, _, _) in read_samples(gcg_out).items():
        question, answer = (t["content"] for t in sample["conversations"])
        assert question.startswith("<image>\n") and question.removeprefix("<image>\n") in GCG_QUESTIONS
        assert template_text(sample["templates"][0]) == question.removeprefix("<image>\n")
        phrases = _tagged(sample)
        assert sample["seg_targets"] == list(range(len(sample["regions"]))) == list(range(len(phrases)))
        assert [r["caption"] for r in sample["regions"]] == phrases  # regions in caption order
        assert _TAG.sub(r"\1", answer) == captions[key].strip()


# ---- GranD-f / OpenPSG -----------------------------------------------------------------------------
def _grandf(data_root: Path, gcg_out: Path) -> list[tuple[dict, dict]]:
    """(release record, sample) pairs of the written GranD-f records."""
    records = {Path(r["file_name"]).stem: r for r in _json(data_root, f"{ANN}/GranDf_HA_GCG_train.json")}
    samples = _by_source(gcg_out, "grandf")
    return [(records[s["provenance"]["image_id"]], s) for s in samples.values()]


def test_grandf_masks_are_the_union_of_each_phrase_rles(data_root: Path, gcg_out: Path) -> None:
    checked = multi = 0
    for record, sample in _grandf(data_root, gcg_out):
        for region, phrase in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            rles = record["groundings"][phrase]["rle_masks"]
            expected = np.sum([mask_utils.decode(r) for r in rles], axis=0) > 0  # GLaMM: decode, sum
            assert np.array_equal(decode_rle(region["mask"]).astype(bool), expected)
            x0, y0, x1, y1 = region["bbox"]
            ys, xs = np.nonzero(expected)
            assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            checked, multi = checked + 1, multi + (len(rles) > 1)
    assert checked > 10 and multi == 1


def test_quoted_caption_offsets_apply_after_stripping(data_root: Path, gcg_out: Path) -> None:
    ((record, sample),) = [(r, s) for r, s in _grandf(data_root, gcg_out) if r["caption"].startswith('"')]
    raw, stripped = record["caption"], record["caption"].strip('"').strip()
    spans = [g["token_positives"] for g in record["groundings"].values()]
    assert all(raw[s:e] != stripped[s:e] for s, e in spans)  # offsets into the raw text are off by one
    assert _tagged(sample) == [stripped[s:e] for s, e in sorted(spans)]
    assert _TAG.sub(r"\1", sample["conversations"][1]["content"]) == stripped


def test_null_groundings_are_counted_and_size_comes_from_the_image(data_root: Path, gcg_out: Path) -> None:
    ((record, sample),) = [(r, s) for r, s in _grandf(data_root, gcg_out) if None in r["groundings"].values()]
    assert "height" not in record and "width" not in record
    assert [sample["image"]["height"], sample["image"]["width"]] == sample["regions"][0]["mask"]["size"]
    rejects = read_rejects(gcg_out)
    null_drops = [r for r in rejects if r["source"] == "grandf" and "null" in r["detail"]]
    assert [(r["stage"], r["code"]) for r in null_drops] == [("index", "no_regions"), ("annotation", "no_regions")]
    assert null_drops[1]["record"].startswith(sample["key"])


def test_overlaps_case_repairs_and_bad_masks(data_root: Path, gcg_out: Path) -> None:
    pairs = _grandf(data_root, gcg_out)
    ((record, sample),) = [(r, s) for r, s in pairs if any(p.isupper() for p in r["groundings"])]
    upper = next(p for p in record["groundings"] if p.isupper())
    assert upper.lower() in _tagged(sample) and upper in sample["provenance"]["ann_ids"]  # case-insensitive match
    assert len(_tagged(sample)) == len(record["groundings"]) - 1  # the nested phrase is dropped
    drops = [r for r in read_rejects(gcg_out) if r["stage"] == "annotation" and r["source"] == "grandf"]
    assert Counter((r["code"], r["detail"].split(" ")[0]) for r in drops) == {
        ("no_regions", "grounding"): 1,  # null grounding
        ("bad_text", "span"): 1,  # nested span
        ("bad_text", "phrase"): 1,  # phrase not in the caption
        ("mask_size_mismatch", "RLE"): 1,
    }
    ((record, sample),) = [(r, s) for r, s in pairs if "a green hexagon" in r["groundings"]]
    first = next(iter(record["groundings"]))
    s, e = record["groundings"][first]["token_positives"]
    assert record["caption"][s:e] != first and first in _tagged(sample)  # wrong offsets repaired


def test_openpsg_uses_coco_train2017_and_coco_ids(data_root: Path, gcg_out: Path) -> None:
    records = _json(data_root, f"{ANN}/OpenPsgGCG_train.json")
    samples = _by_source(gcg_out, "openpsg_gcg")
    assert len(samples) == len(records)
    for sample in samples.values():
        image_id = int(sample["provenance"]["image_id"])
        assert sample["image"]["file_name"] == f"coco/train2017/{image_id:012d}.jpg" and 600 <= image_id < 700
    val = get_source("openpsg_gcg", data_root, split="val").index()
    assert len(val.units) == len(_json(data_root, f"{ANN}/OpenPsgGCG_val.json")) and not val.rejects


# ---- Flickr30K ---------------------------------------------------------------------------------------
def test_flickr_filters_each_drop_with_its_reason(data_root: Path, gcg_out: Path) -> None:
    rejects = [r for r in read_rejects(gcg_out) if r["source"] == "flickr30k_gcg"]
    assert Counter((r["stage"], r["code"]) for r in rejects) == Counter({
        ("index", "bad_text"): 1, ("index", "image_too_small"): 1,  # caption < 3 words, 40x24 image
        ("annotation", "bbox_outside_image"): 1, ("annotation", "duplicate_id"): 1, ("annotation", "ignored_annotation"): 1,
    })  # fmt: skip
    data = _json(data_root, f"{ANN}/flickr_mergedGT_GCG_train.json")
    anns = {}
    for ann in data["annotations"]:
        anns.setdefault(ann["id"], ann)  # the first of a repeated id is the one kept
    samples = _by_source(gcg_out, "flickr30k_gcg")
    images = {str(i["id"]): i for i in data["images"]}
    for key, sample in samples.items():
        image = images[key.rsplit("-", 1)[1]]
        for region, ann_id in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            ann = anns[int(ann_id)]
            assert np.array_equal(_decode(region["mask"]), mask_utils.decode(ann["sam_mask"]).astype(bool))
            s, e = ann["tokens_positive"][0]  # the first span only
            assert region["caption"] == image["caption"][s:e]
    bare_names = {f"flickr30k/{Path(i['file_name']).name.rsplit('_', 1)[-1]}" for i in data["images"]}
    assert {s["image"]["file_name"] for s in samples.values()} <= bare_names


def test_flickr_string_sizes_and_prefixed_names(data_root: Path, gcg_out: Path) -> None:
    data = _json(data_root, f"{ANN}/flickr_mergedGT_GCG_train.json")
    samples = _by_source(gcg_out, "flickr30k_gcg")
    stringy = next(i for i in data["images"] if isinstance(i["width"], str))
    prefixed = next(i for i in data["images"] if "_" in i["file_name"])
    assert not (data_root / "flickr30k" / prefixed["file_name"]).exists()
    for image in (stringy, prefixed):
        sample = samples[f"flickr30k_gcg-train-{image['id']}"]
        assert sample["image"]["width"] == int(image["width"]) and sample["image"]["height"] == int(image["height"])
        assert sample["provenance"]["image_id"] == Path(sample["image"]["file_name"]).stem
    resolved = samples[f"flickr30k_gcg-train-{prefixed['id']}"]["image"]["file_name"]
    assert resolved == f"flickr30k/{prefixed['file_name'].rsplit('_', 1)[1]}"


# ---- RefCOCOg GCG --------------------------------------------------------------------------------------
def _refcocog(data_root: Path) -> dict[str, dict]:
    return {k: v for entry in _json(data_root, f"{ANN}/RefCOCOg_GCG_train.json") for k, v in entry.items()}


def _glamm_offsets(record: dict) -> list[list[int]]:
    """GLaMM's RefCOCOgGCGDataset offsets: lowercased caption searched with the original-case sentence."""
    caption = record["caption"].strip('"').strip().lower()
    spans = []
    for ref in record["refs"]:
        if ref["sentence"].lower() in caption:
            index = caption.find(ref["sentence"])
            spans.append([index, index + len(ref["sentence"]) if index != -1 else -1])
    return spans


def test_refcocog_capitalised_phrase_is_grounded_where_glamm_gets_minus_one(data_root: Path, gcg_out: Path) -> None:
    records = _refcocog(data_root)
    record_id, record = next(
        (k, r) for k, r in records.items() if any(ref["sentence"][0].isupper() for ref in r["refs"])
    )
    capital = next(ref["sentence"] for ref in record["refs"] if ref["sentence"][0].isupper())
    assert [-1, -1] in _glamm_offsets(record)  # the bug: the capitalised sentence is not found
    sample = _by_source(gcg_out, "refcocog_gcg")[f"refcocog_gcg-train-{record_id}"]
    assert capital not in record["caption"]  # the caption has the sentence in lower case
    assert _tagged(sample)[0] == capital.lower() and len(_tagged(sample)) == len(record["refs"])
    assert sample["provenance"]["image_id"] == str(int(record_id))


def test_refcocog_repeated_nested_absent_and_polygons(data_root: Path, gcg_out: Path) -> None:
    records, samples = _refcocog(data_root), _by_source(gcg_out, "refcocog_gcg")
    repeated_id = next(k for k, r in records.items() if len({ref["sentence"] for ref in r["refs"]}) < len(r["refs"]))
    repeated = samples[f"refcocog_gcg-train-{repeated_id}"]
    assert (
        _tagged(repeated) == ["a coloured shape"] * 2
        and repeated["regions"][0]["mask"] != repeated["regions"][1]["mask"]
    )
    drops = [r for r in read_rejects(gcg_out) if r["source"] == "refcocog_gcg"]
    assert Counter(r["code"] for r in drops if r["stage"] == "annotation") == {"bad_text": 2, "bad_polygon": 1}
    assert any("occurs only inside longer" in r["detail"] for r in drops) and any(
        "does not occur" in r["detail"] for r in drops
    )
    assert [(r["stage"], r["code"]) for r in drops if r["stage"] == "index"] == [("index", "no_regions")]
    for key, sample in samples.items():
        record = records[key.rsplit("-", 1)[1]]
        h, w = sample["image"]["height"], sample["image"]["width"]
        for region, ann in zip(sample["regions"], sample["provenance"]["ann_ids"]):
            ref = record["refs"][int(ann.removeprefix("ref#"))]  # the release's refs carry no id
            assert region["caption"].lower() == ref["sentence"].lower()
            polygons = ref["segmentation"]
            # GLaMM: each polygon rasterised on its own, the masks summed
            expected = (
                np.sum([mask_utils.decode(mask_utils.frPyObjects([p], h, w))[..., 0] for p in polygons], axis=0) > 0
            )
            assert np.array_equal(_decode(region["mask"]), expected)


def test_refcocog_caption_case_is_kept_unless_asked(data_root: Path) -> None:
    from fclm_data.sources import BuildOptions

    for lowercase in (False, True):
        source = get_source("refcocog_gcg", data_root, lowercase_caption=lowercase)
        caption = next(c for u in source.index().units if (c := source.payload_of(u)["caption"]) != c.lower())
        unit = next(u for u in source.index().units if source.payload_of(u)["caption"] == caption)
        text = _TAG.sub(r"\1", source.build(unit, "k", 0, BuildOptions()).sample.conversations[1].content)
        assert text == (caption.lower() if lowercase else caption)


# ---- GranD-f val / test GT -----------------------------------------------------------------------------
def test_eval_one_sample_per_image_with_every_gt_mask(data_root: Path, eval_outs: dict[str, Path]) -> None:
    for split, out in eval_outs.items():
        captions = _json(data_root, f"GranDf/annotations/val_test/{split}_gcg_coco_caption_gt.json")
        masks = _json(data_root, f"GranDf/annotations/val_test/{split}_gcg_coco_mask_gt.json")
        by_id = {str(a["id"]): a for a in masks["annotations"]}
        samples = read_samples(out)
        assert len(samples) == len(captions["images"])
        for sample, _, _ in samples.values():
            assert sample["templates"] == ["gcg_question:1"] and sample["provenance"]["split"] == split
            tagged = _tagged(sample)
            assert [r["caption"] for r in sample["regions"][: len(tagged)]] == tagged  # caption order
            caption = next(
                a["caption"] for a in captions["annotations"] if a["image_id"] == sample["provenance"]["image_id"]
            )
            assert _TAG.sub(r"\1", sample["conversations"][1]["content"]) == caption
            gt = [a for a in masks["annotations"] if a["image_id"] == sample["provenance"]["image_id"]]
            kept = [by_id[i] for i in sample["provenance"]["ann_ids"]]
            assert len(kept) == len(gt) - sum(not _decode(a["segmentation"]).any() for a in gt)
            for region, ann in zip(sample["regions"], kept):
                assert np.array_equal(_decode(region["mask"]), _decode(ann["segmentation"]))
    (untagged,) = [
        s for s, _, _ in read_samples(eval_outs["test"]).values() if len(s["seg_targets"]) < len(s["regions"])
    ]
    assert (
        untagged["regions"][-1]["caption"] == "a hidden shape"
        and "hidden" not in untagged["conversations"][1]["content"]
    )
    assert Counter(r["code"] for r in read_rejects(eval_outs["val"])) == {"empty_mask": 1}
    assert Counter(r["code"] for r in read_rejects(eval_outs["test"])) == {"bad_text": 1}


def test_repeated_records_report_their_drops_once(data_root: Path, gcg_out: Path, tmp_path: Path) -> None:
    available = json.loads((gcg_out / "manifest.json").read_text())["sources"]["grandf"]["available"]
    manifest = build(Recipe("twice", [RecipeEntry("grandf", count=2 * available, repeat=True)]), data_root, tmp_path)
    ledger = manifest["sources"]["grandf"]
    assert ledger["written"] == 2 * available and ledger["repeats"] == 2
    once = json.loads((gcg_out / "manifest.json").read_text())["sources"]["grandf"]["dropped_annotations"]
    assert ledger["dropped_annotations"] == once and sum(once.values()) == 4


# ---- malformed files and the text helpers --------------------------------------------------------------
def test_malformed_and_missing_files_are_one_reject(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / ANN).mkdir(parents=True)
    shutil.copytree(data_root / "GranDf_HA_images", tmp_path / "GranDf_HA_images")
    (tmp_path / ANN / "GranDf_HA_GCG_train.json").write_text('[{"file_name": ')
    result = get_source("grandf", tmp_path).index()
    assert not result.units and [r.code for r in result.rejects] == ["malformed_annotation"]
    assert result.rejects[0].file == f"{ANN}/GranDf_HA_GCG_train.json"
    missing = get_source("flickr30k_gcg", tmp_path).index()
    assert not missing.units and not missing.rejects and f"{ANN}/flickr_mergedGT_GCG_train.json" in missing.missing


@pytest.mark.parametrize(
    ("source", "file", "content", "expected"),
    [("grandf", "GranDf_HA_GCG_train.json", "{}", "holds a dict, not a list"),
     ("refcocog_gcg", "RefCOCOg_GCG_train.json", '"text"', "holds a str, not a list"),
     ("flickr30k_gcg", "flickr_mergedGT_GCG_train.json", "[]", "holds a list, not a dict"),
     ("flickr30k_gcg", "flickr_mergedGT_GCG_train.json", '{"images": []}', "lacks 'images'/'annotations'")],
)  # fmt: skip
def test_wrong_top_level_container_is_one_reject(
    data_root: Path, tmp_path: Path, source: str, file: str, content: str, expected: str
) -> None:  # fmt: skip
    shutil.copytree(data_root, tmp_path / "root")
    (tmp_path / "root" / ANN / file).write_text(content)
    result = get_source(source, tmp_path / "root").index()
    assert not result.units and [r.code for r in result.rejects] == ["malformed_annotation"]
    assert expected in result.rejects[0].detail and result.rejects[0].file == f"{ANN}/{file}"


def test_span_helpers() -> None:
    caption = "A man rides a horse; a man waves."
    assert check_span(caption, "a man", [0, 5]) == (0, 5)  # case differs: accepted
    assert check_span(caption, "a horse", [11, 19]) == (12, 19)  # padded with a space: trimmed
    assert check_span(caption, "a man", [23, 28]) == (21, 26)  # off by two: the nearest occurrence
    with pytest.raises(Exception, match="does not occur"):
        check_span(caption, "a dog", [0, 5])
    phrases = [{"span": [0, 5]}, {"span": [0, 19]}, {"span": [12, 19]}, {"span": [21, 26]}]
    kept, dropped = resolve_overlaps(phrases, caption)
    assert [p["span"] for p in kept] == [[0, 19], [21, 26]] and len(dropped) == 2
    assert (
        render_answer(caption, [(0, 19), (21, 26)]) == "<p> A man rides a horse </p> [SEG]; <p> a man </p> [SEG] waves."
    )
