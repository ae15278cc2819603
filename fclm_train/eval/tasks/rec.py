"""``rec``: referring expression comprehension (RefCOCO/+/g val/test) -- Acc@0.5 per entry.

The same RES samples and queries as ``res`` (``--seg-mode`` applies). Each target is scored by
:class:`~fclm_train.eval.rec.RecAccuracyMeter` against the region's box:

* when the answer writes a box (``[x0, y0, x1, y1]`` or ``(x0,y0),(x1,y1)``) it is that box, mapped from
  ``--box-frame`` to original pixels (Qwen2.5-VL writes absolute pixels of its resized input: ``input``);
* otherwise the box UniPixel's ``get_min_box`` derives from the k-th predicted mask (components < 10 px dropped);
* no box and no mask is a miss (``no_answer``).

GT box choice: the shards' ``Region.bbox`` is the tight box of the rasterised release polygon (pycocotools
``toBbox``, xyxy), not the release's float ``bbox`` of the polygon vertices; the two differ by under a pixel on
each side, which moves IoU by well under 1 % for RefCOCO-sized objects. UniPixel scores against the release box.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fclm_train.eval.rec import RecAccuracyMeter, box_to_original, mask_to_box, parse_box_answer
from fclm_train.eval.run import EvalSample, segmentation_view
from fclm_train.eval.tasks import TaskSpec
from fclm_train.eval.tasks.res import seg_queries


class RecTask:
    """Acc@0.5 per entry, from a box answer when there is one, else from the predicted mask's box."""

    def __init__(self, seg_mode: str = "generate", box_frame: str = "input") -> None:
        self.seg_mode, self.box_frame = seg_mode, box_frame
        self.meters: dict[str, RecAccuracyMeter] = defaultdict(RecAccuracyMeter)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"from_box": 0, "from_mask": 0, "no_answer": 0})

    def run_batch(self, predictor, samples: list[EvalSample]):
        views = [segmentation_view(s.meta) for s in samples]
        predictions = predictor.predict_batch(seg_queries(samples, views, self.seg_mode))
        cfg = predictor.config
        for sample, view, prediction in zip(samples, views, predictions):
            height, width = sample.image.original_size
            input_hw = _input_size(height, width, cfg)
            self.update(sample, view, prediction.text, prediction.masks, input_hw)
        return predictions

    def update(self, sample: EvalSample, view: dict, text: str, masks: list, input_hw: tuple[int, int]) -> None:
        """Scores every target of the view; the answer's box (if any) stands for its first target."""
        answer_box = parse_box_answer(text) if self.seg_mode == "generate" else None
        counts = self.counts[sample.entry]
        for k, target in enumerate(view["seg_targets"]):
            gt_box = sample.meta["regions"][target]["bbox"]
            if k == 0 and answer_box is not None:
                box = box_to_original(answer_box, self.box_frame, sample.image.original_size, input_hw)
                counts["from_box"] += 1
            elif k < len(masks):
                box = mask_to_box(masks[k])
                counts["from_mask"] += 1
            else:
                box = None
                counts["no_answer"] += 1
            self.meters[sample.entry].update_box(box, gt_box)

    def results(self) -> dict[str, dict[str, Any]]:
        return {entry: {**meter.compute(), **self.counts[entry]} for entry, meter in self.meters.items()}


def _input_size(height: int, width: int, cfg) -> tuple[int, int]:
    """(h, w) of the model's resized input: the frame Qwen2.5-VL's absolute box coordinates live in."""
    from fclm_train.data.vision import qwen_grid_size

    return qwen_grid_size(height, width, cfg.side, cfg.patch_size, cfg.merge_size)


TASK = TaskSpec(
    "rec", "REC on RefCOCO/+/g: Acc@0.5 from a box answer or the mask's box (UniPixel get_min_box)",
    lambda options: RecTask(options.seg_mode, options.box_frame),
)  # fmt: skip
