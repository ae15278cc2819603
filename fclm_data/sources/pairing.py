"""Paired views for grounding sources: the ``pair`` option of RefCOCO/+/g, Pix2Cap, Osprey, GCG and PACO.

Consistency learning (paper Eqs. 4-5) needs the same region once as a visual-prompt input and once as a
``[SEG]`` output. Describe-Anything samples come paired; a grounding source built with ``pair: true`` writes
its samples the same way: the sample's ``conversations`` are the region-in / text-out view and ``pair`` is the
text-in / [SEG]-out view of the same regions (the trainer pairs each ``<region>`` of the first with the first
``[SEG]`` of the same region in the second). Default off: Table 7's stage 1 is built unpaired.

* :func:`region_to_text_view` -- one user turn per (region, text) asking about ``<region>`` (``reg_question``
  for short expressions / phrases, Table 12's ``dlc_question`` for detailed descriptions); the answer is the text.
* :func:`text_to_seg_view` -- one user turn per (region, text) with the text as query and a ``[SEG]`` answer
  (Table 12's DL-RES tables for descriptions, LISA's RES tables for short names).
"""

from __future__ import annotations

from fclm_data.errors import Reject
from fclm_data.schema import Sample, Turn, View
from fclm_data.templates import dlres_query, pick, res_question, with_image

#: how the text of a region is asked for / segmented, by kind of text
REGION_QUESTION_TABLE = {"expression": "reg_question", "description": "dlc_question"}


def region_to_text_view(items: list[tuple[int, str]], kind: str, seed: int, key: str) -> tuple[View, list[str]]:
    """(region index, text) pairs -> a region-in / text-out view (``<image>`` in the first turn) and template ids."""
    table = REGION_QUESTION_TABLE[kind]
    turns, templates = [], []
    for n, (_, text) in enumerate(items):
        tid, question = pick(table, seed, key, f"pair{n}")
        turns += [Turn("user", with_image(question) if n == 0 else question), Turn("assistant", text.strip())]
        templates.append(tid)
    return View(conversations=turns, region_inputs=[r for r, _ in items], seg_targets=[]), templates


def text_to_seg_view(items: list[tuple[int, str]], kind: str, seed: int, key: str) -> tuple[View, list[str]]:
    """(region index, text) pairs -> a text-in / [SEG]-out view and template ids.

    ``description``: Table 12's DL-RES question and answer; ``expression``: LISA's RES question and answer.
    """
    turns, templates = [], []
    for n, (_, text) in enumerate(items):
        if kind == "description":
            qid, template = pick("dlres_question", seed, key, f"pair{n}")
            aid, answer = pick("dlres_answer", seed, key, f"pair{n}")
            query = dlres_query(template, text)
        else:
            qid, template = pick("res_question", seed, key, f"pair{n}")
            aid, answer = pick("res_answer", seed, key, f"pair{n}")
            query = res_question(template, text)
        turns += [Turn("user", with_image(query) if n == 0 else query), Turn("assistant", answer)]
        templates += [qid, aid]
    return View(conversations=turns, region_inputs=[], seg_targets=[r for r, _ in items]), templates


def paired(sample: Sample, main: View, pair: View, templates: list[str]) -> Sample:
    """``sample`` with ``main`` (region-in) as its conversation and ``pair`` ([SEG]-out) as its pair."""
    if not main.region_inputs or not pair.seg_targets or main.seg_targets or pair.region_inputs:
        raise Reject("no_regions", "a paired sample needs <region> inputs in its view and [SEG] targets in its pair")
    sample.conversations, sample.region_inputs, sample.seg_targets = main.conversations, main.region_inputs, []
    sample.pair, sample.templates = pair, templates
    return sample


def as_view(sample: Sample) -> View:
    """The sample's own conversation as a view (the [SEG]-out view a paired grounding sample keeps)."""
    return View(conversations=list(sample.conversations), region_inputs=list(sample.region_inputs),
                seg_targets=list(sample.seg_targets))  # fmt: skip
