"""cIoU / gIoU with LISA's semantics, on hand-computed expressions."""

from __future__ import annotations

import numpy as np
import pytest

from fclm_data.masks import encode_mask
from fclm_train.eval.segmentation import SegmentationMeter, expression_iou, mask_counts


def test_ciou_is_pooled_and_differs_from_the_mean_of_ious(make_mask):
    meter = SegmentationMeter()
    # small object: I = 2, U = 4
    meter.update(make_mask(10, 10, 0, 1, 0, 2), make_mask(10, 10, 0, 1, 0, 4))
    # large object: I = 90, U = 100
    meter.update(make_mask(10, 10, 0, 9, 0, 10), make_mask(10, 10, 0, 10, 0, 10))
    result = meter.compute()
    assert result["n"] == 2
    assert result["ciou"] == pytest.approx(92 / (104 + 1e-10), abs=1e-12)
    assert result["giou"] == pytest.approx((2 / (4 + 1e-5) + 90 / (100 + 1e-5)) / 2, abs=1e-12)
    assert result["ciou"] - result["giou"] > 0.18  # 0.885 vs 0.7: pooling over pixels matters


def test_empty_gt_and_empty_prediction_scores_one_and_adds_nothing_to_ciou():
    meter = SegmentationMeter()
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert meter.update(empty, empty) == 1.0  # exactly 1, no epsilon
    full = np.ones((4, 4), dtype=np.uint8)
    assert meter.update(full, full) == pytest.approx(16 / (16 + 1e-5), abs=1e-15)
    assert meter.update(full, full) < 1.0  # LISA's +1e-5 is kept
    result = meter.compute()
    assert result["giou"] == pytest.approx((1 + 2 * 16 / (16 + 1e-5)) / 3, abs=1e-15)
    assert result["ciou"] == pytest.approx(32 / (32 + 1e-10))


def test_a_prediction_on_an_empty_gt_scores_zero_and_inflates_the_pooled_union(make_mask):
    meter = SegmentationMeter()
    meter.update(make_mask(4, 4, 0, 2, 0, 2), make_mask(4, 4, 0, 2, 0, 2))  # I = U = 4
    assert meter.update(make_mask(4, 4, 0, 3, 0, 3), np.zeros((4, 4), bool)) == 0.0  # U = 9
    assert meter.compute()["ciou"] == pytest.approx(4 / 13)


def test_ignore_pixels_leave_both_prediction_and_gt(make_mask):
    gt = make_mask(6, 6, 0, 2, 0, 6)  # 12 px
    pred = make_mask(6, 6, 0, 4, 0, 6)  # 24 px: the GT and 12 px below it
    ignore = make_mask(6, 6, 1, 4, 0, 6)  # rows 1-3: half the GT, all the false positives
    assert mask_counts(pred, gt) == (12, 24)
    assert mask_counts(pred, gt, ignore) == (6, 6)
    meter = SegmentationMeter()
    assert meter.update(pred, gt, ignore) == pytest.approx(6 / (6 + 1e-5))
    assert meter.compute()["ciou"] == pytest.approx(1.0)


def test_rle_and_array_inputs_agree(make_mask):
    pred, gt, ignore = make_mask(5, 7, 0, 3, 1, 6), make_mask(5, 7, 1, 5, 0, 4), make_mask(5, 7, 4, 5, 0, 7)
    assert mask_counts(encode_mask(pred), encode_mask(gt), encode_mask(ignore)) == mask_counts(pred, gt, ignore)


def test_ambiguous_masks_are_refused(make_mask):
    gt = make_mask(4, 4, 0, 2, 0, 2).astype(np.uint8)
    gt[3, 3] = 255  # LISA-style ignore value inside the GT
    with pytest.raises(ValueError, match="ignore"):
        mask_counts(np.zeros((4, 4), bool), gt)
    with pytest.raises(TypeError, match="threshold"):
        mask_counts(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="original resolution"):
        mask_counts(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="before any update"):
        SegmentationMeter().compute()


def test_expression_iou_edge_values():
    assert expression_iou(0, 0) == 1.0
    assert expression_iou(0, 5) == 0.0
    assert expression_iou(3, 4) == pytest.approx(0.75, abs=1e-5)
