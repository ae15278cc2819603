"""``res``: referring expression segmentation (RefCOCO/+/g val/test) -- cIoU / gIoU per entry (LISA's semantics).

Target k of a sample is scored against the k-th predicted mask; a missing mask scores an empty one and is counted
in ``no_mask``. ``seg_mode="forced"`` teacher-forces the sample's own answer (LISA's ``validate``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from fclm_train.eval.run import SEG_MODES, EvalSample, first_answer, segmentation_view, view_query
from fclm_train.eval.segmentation import SegmentationMeter
from fclm_train.eval.tasks import TaskSpec


class SegmentationTask:
    """RES / ReasonSeg / DL-RES: cIoU and gIoU per entry, target k against the k-th predicted mask."""

    def __init__(self, seg_mode: str = "generate") -> None:
        if seg_mode not in SEG_MODES:
            raise ValueError(f"seg_mode must be one of {SEG_MODES}")
        self.seg_mode = seg_mode
        self.meters: dict[str, SegmentationMeter] = defaultdict(SegmentationMeter)
        self.missing: dict[str, int] = defaultdict(int)  #: targets without a predicted mask

    def run_batch(self, predictor, samples: list[EvalSample]):
        views = [segmentation_view(s.meta) for s in samples]
        predictions = predictor.predict_batch(seg_queries(samples, views, self.seg_mode))
        for sample, view, prediction in zip(samples, views, predictions):
            self.update(sample, view, prediction.masks)
        return predictions

    def update(self, sample: EvalSample, view: dict, masks: list[np.ndarray]) -> None:
        height, width = sample.image.original_size
        for k, target in enumerate(view["seg_targets"]):
            region = sample.meta["regions"][target]
            if k < len(masks):
                pred = masks[k]
            else:
                pred = np.zeros((height, width), dtype=bool)
                self.missing[sample.entry] += 1
            self.meters[sample.entry].update(pred, region["mask"], region["ignore"])

    def results(self) -> dict[str, dict[str, Any]]:
        return {entry: {**meter.compute(), "no_mask": self.missing[entry]} for entry, meter in self.meters.items()}


def seg_queries(samples: list[EvalSample], views: list[dict], seg_mode: str) -> list:
    """One query per sample: its user turn; in forced mode with the sample's own answer."""
    forced = seg_mode == "forced"
    return [view_query(s, v, first_answer(v) if forced else None) for s, v in zip(samples, views)]


TASK = TaskSpec(
    "res", "RES on RefCOCO/+/g: cIoU, gIoU (LISA)", lambda options: SegmentationTask(options.seg_mode),
)  # fmt: skip
