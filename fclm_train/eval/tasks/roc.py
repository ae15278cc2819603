"""``roc``: referring object classification (Osprey's LVIS / PACO 1k val sets) -- SS and sIoU per entry."""

from __future__ import annotations

from typing import Any

from fclm_train.eval.embedders import Embedder
from fclm_train.eval.roc import RocMeter
from fclm_train.eval.run import EvalSample, view_query
from fclm_train.eval.tasks import TaskOptions, TaskSpec


class RocTask:
    """Referring object classification: SS and sIoU per entry (Osprey), the label of the region asked about."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder
        self.meters: dict[str, RocMeter] = {}

    def run_batch(self, predictor, samples: list[EvalSample]):
        predictions = predictor.predict_batch([view_query(s, s.meta) for s in samples])
        for sample, prediction in zip(samples, predictions):
            meter = self.meters.setdefault(sample.entry, RocMeter(self.embedder))
            label = sample.meta["regions"][sample.meta["region_inputs"][0]]["label"]
            meter.update(prediction.text, label)
        return predictions

    def results(self) -> dict[str, dict[str, Any]]:
        return {entry: meter.compute() for entry, meter in self.meters.items()}


def _make(options: TaskOptions) -> RocTask:
    from fclm_train.eval.embedders import load_minilm

    return RocTask(load_minilm(options.minilm))


TASK = TaskSpec("roc", "ROC on LVIS / PACO: SS, sIoU (Osprey)", _make)
