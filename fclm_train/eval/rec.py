"""REC box accuracy (Acc@0.5), from predicted masks as UniPixel scores it, or from predicted boxes.

UniPixel (``PolyU-ChenLab/UniPixel`` @5c8e941, ``unipixel/eval/infer_seg.py::get_min_box``) turns a
predicted mask into a box: 8-connected components smaller than 10 px are dropped, and the box is
``[x_min, y_min, x_max, y_max]`` over the remaining pixel indices (inclusive, no +1). A hit is
``bbox_iou(box, gt) >= 0.5`` with nncore's continuous IoU (areas ``(x2-x1)*(y2-y1)``); an empty
prediction is a miss. GT boxes are xyxy in original pixels, ``[x, y, x + w, y + h]`` from COCO's
xywh (``fclm_data.masks.xywh_to_xyxy``); our shards' ``Region.bbox`` is already that form.

Connected components come from ``scipy.ndimage.label`` (OpenCV's ``connectedComponentsWithStats``
in the reference; both label 8-connected foreground the same way).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from fclm_train.eval.masks import MaskLike, as_bool_mask

Box = tuple[float, float, float, float]  #: (x0, y0, x1, y1) in original-image pixels

MIN_COMPONENT_AREA = 10  #: UniPixel's ``get_min_box(tensor, min_area=10)``
HIT_IOU = 0.5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def drop_small_components(mask: MaskLike, min_area: int = MIN_COMPONENT_AREA) -> np.ndarray:
    """The mask without its 8-connected components of fewer than ``min_area`` pixels."""
    from scipy import ndimage  # imported here: only this metric needs scipy

    array = as_bool_mask(mask, "pred_mask")
    labels, count = ndimage.label(array, structure=_EIGHT_CONNECTED)
    if count == 0:
        return array
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = areas >= min_area
    keep[0] = False  # background
    return keep[labels]


def mask_to_box(mask: MaskLike, min_area: int = MIN_COMPONENT_AREA) -> Box | None:
    """UniPixel's tight box of the mask after dropping small components; None when nothing is left."""
    ys, xs = np.nonzero(drop_small_components(mask, min_area))
    if ys.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Continuous IoU of two xyxy boxes (nncore's ``bbox_iou``); 0 when the union has no area."""
    ax0, ay0, ax1, ay1 = (float(v) for v in box_a)
    bx0, by0, bx1, by1 = (float(v) for v in box_b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class RecAccuracyMeter:
    """Acc@0.5 over a split: the fraction of expressions whose predicted box hits the GT box."""

    def __init__(self, threshold: float = HIT_IOU) -> None:
        self.threshold = threshold
        self.hits = 0
        self.n = 0

    def update(self, pred_mask: MaskLike, gt_box: Sequence[float]) -> bool:
        """Scores the box UniPixel derives from a predicted mask; returns whether it hit."""
        return self.update_box(mask_to_box(pred_mask), gt_box)

    def update_box(self, pred_box: Sequence[float] | None, gt_box: Sequence[float]) -> bool:
        """Scores a predicted xyxy box (already rescaled to original pixels); None is a miss."""
        hit = pred_box is not None and box_iou(pred_box, gt_box) >= self.threshold
        self.hits += int(hit)
        self.n += 1
        return hit

    def compute(self) -> dict[str, float | int]:
        """``{"acc"}`` as a fraction, with ``hits`` and ``n``."""
        if self.n == 0:
            raise ValueError("RecAccuracyMeter.compute() before any update()")
        return {"acc": self.hits / self.n, "hits": self.hits, "n": self.n}


# --------------------------------------------------------------------------------------------- box answers
#: Frames a box answer can be written in. ``input``: absolute pixels of the model's resized input (Qwen2.5-VL's
#: grounding convention); ``original``: original-image pixels; ``norm1000``: 0..1000 (Qwen2-VL); ``norm1``: 0..1
#: (Shikra, REF-VLM's box decoder targets).
BOX_FRAMES = ("input", "original", "norm1000", "norm1")
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_BOX_PATTERNS = (
    re.compile(r"\[\s*" + r"\s*,\s*".join([_NUMBER] * 4) + r"\s*\]"),  # [x0, y0, x1, y1], {"bbox_2d": [...]}
    re.compile(r"\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER + r"\s*\)\s*,?\s*\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER
               + r"\s*\)"),  # (x0,y0),(x1,y1): Qwen2-VL's <|box_start|>...<|box_end|>  # fmt: skip
)


def parse_box_answer(text: str) -> Box | None:
    """The first box written in an answer (``[x0, y0, x1, y1]`` or ``(x0,y0),(x1,y1)``), else None."""
    found = [m for pattern in _BOX_PATTERNS if (m := pattern.search(text))]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    x0, y0, x1, y1 = (float(v) for v in first.groups())
    return x0, y0, x1, y1


def box_to_original(box: Sequence[float], frame: str, original_hw: tuple[int, int],
                    input_hw: tuple[int, int] | None = None) -> Box:  # fmt: skip
    """A box in ``frame`` -> original-image pixels (xyxy); ``input_hw`` is needed for the ``input`` frame."""
    height, width = original_hw
    if frame == "original":
        sx = sy = 1.0
    elif frame == "input":
        if input_hw is None:
            raise ValueError("box frame 'input' needs the model's input size")
        sy, sx = height / input_hw[0], width / input_hw[1]
    elif frame == "norm1000":
        sx, sy = width / 1000.0, height / 1000.0
    elif frame == "norm1":
        sx, sy = float(width), float(height)
    else:
        raise ValueError(f"box frame must be one of {BOX_FRAMES}, got {frame!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy
