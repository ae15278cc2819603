"""``gres``: generalized RES on gRefCOCO val/testA/testB -- cIoU, gIoU, N-acc, T-acc per entry (gRefCOCO paper).

The prediction of an expression is the union of all its predicted masks; no ``[SEG]`` (or only empty masks) is
the "no target" decision. The GT is the union of the sample's ``[SEG]`` target regions, empty for a no-target
expression (``fclm-data build --recipe eval_grefcoco``). Metric semantics: :mod:`fclm_train.eval.gres`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from fclm_data.masks import decode_rle
from fclm_train.eval.gres import GresMeter
from fclm_train.eval.run import EvalSample, first_answer, view_query
from fclm_train.eval.tasks import TaskSpec


class GresTask:
    """gRES metrics per entry; ``seg_mode="forced"`` teacher-forces the sample's answer (no [SEG] = no target)."""

    def __init__(self, seg_mode: str = "generate") -> None:
        self.seg_mode = seg_mode
        self.meters: dict[str, GresMeter] = defaultdict(GresMeter)

    def run_batch(self, predictor, samples: list[EvalSample]):
        forced = self.seg_mode == "forced"
        predictions = predictor.predict_batch([view_query(s, s.meta, first_answer(s.meta) if forced else None)
                                               for s in samples])  # fmt: skip
        for sample, prediction in zip(samples, predictions):
            self.update(sample, prediction.masks)
        return predictions

    def update(self, sample: EvalSample, masks: list[np.ndarray]) -> float:
        shape = sample.image.original_size
        pred = np.logical_or.reduce([np.asarray(m, bool) for m in masks]) if masks else None
        meta = sample.meta
        targets = [decode_rle(meta["regions"][i]["mask"]).astype(bool) for i in meta["seg_targets"]]
        gt = np.logical_or.reduce(targets) if targets else None
        return self.meters[sample.entry].update(pred, gt, shape)

    def results(self) -> dict[str, dict[str, Any]]:
        return {entry: meter.compute() for entry, meter in self.meters.items()}


TASK = TaskSpec(
    "gres", "gRES on gRefCOCO: cIoU, gIoU, N-acc, T-acc (gRefCOCO paper; no mask = no target)",
    lambda options: GresTask(options.seg_mode),
)  # fmt: skip
