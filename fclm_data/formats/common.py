"""What every format shares: the parsed-target structure and phrase recovery from an FCLM conversation.

An FCLM answer marks outputs with ``[SEG]`` only; the phrase each one grounds is recovered here, in this order:
GLaMM's ``<p> phrase </p> [SEG]`` (GCG); the referring expression of the preceding user turn, read back through
the RES question template it was rendered with (``templates``); the region's caption; its label; the user
turn's text (a ReasonSeg instruction); else "target". Consecutive ``[SEG]`` of one turn with the same phrase and
only separators (", ", " and ") between them form one group: one-to-many ("<Phrase>two cats</Phrase>[0][1]").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fclm_data import templates as T
from fclm_data.schema import IMAGE_TOKEN, SEG_TOKEN

_GCG = re.compile(r"<p>\s*(.*?)\s*</p>\s*" + re.escape(SEG_TOKEN))
_SEPARATOR = re.compile(r"^\s*(,|and|,\s*and)?\s*$")


class FormatError(ValueError):
    """A sample that a format cannot render, or a rendered text that does not parse (the reason is the message)."""


@dataclass
class Group:
    """One output group: a phrase, its decoding unit and the regions it refers to, in order."""

    phrase: str
    regions: list[int]
    unit: str = "mask"


@dataclass
class Targets:
    """What a rendered sample asks for and answers, recovered from its text."""

    inputs: list[int] = field(default_factory=list)  #: region per visual-prompt input, reading order
    groups: list[Group] = field(default_factory=list)  #: output groups, reading order
    pair: Targets | None = None  #: the paired view's targets (FCLM / REF-VLM keep Describe-Anything's pair)

    def regions(self) -> list[int]:
        return [r for g in self.groups for r in g.regions]


def user_text(content: str) -> str:
    """A user turn without its leading ``<image>`` line."""
    return content.removeprefix(IMAGE_TOKEN + "\n").replace(IMAGE_TOKEN, "").strip()


def expression_from_question(question: str, template_ids: list[str]) -> str | None:
    """The referring expression of a RES question rendered from one of ``template_ids`` (else None)."""
    for template_id in template_ids:
        if not template_id.startswith("res_question:"):
            continue
        head, tail = T.template_text(template_id).split("{expression}")
        match = re.fullmatch(re.escape(head) + "(.*)" + re.escape(tail), question, flags=re.DOTALL)
        if match:
            return match.group(1).strip()
    return None


def unit_of(region: dict) -> str:
    """REF-VLM's decoding unit for a target: ``box`` for box-only regions (GRiT boxes), else ``mask``."""
    return "box" if region["box_only"] else "mask"


@dataclass
class SegTurn:
    """An assistant turn's ``[SEG]`` outputs as groups, with the spans each group covers in the text."""

    turn: int
    groups: list[Group]
    spans: list[tuple[int, int]]  #: (start, end) of each group's text in the turn (GCG tag + [SEG]s)
    gcg: bool  #: the turn is a GLaMM-style grounded caption


def seg_turns(view: dict, sample: dict) -> list[SegTurn]:
    """Every assistant turn of ``view`` holding ``[SEG]``, its outputs grouped by phrase (see module docs)."""
    regions, template_ids = sample["regions"], sample["templates"]
    targets = iter(view["seg_targets"])
    out, question = [], ""
    for t, turn in enumerate(view["conversations"]):
        if turn["role"] == "user":
            question = user_text(turn["content"])
            continue
        text = turn["content"]
        if SEG_TOKEN not in text:
            continue
        expression = expression_from_question(question, template_ids)
        gcg_phrases = {m.end(): (m.group(1), m.start()) for m in _GCG.finditer(text)}
        groups: list[Group] = []
        spans: list[tuple[int, int]] = []
        previous_end = None
        for match in re.finditer(re.escape(SEG_TOKEN), text):
            region = next(targets)
            phrase, start = gcg_phrases.get(match.end(), (None, match.start()))
            if phrase is None:
                info = regions[region]
                phrase = expression or info["caption"] or info["label"] or question or "target"
            phrase = " ".join(phrase.split())
            joinable = (previous_end is not None and groups and groups[-1].phrase == phrase
                        and match.start() > previous_end and _SEPARATOR.match(text[previous_end:start]))  # fmt: skip
            if joinable:
                groups[-1].regions.append(region)
                spans[-1] = (spans[-1][0], match.end())
            else:
                groups.append(Group(phrase, [region], unit_of(regions[region])))
                spans.append((start, match.end()))
            previous_end = match.end()
        out.append(SegTurn(t, groups, spans, bool(gcg_phrases)))
    return out


def fclm_targets(sample: dict[str, Any]) -> Targets:
    """The targets of an FCLM sample: its ``region_inputs`` and its ``[SEG]`` groups (both views)."""

    def view_targets(view: dict) -> Targets:
        return Targets(list(view["region_inputs"]), [g for st in seg_turns(view, sample) for g in st.groups])

    targets = view_targets(sample)
    if sample["pair"] is not None:
        targets.pair = view_targets(sample["pair"])
    return targets
