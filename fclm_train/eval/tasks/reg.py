"""``reg``: referring expression generation on RefCOCOg val -- METEOR and CIDEr (the protocol REF-VLM and Osprey
report, scored with pycocoevalcap as GLaMM's GCG captions are: :func:`fclm_train.eval.captions.caption_scores`).

Shards: ``fclm-data build --recipe eval_reg`` (RefCOCOg UMD val, one RES sample per expression). The unit is the
*object*: the model describes each referred region once (the region as a visual prompt, the sample's
``visual_prompt``), and the description is scored against every expression of that object in the shards
(several references per image id, as COCO caption scoring expects). CIDEr's IDF comes from the entry's
references, so each entry is scored in one call.

Prompt (a documented choice): Osprey's first VG short-caption question with its short-phrase limit
(``REGION_CAPTION_QUESTIONS[0] + REGION_CAPTION_SUFFIX``), a prompt FCLM saw in training. The expression of a
sample is recovered from its user turn through the RES template it was rendered with (``templates``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from fclm_data import templates as T
from fclm_data.formats.common import expression_from_question, user_text
from fclm_train.eval.captions import JavaNotFoundError, caption_scores
from fclm_train.eval.run import EvalSample, segmentation_view
from fclm_train.eval.tasks import TaskSpec

REG_PROMPT = T.with_image(T.REGION_CAPTION_QUESTIONS[0] + T.REGION_CAPTION_SUFFIX)


def expression_of(meta: dict) -> str:
    """The referring expression of a RES sample, read back through the template its question used."""
    question = user_text(next(t["content"] for t in meta["conversations"] if t["role"] == "user"))
    expression = expression_from_question(question, meta["templates"])
    if expression is None:
        raise ValueError(f"{meta['key']}: no RES question template matches its user turn (is it a RES sample?)")
    return expression


def object_id(meta: dict) -> str:
    """The referred object: the sample's image and its ref/ann id (``provenance.ann_ids[0]``)."""
    return f"{meta['provenance']['image_id']}/{meta['provenance']['ann_ids'][0]}"


class RegTask:
    """One description per object, METEOR / CIDEr per entry against all of the object's expressions."""

    def __init__(self, captions: bool = True) -> None:
        self.captions = captions
        self.references: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.described: dict[str, dict[str, Any]] = defaultdict(dict)  #: entry -> object -> Prediction

    def run_batch(self, predictor, samples: list[EvalSample]):
        from fclm_train.infer.requests import Query

        asked: dict[tuple[str, str], int] = {}
        queries = []
        for sample in samples:
            meta, obj = sample.meta, object_id(sample.meta)
            self.references[sample.entry][obj].append(expression_of(meta))
            if obj in self.described[sample.entry] or (sample.entry, obj) in asked:
                continue
            region = meta["regions"][segmentation_view(meta)["seg_targets"][0]]
            asked[(sample.entry, obj)] = len(queries)
            queries.append(Query(sample.image, [{"role": "user", "content": REG_PROMPT}], [region], [0],
                                 meta["visual_prompt"], meta["key"]))  # fmt: skip
        predictions = predictor.predict_batch(queries) if queries else []
        for (entry, obj), i in asked.items():
            self.described[entry][obj] = dataclasses.replace(predictions[i], region_masks=[])
        # one record per sample (its own key), the object's single description
        return [dataclasses.replace(self.described[s.entry][object_id(s.meta)], key=s.meta["key"]) for s in samples]

    def results(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for entry, refs in self.references.items():
            result: dict[str, Any] = {"n_objects": len(refs), "n_expressions": sum(map(len, refs.values()))}
            if self.captions:
                candidates = {obj: self.described[entry][obj].text.strip() for obj in refs}
                try:
                    result.update(caption_scores(dict(refs), candidates))
                except JavaNotFoundError as exc:
                    result.update({"meteor": None, "cider": None, "skipped": f"meteor, cider: {exc}"})
            out[entry] = result
        return out


TASK = TaskSpec(
    "reg", "REG on RefCOCOg val: METEOR, CIDEr per object against all its expressions (pycocoevalcap)",
    lambda options: RegTask(options.captions),
)  # fmt: skip
