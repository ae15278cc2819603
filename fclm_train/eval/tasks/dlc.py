"""``dlc``: detailed localized captioning.

* With ``--dlc-bench``: DLC-Bench Pos / Neg / Avg (DAM) through an OpenAI-compatible judge (no shards read).
* On Describe-Anything shards, no judge: a self-consistency check -- describe the region (the sample's DLC view),
  segment that caption with the DL-RES question, score the mask against the region (``cycle_ciou`` /
  ``cycle_giou``); optionally METEOR / CIDEr of the caption against the reference caption (Java).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from fclm_train.eval.captions import JavaNotFoundError, caption_scores
from fclm_train.eval.run import EvalSample, first_answer, view_query
from fclm_train.eval.segmentation import SegmentationMeter
from fclm_train.eval.tasks import TaskOptions, TaskSpec, run_over_shards


class DlcConsistencyTask:
    """DLC on Describe-Anything shards, no judge: caption -> DL-RES mask -> IoU with the region."""

    def __init__(self, captions: bool = True) -> None:
        self.captions = captions
        self.meters: dict[str, SegmentationMeter] = defaultdict(SegmentationMeter)
        self.pairs: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)  #: entry -> key -> (ref, pred)

    def run_batch(self, predictor, samples: list[EvalSample]):
        from fclm_train.infer.requests import Query

        for sample in samples:
            if len(sample.meta["region_inputs"]) != 1:
                raise ValueError(f"{sample.meta['key']}: the DLC view must ask about exactly one region")
        described = predictor.predict_batch([view_query(s, s.meta) for s in samples])
        prompts = [predictor.templates.segment(p.text, "dlres") for p in described]
        queries = [Query(s.image, [{"role": "user", "content": q}], key=s.meta["key"]) for s, q in zip(samples, prompts)]
        segmented = predictor.predict_batch(queries)
        for sample, prediction, again in zip(samples, described, segmented):
            region = sample.meta["regions"][sample.meta["region_inputs"][0]]
            pred = again.masks[0] if again.masks else np.zeros(sample.image.original_size, dtype=bool)
            self.meters[sample.entry].update(pred, region["mask"])
            self.pairs[sample.entry][sample.meta["key"]] = (region["caption"] or first_answer(sample.meta),
                                                            prediction.text)  # fmt: skip
        return described

    def results(self) -> dict[str, dict[str, Any]]:
        out = {}
        for entry, meter in self.meters.items():
            cycle = meter.compute()
            result: dict[str, Any] = {"cycle_ciou": cycle["ciou"], "cycle_giou": cycle["giou"], "n": cycle["n"]}
            if self.captions:
                result.update(self._caption_metrics(entry))
            out[entry] = result
        return out

    def _caption_metrics(self, entry: str) -> dict[str, Any]:
        pairs = self.pairs[entry]
        try:
            return caption_scores({k: [ref] for k, (ref, _) in pairs.items()}, {k: p for k, (_, p) in pairs.items()})
        except JavaNotFoundError as exc:
            return {"meteor": None, "cider": None, "skipped": f"meteor, cider: {exc}"}


def _run(predictor, spec, options: TaskOptions, shards, limit, batch_size, on_batch=None, writer=None):
    """DLC-Bench through the judge when ``--dlc-bench`` is given, else the shard self-consistency check."""
    if options.dlc_bench is None:
        return run_over_shards(predictor, spec, options, shards, limit, batch_size, on_batch, writer)
    from fclm_train.eval.judge import OpenAIJudge
    from fclm_train.eval.run import evaluate_dlc_bench

    judge = OpenAIJudge(base_url=options.judge_url, model=options.judge_model)
    results, captions_by_key = evaluate_dlc_bench(predictor, options.dlc_bench, judge, limit, batch_size)
    if writer:
        writer.writelines(json.dumps({"key": k, "text": v}) + "\n" for k, v in captions_by_key.items())
    return results, {"judge_url": judge.base_url, "judge_model": judge.model}


TASK = TaskSpec(
    "dlc", "DLC-Bench Pos/Neg/Avg with a judge (DAM); on DAM shards a caption->mask self-consistency check",
    lambda options: DlcConsistencyTask(options.captions),
    needs_shards=lambda options: options.dlc_bench is None, run=_run,
)  # fmt: skip
