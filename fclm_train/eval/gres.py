"""gRES metrics (generalized RES, gRefCOCO): cIoU, gIoU, N-acc and T-acc as the gRefCOCO paper defines them.

Reference: Liu, Ding, Jiang, "GRES: Generalized Referring Expression Segmentation", CVPR 2023, §5 and the
evaluator of its code (``henghuiding/ReLA`` @a389648, ``gres_model/evaluation/refer_evaluation.py``):

* one unit is one expression; its GT is the union of every target instance's mask (``getMaskByRef(merge=True)``),
  empty for a no-target expression;
* a **no-target** expression scores IoU 1 (and adds nothing to I or U) when the model outputs no mask -- a true
  positive for N-acc -- and IoU 0 with the predicted area added to U otherwise (a false negative);
* a **target** expression scores ``I / U`` (0 when U = 0); predicting no mask is a false positive for T-acc;
* cIoU = sum I / sum U over all expressions; gIoU = mean IoU over all expressions;
* N-acc = TP / (TP + FN) over no-target expressions; T-acc = TN / (TN + FP) over target expressions.

ReLA's evaluator adds 1 to both denominators (``TP / (TP + FN + 1)``) and divides its "T_acc" by TP + FP; we
follow the paper's definitions (exact fractions) and say so here. "No mask" is what the model outputs: no
``[SEG]`` or only empty masks (``pred_empty``), as ReLA's no-target head would decide.
"""

from __future__ import annotations

import numpy as np

from fclm_train.eval.masks import MaskLike, as_bool_mask


class GresMeter:
    """Accumulates the gRES metrics over a split, one expression per :meth:`update`."""

    def __init__(self) -> None:
        self.intersection = self.union = 0
        self.iou_sum = 0.0
        self.n = 0
        self.tp = self.fn = self.tn = self.fp = 0  #: no-target confusion counts (positive = "no target")

    def update(self, pred_mask: MaskLike | None, gt_mask: MaskLike | None, shape: tuple[int, int]) -> float:
        """One expression: the union of predicted masks (None = no mask) against the union of GT masks
        (None = no target) on an image of ``shape``; returns its IoU as counted in gIoU."""
        pred = np.zeros(shape, bool) if pred_mask is None else as_bool_mask(pred_mask, "pred_mask")
        gt = np.zeros(shape, bool) if gt_mask is None else as_bool_mask(gt_mask, "gt_mask")
        if pred.shape != gt.shape:
            raise ValueError(f"pred_mask {pred.shape} and gt_mask {gt.shape} differ: score at the original resolution")
        pred_empty, gt_empty = not pred.any(), not gt.any()
        intersection, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
        if gt_empty:
            iou = 1.0 if pred_empty else 0.0
            self.tp += int(pred_empty)
            self.fn += int(not pred_empty)
            self.union += union
        else:
            iou = intersection / union if union else 0.0
            self.fp += int(pred_empty)
            self.tn += int(not pred_empty)
            self.intersection += intersection
            self.union += union
        self.iou_sum += iou
        self.n += 1
        return iou

    def compute(self) -> dict[str, float | int | None]:
        """Fractions (not x100): ``ciou``, ``giou``, ``n_acc`` / ``t_acc`` (None without such expressions)."""
        if self.n == 0:
            raise ValueError("GresMeter.compute() before any update()")
        no_target, target = self.tp + self.fn, self.tn + self.fp
        return {
            "ciou": self.intersection / self.union if self.union else 1.0,
            "giou": self.iou_sum / self.n,
            "n_acc": self.tp / no_target if no_target else None,
            "t_acc": self.tn / target if target else None,
            "n": self.n,
            "n_no_target": no_target,
        }
