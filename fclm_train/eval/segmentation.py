"""cIoU / gIoU for RES, ReasonSeg, MUSE and DL-RES, with LISA's semantics.

Reproduces ``dvlab-research/LISA`` @3cb2d43 (``utils/utils.py::intersectionAndUnionGPU`` and
``train_ds.py::validate``), which UniPixel's ``eval_refcoco.py`` matches:

* the unit is one expression (one predicted mask against one GT mask) at the original resolution;
* ignore pixels (LISA's GT value 255, UniPixel's -1) are dropped from prediction *and* GT;
* gIoU is the mean over expressions of ``I / (U + 1e-5)``, where an expression whose union is
  empty (empty GT and empty prediction) scores 1;
* cIoU is ``sum(I) / (sum(U) + 1e-10)`` pooled over the whole split, not a mean of per-image values.

Counts are exact integers here; LISA accumulates float32 histograms, which can drift in the last
digits on very large splits.
"""

from __future__ import annotations

import numpy as np

from fclm_train.eval.masks import MaskLike, as_bool_mask

GIOU_EPS = 1e-5  #: LISA's ``intersection_i / (union_i + 1e-5)``
CIOU_EPS = 1e-10  #: LISA's ``intersection_meter.sum / (union_meter.sum + 1e-10)``


def mask_counts(pred_mask: MaskLike, gt_mask: MaskLike, ignore: MaskLike | None = None) -> tuple[int, int]:
    """Foreground intersection and union of one expression, ignore pixels excluded from both.

    Args:
        pred_mask: predicted (H, W) mask, bool / {0, 1} array or compressed RLE.
        gt_mask: GT (H, W) mask of the same size, without ignore values inside it.
        ignore: optional (H, W) mask of pixels to leave out (ReasonSeg's ignore polygons).

    Returns:
        ``(intersection, union)`` pixel counts.
    """
    pred, gt = as_bool_mask(pred_mask, "pred_mask"), as_bool_mask(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_mask {pred.shape} and gt_mask {gt.shape} differ: score at the original resolution")
    if ignore is not None:
        keep = ~as_bool_mask(ignore, "ignore")
        if keep.shape != gt.shape:
            raise ValueError(f"ignore {keep.shape} and gt_mask {gt.shape} differ")
        pred, gt = pred & keep, gt & keep
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def expression_iou(intersection: int, union: int) -> float:
    """LISA's per-expression IoU: ``I / (U + 1e-5)``, and 1 when both masks are empty."""
    if union == 0:
        return 1.0
    return intersection / (union + GIOU_EPS)


class SegmentationMeter:
    """Accumulates cIoU and gIoU over a split, one expression per :meth:`update`."""

    def __init__(self) -> None:
        self.intersection = 0
        self.union = 0
        self.iou_sum = 0.0
        self.n = 0

    def update(self, pred_mask: MaskLike, gt_mask: MaskLike, ignore: MaskLike | None = None) -> float:
        """Adds one expression; returns its IoU (as counted in gIoU)."""
        intersection, union = mask_counts(pred_mask, gt_mask, ignore)
        iou = expression_iou(intersection, union)
        self.intersection += intersection
        self.union += union
        self.iou_sum += iou
        self.n += 1
        return iou

    def compute(self) -> dict[str, float | int]:
        """``{"ciou", "giou"}`` as fractions (not x100) and ``n``, the number of expressions."""
        if self.n == 0:
            raise ValueError("SegmentationMeter.compute() before any update()")
        return {
            "ciou": self.intersection / (self.union + CIOU_EPS),
            "giou": self.iou_sum / self.n,
            "n": self.n,
        }
