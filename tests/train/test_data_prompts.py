"""Visual prompts on the SAM frame: boxes and points land where segment-anything's transform puts them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from fclm_train.data.prompts import prompt_mask
from fclm_train.data.vision import frame_scale, long_side_size


@pytest.mark.parametrize("H,W,side", [(37, 1000, 64), (1000, 37, 64), (333, 517, 1024), (480, 640, 1024)])
def test_box_and_point_prompts_scale_each_axis_as_sam(H, W, side):
    """``ResizeLongestSide.apply_coords`` scales x by new_w / W and y by new_h / H; so must the prompts."""
    sam = ResizeLongestSide(side)
    scale = frame_scale(H, W, side)
    assert long_side_size(H, W, side) == sam.get_preprocess_shape(H, W, side)
    bbox = [0.55 * W, 0.6 * H, 0.95 * W, 0.99 * H]
    x0, y0, x1, y1 = sam.apply_boxes(np.array([bbox]), (H, W))[0]
    box = prompt_mask("box", torch.zeros(side, side, dtype=torch.bool), {"bbox": bbox}, "k", 0, scale, side)
    ys, xs = box.nonzero(as_tuple=True)
    assert (int(xs.min()), int(xs.max()) + 1) == (int(np.floor(x0)), max(int(np.floor(x0)) + 1, int(np.ceil(x1))))
    assert (int(ys.min()), int(ys.max()) + 1) == (int(np.floor(y0)), max(int(np.floor(y0)) + 1, int(np.ceil(y1))))
    point = [0.8 * W, 0.7 * H]
    px, py = sam.apply_coords(np.array([point]), (H, W))[0]
    disc = prompt_mask("point", torch.ones(side, side, dtype=torch.bool), {"bbox": bbox, "points": [point]}, "k", 0,
                       scale, side)  # fmt: skip
    ys, xs = disc.nonzero(as_tuple=True)
    assert abs(float(xs.float().mean()) + 0.5 - px) <= 1.0 and abs(float(ys.float().mean()) + 0.5 - py) <= 1.0
