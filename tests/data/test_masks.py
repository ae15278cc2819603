"""Mask conversions are pixel-identical to pycocotools and reject what pycocotools would mangle."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from fclm_data.errors import Reject
from fclm_data.masks import (
    box_to_rle,
    check_box,
    decode_rle,
    encode_mask,
    merge_rles,
    parse_rle_counts,
    polygons_to_rle,
    rle_area,
    rle_bbox,
    rle_runs,
    segmentation_to_rle,
)  # fmt: skip

H, W = 48, 64
POLYS = [[5.0, 5.0, 30.0, 6.0, 20.0, 25.0], [40.0, 30.0, 60.0, 30.0, 60.0, 45.0, 40.0, 45.0]]


def test_polygons_match_lisa_decoding() -> None:
    """LISA: decode each polygon's RLE, sum, clip -- we store the same pixels as one RLE."""
    expected = mask_utils.decode(mask_utils.frPyObjects(POLYS, H, W)).sum(axis=2) > 0
    rle = polygons_to_rle(POLYS, H, W)
    assert isinstance(rle["counts"], str) and rle["size"] == [H, W]
    assert np.array_equal(decode_rle(rle).astype(bool), expected)


def test_all_three_pycocotools_forms_agree() -> None:
    dense = decode_rle(polygons_to_rle(POLYS, H, W))
    compressed = mask_utils.encode(np.asfortranarray(dense))
    runs = parse_rle_counts(compressed["counts"].decode())
    uncompressed = {"size": [H, W], "counts": runs}
    for form in (POLYS, uncompressed, compressed, {**compressed, "counts": compressed["counts"].decode()}):
        assert np.array_equal(decode_rle(segmentation_to_rle(form, H, W)), dense)


def test_encode_accepts_c_order_and_bool() -> None:
    mask = np.zeros((H, W), bool)
    mask[3:9, 10:20] = True
    rle = encode_mask(mask)
    assert rle_area(rle) == 60 and rle_bbox(rle) == [10.0, 3.0, 20.0, 9.0]
    assert np.array_equal(decode_rle(rle).astype(bool), mask)


@pytest.mark.parametrize(
    "segmentation, code",
    [
        ([[1.0, 2.0, 3.0, 4.0]], "bad_polygon"),  # pycocotools would read 4 numbers as a box
        ([[1.0, 2.0, 3.0, 4.0, 5.0]], "bad_polygon"),
        ([["a", 1, 2, 3, 4, 5]], "bad_polygon"),
        ([], "bad_polygon"),
        ({"size": [H + 1, W], "counts": "abc"}, "mask_size_mismatch"),
        ({"size": [H, W], "counts": "PP5"}, "malformed_annotation"),  # runs do not tile the grid
        ("not a mask", "malformed_annotation"),
    ],
)
def test_bad_segmentations_are_rejected(segmentation, code: str) -> None:
    with pytest.raises(Reject) as info:
        segmentation_to_rle(segmentation, H, W)
    assert info.value.code == code


def test_truncated_rle_is_rejected_not_decoded_to_garbage() -> None:
    good = mask_utils.encode(np.asfortranarray(decode_rle(polygons_to_rle(POLYS, H, W))))["counts"].decode()
    with pytest.raises(Reject):
        segmentation_to_rle({"size": [H, W], "counts": good[:-3]}, H, W)


def test_box_helpers() -> None:
    rle = box_to_rle([10, 5, 20, 15], H, W)
    assert rle_bbox(rle) == [10.0, 5.0, 20.0, 15.0] and rle_area(rle) == 100
    assert check_box([-5, -5, 10, 10], H, W) == [0.0, 0.0, 10.0, 10.0]
    with pytest.raises(Reject) as info:
        check_box([70, 0, 90, 10], H, W)
    assert info.value.code == "bbox_outside_image"


def test_merge_is_union() -> None:
    a, b = polygons_to_rle(POLYS[:1], H, W), polygons_to_rle(POLYS[1:], H, W)
    assert np.array_equal(decode_rle(merge_rles([a, b])), decode_rle(polygons_to_rle(POLYS, H, W)))


def _masks_of_every_shape():
    """Empty, full, first pixel set, one pixel, thin and COCO-sized masks, runs long enough for 4-5 characters."""
    rng = np.random.default_rng(7)
    yield np.zeros((5, 7), np.uint8)
    yield np.ones((5, 7), np.uint8)
    first = np.zeros((4, 4), np.uint8)
    first[0, 0] = 1
    yield first
    yield np.ones((1, 1), np.uint8)
    yield (rng.random((1, 300)) < 0.5).astype(np.uint8)
    for density in (0.001, 0.3, 0.97):
        yield (rng.random((480, 640)) < density).astype(np.uint8)
    big = np.zeros((1536, 2048), np.uint8)
    big[100:1400, 50:1900] = 1  # runs of ~1.3 M pixels: deltas both signs, multi-character numbers
    yield big


@pytest.mark.parametrize("mask", list(_masks_of_every_shape()), ids=lambda m: f"{m.shape}-{int(m.sum())}")
def test_vectorised_runs_equal_pycocotools_and_the_reference_parser(mask: np.ndarray) -> None:
    rle = encode_mask(mask)
    runs = rle_runs(rle["counts"])
    assert runs is not None and int(runs.sum()) == mask.size
    expected = np.repeat(np.arange(runs.size) % 2, runs).reshape(mask.shape, order="F")
    assert np.array_equal(expected, decode_rle(rle))  # pycocotools' own decode of the same string
    assert runs.tolist() == parse_rle_counts(rle["counts"])
    assert np.array_equal(rle_runs(rle["counts"].encode()), runs)  # bytes counts too


@pytest.mark.parametrize("counts", ["0P", "a" * 13 + "0", "\x7f0", "é0", " 0"],
                         ids=["ends-inside-a-number", "number-too-long", "past-the-alphabet", "not-ascii", "below"])
def test_malformed_counts_parse_to_none(counts: str) -> None:
    assert rle_runs(counts) is None and parse_rle_counts(counts) is None
