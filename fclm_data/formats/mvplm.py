"""MVP-LM: unified perception (word-based and sentence-based), "thinking-then-perceiving" responses.

MVP-LM paper §3 ("CoT-inspired Dataset Unification"): each pair is a task description, an instruction and the
response ``"[caption]. The perception result is <PER>"`` (``<PER>``: the summary token whose hidden state seeds
the decoder queries); targets are a box + mask per instance, with the word-list index as class.

* **sentence-based** (one referring expression -> its targets): user = ``<image>\\n`` + the sentence task
  description + ``"\\n"`` + the expression. One turn per phrase group of the FCLM answers (:mod:`.common`); a
  region-input sample whose regions carry captions (VG, Osprey, Describe-Anything) grounds each caption.
* **word-based** (a list of names -> every instance of each): user = ``<image>\\n`` + the word task description
  + ``"\\n"`` + the names joined by ", " ending in "."; each name's character span in the turn is recorded
  (``word_spans``) so that a model can mean-pool its tokens. Used when one answer grounds several different
  phrases (MUSE, GCG captions: Flickr30K, OpenPSG, GranD-f) and for labelled region-input samples (PACO-LVIS,
  Osprey LVIS, ROC) and Pix2Cap's COCO-panoptic segments (things and stuff, by category name): every labelled
  region is a target of its label.
* caption: the source's own where one exists (a GCG answer's caption, tags removed), else
  :data:`~fclm_data.templates.MVPLM_CAPTION_FALLBACK` over the target names (a documented choice).

The word list is written in first-appearance order here; the loader's
:class:`fclm_train.data.stages.MvplmWordLists` reshuffles it every time a sample is read and pads it with
absent categories (the build's vocabulary, ``manifest.json`` ``mvplm_vocabulary``) up to a word budget
(``fclm-train --mvplm-word-budget``) -- seeded, so resume stays exact; the loader's encoder turns each name's
character span into its token span (``fclm_train.data.format_rows``). ``format_fields.turns[i]``: ``{mode, words, word_spans, targets, classes}``;
``seg_targets`` = the targets of every turn in order; no visual-prompt inputs (``region_inputs`` is ``[]``) and no
``pair`` (a Describe-Anything pair grounds the same caption again).
"""

from __future__ import annotations

import re
from typing import Any

from fclm_data import templates as T
from fclm_data.formats.common import FormatError, Group, Targets, seg_turns, user_text
from fclm_data.schema import IMAGE_TOKEN, SEG_TOKEN

PER = "<PER>"
_TAGS = re.compile(r"</?p>|" + re.escape(SEG_TOKEN))


def _image(first: bool) -> str:
    return f"{IMAGE_TOKEN}\n" if first else ""


def word_instruction(words: list[str], first: bool = True) -> tuple[str, list[list[int]]]:
    """The user turn of a word-based pair (``<image>`` in the first turn only) and each name's [start, end) span."""
    head = f"{_image(first)}{T.MVPLM_WORD_TASK}\n"
    text, spans = head, []
    for i, word in enumerate(words):
        spans.append([len(text), len(text) + len(word)])
        text += word + (", " if i < len(words) - 1 else ".")
    return text, spans


def sentence_instruction(expression: str, first: bool = True) -> str:
    return f"{_image(first)}{T.MVPLM_SENTENCE_TASK}\n{expression}"


def response(caption: str) -> str:
    return T.MVPLM_RESPONSE.format(caption=caption.strip().rstrip("."))


def _caption(names: list[str], gcg_answer: str | None) -> str:
    if gcg_answer:
        return " ".join(_TAGS.sub(" ", gcg_answer).split())
    return T.MVPLM_CAPTION_FALLBACK.format(names=", ".join(dict.fromkeys(names)))


def _word_turn(groups: list[Group], gcg_answer: str | None = None) -> dict:
    words = list(dict.fromkeys(g.phrase for g in groups))
    targets = [r for g in groups for r in g.regions]
    classes = [words.index(g.phrase) for g in groups for _ in g.regions]
    return {"mode": "word", "words": words, "targets": targets, "classes": classes,
            "caption": _caption(words, gcg_answer)}  # fmt: skip


def _sentence_turn(group: Group) -> dict:
    return {"mode": "sentence", "words": [group.phrase], "targets": list(group.regions),
            "classes": [0] * len(group.regions), "caption": _caption([group.phrase], None)}  # fmt: skip


def _label_groups(indexes: list[int], regions: list[dict]) -> list[Group]:
    return [Group(" ".join(regions[i]["label"].split()), [i]) for i in indexes]


def plan_turns(sample: dict[str, Any]) -> list[dict]:
    """The perception pairs of a sample (before text): see the module docs for the rules."""
    regions = sample["regions"]
    if sample["task"] == "region_seg_caption" and all(regions[i]["label"] for i in sample["seg_targets"]):
        # Pix2Cap = COCO panoptic: MVP-LM perceives panoptic data by category names (things and stuff)
        return [_word_turn(_label_groups(sample["seg_targets"], regions))]
    if sample["seg_targets"]:
        turns = []
        for st in seg_turns(sample, sample):
            answer = sample["conversations"][st.turn]["content"]
            if len({g.phrase for g in st.groups}) > 1 or st.gcg:
                turns.append(_word_turn(st.groups, answer if st.gcg else None))
            else:
                turns.append(_sentence_turn(st.groups[0]))
        return turns
    inputs = list(dict.fromkeys(sample["region_inputs"]))
    if inputs and all(regions[i]["label"] for i in inputs):
        return [_word_turn(_label_groups(inputs, regions))]
    if inputs and all(regions[i]["caption"] for i in inputs):
        return [_sentence_turn(Group(" ".join(regions[i]["caption"].split()), [i])) for i in inputs]
    raise FormatError(f"{sample['key']}: no [SEG] target and no label or caption on every input region: "
                      "nothing for MVP-LM to perceive")  # fmt: skip


def render(sample: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    turns, fields = [], []
    for plan in plan_turns(sample):
        if plan["mode"] == "word" and any(", " in w or PER in w or w.endswith(".") for w in plan["words"]):
            raise FormatError(f"{sample['key']}: a name of {plan['words']} would not split back out of the word list")
        if plan["mode"] == "word":
            content, spans = word_instruction(plan["words"], not turns)
        else:
            content, spans = sentence_instruction(plan["words"][0], not turns), []
        turns += [{"role": "user", "content": content}, {"role": "assistant", "content": response(plan["caption"])}]
        fields.append({"mode": plan["mode"], "words": plan["words"], "word_spans": spans, "targets": plan["targets"],
                       "classes": plan["classes"]})  # fmt: skip
    out = dict(sample)
    out.update(conversations=turns, region_inputs=[], seg_targets=[r for f in fields for r in f["targets"]],
               pair=None, format="mvplm", format_fields={"turns": fields})  # fmt: skip
    return out


def parse(sample: dict[str, Any]) -> Targets:
    """Targets from the text: the word list (or expression) of each user turn, classes -> phrases."""
    fields, conversations, key = sample["format_fields"]["turns"], sample["conversations"], sample["key"]
    if len(conversations) != 2 * len(fields):
        raise FormatError(f"{key}: {len(conversations)} turns for {len(fields)} perception pairs")
    entries: list[tuple[int, str, int]] = []
    for n, info in enumerate(fields):
        question, answer = conversations[2 * n]["content"], conversations[2 * n + 1]["content"]
        if not answer.endswith(f"The perception result is {PER}") or answer.count(PER) != 1:
            raise FormatError(f"{key}: answer {n} does not end with the perception result {PER}")
        text = user_text(question)
        if info["mode"] == "word":
            body = text.removeprefix(T.MVPLM_WORD_TASK + "\n")
            if not body.endswith("."):
                raise FormatError(f"{key}: word list {body!r} does not end with '.'")
            words = body[:-1].split(", ")
            if [question[s:e] for s, e in info["word_spans"]] != words:
                raise FormatError(f"{key}: word_spans do not cover the word list")
        else:
            words = [text.removeprefix(T.MVPLM_SENTENCE_TASK + "\n")]
        entries += [(n, words[cls], region) for region, cls in zip(info["targets"], info["classes"], strict=True)]
    return Targets([], _groups(entries))


def expected(sample: dict[str, Any]) -> Targets:
    """What an FCLM sample's MVP-LM rendering must carry: its planned pairs' phrases and targets."""
    entries = [(n, plan["words"][cls], region) for n, plan in enumerate(plan_turns(sample))
               for region, cls in zip(plan["targets"], plan["classes"])]  # fmt: skip
    return Targets([], _groups(entries))


def _groups(entries: list[tuple[int, str, int]]) -> list[Group]:
    """(turn, phrase, region) in target order -> groups of consecutive targets of one phrase in one turn."""
    groups: list[Group] = []
    last = None
    for turn, phrase, region in entries:
        if last == (turn, phrase):
            groups[-1].regions.append(region)
        else:
            groups.append(Group(phrase, [region]))
        last = (turn, phrase)
    return groups


def _format():
    from fclm_data.formats import Format

    return Format("mvplm", render, parse, expected, None, PER, (PER,))


FORMAT = _format()
