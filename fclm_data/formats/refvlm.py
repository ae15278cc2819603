"""REF-VLM: the Triplet-Based Referring Paradigm (TRP) with the Visual-Decoding Chain-of-Thought (VD-CoT).

Rendering of an FCLM sample (REF-VLM paper §3.1-3.2, appendix A Table 10; xtuner code
``MacavityT/REF-VLM`` ``xtuner/dataset/map_fns/dataset_map_fns/okapi_map_fn_stage2.py::conversation_map_fn``):

* user turns: every ``<region>`` (a visual-prompt input: point / box / scribble / mask, all carried as masks and
  ``visual_prompt`` as in ``--visual-prompt``) becomes ``[VPT]``; ``<image>`` stays first;
* assistant turns with outputs: each phrase group (:mod:`.common`) becomes a triplet
  ``<Phrase>{phrase}</Phrase>(<Unit>{unit}</Unit>[0]<REF>[1]<REF>)`` -- indexes restart at 0 per phrase, one
  ``<REF>`` per instance (paper Fig. 2(c) and the code agree on this form). GCG answers keep their caption with
  each ``<p> phrase </p> [SEG]`` replaced in place; other answers become the triplets joined by ", " plus "."
  (the code's RES answer is the triplet and "."), so "It is [SEG]." -> "<Phrase>...</Phrase>(...).";
* every assistant turn starts with the VD-CoT block, exactly as the code writes it:
  ``<Task>\\nUnit decode (True). Class name, target unit and number:\\n- Name: {phrase} Unit: <Unit>mask</Unit>
  Num: {n}\\n</Task>\\n`` (one line per phrase), or ``<Task>\\nUnit decode (False).\\n</Task>\\n``;
* ``format_fields.system``: one system text per user/assistant pair, the code's ``Task Command:\\n- task name:
  {name}\\n- answer element: {elements}\\n- unit: <Unit>mask</Unit>\\n`` (``- unit: None`` without outputs; our
  schema has no system role, so it lives beside the conversation as xtuner keeps it beside each turn pair);
  ``format_fields.pair_system`` the same for the paired view (``[]`` without one).

Choices where paper and code differ: the code's RES phrase is the literal word "target"; the paper's examples
name the concept, and so do we (the referring expression) -- the parser needs a real phrase to map back. Task
names: ``grounding_segmentation`` is the code's (RES); the others are ours. Keypoint and depth units are out of
scope (boxes and masks only). ``seg_targets`` lists the region of each ``<REF>``; ``region_inputs`` of each
``[VPT]``.
"""

from __future__ import annotations

import re
from typing import Any

from fclm_data.formats.common import FormatError, Group, Targets, fclm_targets, seg_turns

VPT = "[VPT]"
REF = "<REF>"
PHRASE = ("<Phrase>", "</Phrase>")
UNIT = ("<Unit>", "</Unit>")
TASK = ("<Task>", "</Task>")
#: REF-VLM's special tokens in the issue's order (paper §3.1 TRP: ``<Phrase> </Phrase> <Unit> </Unit> <REF>``,
#: ``[VPT]`` for visual prompts; §3.2 VD-CoT: ``<Task> </Task>``); one token each in a model's vocabulary
SPECIAL_TOKENS = (*PHRASE, *UNIT, REF, VPT, *TASK)
#: REF-VLM task names in its system command; ``grounding_segmentation`` is the code's RES name, the rest ours
TASK_NAMES = {
    "res": "grounding_segmentation", "gres": "grounding_segmentation", "reason_seg": "reasoning_segmentation",
    "multi_reason_seg": "reasoning_segmentation", "region_seg_caption": "grounding_segmentation",
    "gcg": "gcg_segmentation", "region_caption": "referring_caption", "roc": "referring_classification",
    "detailed_description": "referring_detailed_caption", "conversation": "referring_conversation",
    "dlc_dlres": "referring_detailed_caption",
}  # fmt: skip

_TRIPLET = re.compile(r"<Phrase>(.*?)</Phrase>\(<Unit>(\w+)</Unit>((?:\[\d+\]<REF>)+)\)")
_COT_LINE = re.compile(r"- Name: (.*?) Unit: <Unit>(\w+)</Unit> Num: (\d+)")


def triplet(group: Group) -> str:
    refs = "".join(f"[{i}]{REF}" for i in range(len(group.regions)))
    return f"{PHRASE[0]}{group.phrase}{PHRASE[1]}({UNIT[0]}{group.unit}{UNIT[1]}{refs})"


def cot(groups: list[Group]) -> str:
    """The VD-CoT block of one answer (the code's text, newlines included)."""
    if not groups:
        return f"{TASK[0]}\nUnit decode (False).\n{TASK[1]}\n"
    lines = "".join(f"- Name: {g.phrase} Unit: {UNIT[0]}{g.unit}{UNIT[1]} Num: {len(g.regions)}\n" for g in groups)
    return f"{TASK[0]}\nUnit decode (True). Class name, target unit and number:\n{lines}{TASK[1]}\n"


def system(task: str, groups: list[Group]) -> str:
    name = TASK_NAMES.get(task, task)
    if not groups:
        return f"Task Command:\n- task name: {name}\n- answer element: sentence\n- unit: None"
    units = ", ".join(f"{UNIT[0]}{u}{UNIT[1]}" for u in dict.fromkeys(g.unit for g in groups))
    return f"Task Command:\n- task name: {name}\n- answer element: phrase, unit\n- unit: {units}\n"


def _check_phrase(phrase: str, key: str) -> None:
    if any(tag in phrase for tag in (*PHRASE, *UNIT, REF, VPT, "(", ")")):
        raise FormatError(f"{key}: phrase {phrase!r} holds a REF-VLM delimiter; it could not be parsed back")


def render_view(view: dict, sample: dict) -> tuple[dict, list[str]]:
    """(rendered view, system text per turn pair)."""
    by_turn = {st.turn: st for st in seg_turns(view, sample)}
    turns, systems = [], []
    for t, turn in enumerate(view["conversations"]):
        if turn["role"] == "user":
            turns.append({"role": "user", "content": turn["content"].replace("<region>", VPT)})
            continue
        st = by_turn.get(t)
        groups = st.groups if st else []
        for g in groups:
            _check_phrase(g.phrase, sample["key"])
        if st is None:
            answer = turn["content"]
        elif st.gcg:
            answer, last = "", 0
            for g, (start, end) in zip(st.groups, st.spans):
                answer += turn["content"][last:start] + triplet(g)
                last = end
            answer += turn["content"][last:]
        else:
            answer = ", ".join(triplet(g) for g in groups) + "."
        turns.append({"role": "assistant", "content": cot(groups) + answer})
        systems.append(system(sample["task"], groups))
    return {"conversations": turns, "region_inputs": list(view["region_inputs"]),
            "seg_targets": list(view["seg_targets"])}, systems  # fmt: skip


def render(sample: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    main, systems = render_view(sample, sample)
    out = {k: v for k, v in sample.items()}
    out.update(main)
    fields: dict[str, Any] = {"system": systems, "pair_system": []}  #: the same keys in every sample (HF features)
    if sample["pair"] is not None:
        out["pair"], fields["pair_system"] = render_view(sample["pair"], sample)
    out["format"], out["format_fields"] = "refvlm", fields
    return out


def parse_view(view: dict, key: str) -> Targets:
    """Targets of one rendered view, from its text: triplets checked against their VD-CoT block."""
    groups: list[Group] = []
    refs = iter(view["seg_targets"])
    n_vpt = 0
    for turn in view["conversations"]:
        if turn["role"] == "user":
            n_vpt += turn["content"].count(VPT)
            continue
        text = turn["content"]
        triplets = [(m.group(1), m.group(2), re.findall(r"\[(\d+)\]", m.group(3))) for m in _TRIPLET.finditer(text)]
        if text.count(REF) != sum(len(ix) for _, _, ix in triplets):
            raise FormatError(f"{key}: a <REF> outside a <Phrase>...(<Unit>...</Unit>[i]<REF>) triplet")
        declared = [(n, u, int(c)) for n, u, c in _COT_LINE.findall(text.split(TASK[1], 1)[0])]
        if declared != [(n, u, len(ix)) for n, u, ix in triplets]:
            raise FormatError(f"{key}: the VD-CoT block {declared} does not match the triplets")
        for phrase, unit, indexes in triplets:
            if indexes != [str(i) for i in range(len(indexes))]:
                raise FormatError(f"{key}: <REF> indexes {indexes} of {phrase!r} do not restart at 0")
            try:
                groups.append(Group(phrase, [next(refs) for _ in indexes], unit))
            except StopIteration as exc:
                raise FormatError(f"{key}: more <REF> than seg_targets") from exc
    if n_vpt != len(view["region_inputs"]) or next(refs, None) is not None:
        raise FormatError(f"{key}: [VPT] / <REF> counts differ from region_inputs / seg_targets")
    return Targets(list(view["region_inputs"]), groups)


def parse(sample: dict[str, Any]) -> Targets:
    targets = parse_view(sample, sample["key"])
    if sample["pair"] is not None:
        targets.pair = parse_view(sample["pair"], sample["key"])
    return targets


def _format():
    from fclm_data.formats import Format

    return Format("refvlm", render, parse, fclm_targets, VPT, REF, SPECIAL_TOKENS)


FORMAT = _format()
