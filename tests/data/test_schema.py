"""The sample schema: pinned key sets (SHARD FORMAT) and the validator catching each violation."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fclm_data.masks import encode_mask, rle_bbox
from fclm_data.schema import (
    IMAGE_KEYS,
    PROVENANCE_KEYS,
    REGION_KEYS,
    SAMPLE_KEYS,
    SCHEMA_VERSION,
    ImageInfo,
    Provenance,
    Region,
    Sample,
    Turn,
    View,
    decode_sample,
    encode_sample,
    validate_sample,
)  # fmt: skip


def make_sample() -> Sample:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 3:12] = 1
    rle = encode_mask(mask)
    return Sample(
        key="src-001",
        source="dam_sam",
        task="dlc_dlres",
        provenance=Provenance("train", "7", ["3"], "a.tar"),
        image=ImageInfo("a.tar#1.jpg", 30, 20, "0" * 64),
        regions=[Region(mask=rle, bbox=rle_bbox(rle), label="cat", caption="a cat")],
        conversations=[Turn("user", "<image>\nWhat is <region>?"), Turn("assistant", "a cat")],
        region_inputs=[0],
        seg_targets=[],
        pair=View(
            [Turn("user", "<image>\na cat. Please output segmentation mask."), Turn("assistant", "[SEG].")], [], [0]
        ),
        templates=["dlc_question:1"],
    )


def test_key_sets_are_pinned() -> None:
    """SHARD FORMAT: changing these requires bumping SCHEMA_VERSION (and this test)."""
    assert SCHEMA_VERSION == 1
    assert SAMPLE_KEYS == ("schema", "key", "source", "task", "provenance", "image", "regions", "conversations",
                           "region_inputs", "seg_targets", "pair", "visual_prompt", "templates")  # fmt: skip
    assert REGION_KEYS == ("mask", "bbox", "label", "caption", "ignore", "box_only", "points")
    assert PROVENANCE_KEYS == ("split", "image_id", "ann_ids", "source_file", "repeat")
    assert IMAGE_KEYS == ("file_name", "width", "height", "sha256")


def test_valid_sample_round_trips() -> None:
    sample = make_sample()
    data = encode_sample(sample)
    assert encode_sample(sample) == data  # deterministic bytes
    decoded = decode_sample(data)
    assert list(decoded) == list(SAMPLE_KEYS)
    assert validate_sample(decoded) == []


def _broken(mutate) -> list[str]:
    sample = copy.deepcopy(make_sample().to_dict())
    mutate(sample)
    return validate_sample(sample)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s["region_inputs"].append(0), "region_inputs has 2 entries for 1 placeholders"),
        (lambda s: s["pair"]["seg_targets"].__setitem__(0, 3), "out of range"),
        (lambda s: s["conversations"][1].__setitem__("content", "[SEG] x <region>"), "contains <region>"),
        (lambda s: s["conversations"][0].__setitem__("content", "What is <region>? [SEG]"), "appears 0 times"),
        (lambda s: s["conversations"].append({"role": "user", "content": "<image> again"}), "outside the first turn"),
        (lambda s: s["regions"][0]["mask"].__setitem__("size", [21, 30]), "size [21, 30] != image"),
        (lambda s: s["regions"][0].__setitem__("bbox", [0, 0, 31, 5]), "outside the 30x20 image"),
        (lambda s: s.__setitem__("key", "a.b"), "does not match"),
        (lambda s: s.pop("templates"), "differ from schema"),
        (lambda s: s["regions"][0].pop("points"), "region 0 keys"),
        (lambda s: s.__setitem__("task", "nope"), "unknown task"),
        (lambda s: s["conversations"][0].__setitem__("role", "system"), "first turn is not a user turn"),
    ],
)
def test_validator_catches(mutate, expected: str) -> None:
    problems = _broken(mutate)
    assert any(expected in p for p in problems), problems


def test_hf_features_cover_every_key() -> None:
    pytest.importorskip("datasets")
    from fclm_data.schema import hf_features, hf_features_yaml

    features = hf_features()
    assert features._to_yaml_list() == hf_features_yaml()  # the static YAML is exactly what datasets writes
    assert list(features["json"]) == list(SAMPLE_KEYS)
    assert list(features["json"]["regions"].feature) == list(REGION_KEYS)
