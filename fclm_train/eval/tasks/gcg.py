"""``gcg``: grounded conversation generation (GranD-f val/test) -- AP50, mIoU, recall, METEOR, CIDEr (GLaMM)."""

from __future__ import annotations

from typing import Any

from fclm_train.eval.embedders import TextSimilarity
from fclm_train.eval.gcg import GcgEvaluator, parse_gcg_output
from fclm_train.eval.run import EvalSample, first_answer, view_query
from fclm_train.eval.tasks import TaskOptions, TaskSpec


class GcgTask:
    """Grounded conversation generation on GranD-f: AP50, mIoU, recall, METEOR, CIDEr per entry (GLaMM)."""

    def __init__(self, text_similarity: TextSimilarity | None = None, captions: bool = True,
                 recall: bool = True) -> None:  # fmt: skip
        self.text_similarity, self.captions, self.recall = text_similarity, captions, recall
        self.evaluators: dict[str, GcgEvaluator] = {}

    def run_batch(self, predictor, samples: list[EvalSample]):
        predictions = predictor.predict_batch([view_query(s, s.meta) for s in samples])
        for sample, prediction in zip(samples, predictions):
            meta = sample.meta
            evaluator = self.evaluators.setdefault(sample.entry, GcgEvaluator(self.text_similarity))
            caption, phrases = parse_gcg_output(prediction.text)
            gt_caption, _ = parse_gcg_output(first_answer(meta))
            regions = meta["regions"]
            evaluator.update(meta["provenance"]["image_id"], caption, phrases, prediction.masks, gt_caption,
                             [r["caption"] for r in regions], [r["mask"] for r in regions])  # fmt: skip
        return predictions

    def results(self) -> dict[str, dict[str, Any]]:
        return {entry: ev.compute(captions=self.captions, recall=self.recall) for entry, ev in self.evaluators.items()}


def _make(options: TaskOptions) -> GcgTask:
    from fclm_train.eval.embedders import BertMeanPoolEmbedder, embedding_similarity, load_minilm

    if options.bert is not None:
        similarity = embedding_similarity(BertMeanPoolEmbedder(options.bert))
    else:
        similarity = embedding_similarity(load_minilm(options.minilm)) if options.recall else None
    return GcgTask(similarity, options.captions, options.recall)


TASK = TaskSpec("gcg", "GCG on GranD-f: AP50, mIoU, recall, METEOR, CIDEr (GLaMM)", _make)
