"""``reason``: reasoning segmentation (ReasonSeg val/test, MUSE) -- cIoU / gIoU per entry with ReasonSeg's ignore
areas excluded from prediction and GT (LISA's 255 pixels). Same task class as ``res``."""

from __future__ import annotations

from fclm_train.eval.tasks import TaskSpec
from fclm_train.eval.tasks.res import SegmentationTask

TASK = TaskSpec(
    "reason", "ReasonSeg / MUSE: cIoU, gIoU, ignore areas excluded (LISA)",
    lambda options: SegmentationTask(options.seg_mode),
)  # fmt: skip
