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
