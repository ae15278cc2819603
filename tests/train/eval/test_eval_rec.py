"""REC Acc@0.5 from mask-derived boxes, UniPixel's variant, on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from fclm_data.masks import encode_mask
from fclm_train.eval.rec import RecAccuracyMeter, box_iou, drop_small_components, mask_to_box


def test_box_is_inclusive_pixel_indices(make_mask):
    assert mask_to_box(make_mask(8, 8, 1, 4, 2, 6)) == (2.0, 1.0, 5.0, 3.0)  # 12 px block


def test_components_under_ten_pixels_are_dropped(make_mask):
    mask = make_mask(20, 20, 0, 3, 0, 4) | make_mask(20, 20, 15, 18, 15, 18)  # 12 px + 9 px
    assert mask_to_box(mask) == (0.0, 0.0, 3.0, 2.0)
    assert mask_to_box(make_mask(20, 20, 15, 18, 15, 18)) is None  # only a 9 px speck: a miss


def test_components_are_eight_connected():
    diagonal = np.eye(10, dtype=bool)  # 10 px touching only at corners: one component under 8-connectivity
    assert drop_small_components(diagonal).sum() == 10
    assert mask_to_box(diagonal) == (0.0, 0.0, 9.0, 9.0)


def test_box_iou_hand_values():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0  # degenerate: no area, no hit


def test_meter_counts_hits_misses_and_empty_predictions(make_mask):
    meter = RecAccuracyMeter()
    # mask over pixels 0..9: UniPixel's box (0, 0, 9, 9) against the GT (0, 0, 10, 10): IoU 0.81
    assert meter.update(make_mask(12, 12, 0, 10, 0, 10), (0, 0, 10, 10))
    assert not meter.update(encode_mask(make_mask(12, 12, 0, 10, 0, 3)), (0, 0, 10, 10))  # IoU 0.18
    assert not meter.update(np.zeros((12, 12), bool), (0, 0, 10, 10))
    assert meter.update_box((0, 0, 2, 1), (0, 0, 1, 1))  # IoU exactly 0.5 is a hit
    assert not meter.update_box(None, (0, 0, 1, 1))
    assert meter.compute() == {"acc": 2 / 5, "hits": 2, "n": 5}
