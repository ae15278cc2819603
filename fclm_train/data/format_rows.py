"""REF-VLM and MVP-LM samples -> rows: the same ChatML as FCLM's, plus what those systems train on beyond the text.

A build rendered with ``fclm-data build --format refvlm|mvplm`` (``fclm_data/formats``) keeps the FCLM sample's
regions; only the conversation and ``format_fields`` change. The encoder tokenises it with the same
:class:`~fclm_train.data.encode.ChatTemplate` (the format's special tokens are single tokens:
:func:`fclm_train.data.tokenizer.add_format_tokens`) and ships, per row, a :class:`FormatRow`:

* **targets** -- the regions the row's outputs decode, in reading order (``seg_targets``): their masks travel as
  FCLM's ``[SEG]`` masks do (bit-packed at the stored size, ``seg_specs``), their boxes (the schema's ``bbox``,
  x0 y0 x1 y1 in original pixels) and units here. REF-VLM: one target per ``<REF>``; MVP-LM: every target of a
  turn belongs to that turn's ``<PER>``.
* **classes** -- MVP-LM's class of each target: the index of its name in its turn's word list (as rewritten by
  the loader's word-list stage, :class:`~fclm_train.data.stages.MvplmWordLists`); 0 for a sentence-based turn
  (the expression); -1 in REF-VLM rows (no classes: a ``<REF>`` names its target).
* **word spans** -- MVP-LM: each name's token span ``[start, end)`` in ``input_ids`` (a sentence-based turn: the
  expression's), for the paper's mean pooling (§3 "the corresponding output embeddings ... average pooling").
  The instruction is tokenised piecewise at the names' edges (:meth:`ChatTemplate.content_spans`), so
  ``decode(input_ids[start:end])`` is exactly the name: no space before it, no comma after it.
* REF-VLM rows put each turn pair's task command (``format_fields.system``) in a system turn before its user
  turn; ``[VPT]`` inputs are prompt masks exactly as FCLM's ``<region>`` (``region_specs``).

A sample whose text disagrees with its fields (spans that do not cover the words, a list of targets that is
not ``seg_targets``) is skipped as ``token_mismatch``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fclm_data.formats.common import unit_of

UNIT_MASK = 0  #: the target's mask is its region's
UNIT_BOX = 1  #: a box-only region (GRiT-style): its mask is the filled box, only the box is ground truth
NO_CLASS = -1  #: REF-VLM targets have no word-list class


@dataclass
class FormatRow:
    """One row's REF-VLM / MVP-LM fields; targets follow the row's ``seg_refs`` order."""

    boxes: list[list[float]]  #: per target: x0, y0, x1, y1 in original pixels
    outputs: list[int]  #: per target: the output-token occurrence (in this row) that decodes it
    classes: list[int]  #: per target: index in its word list (MVP-LM), :data:`NO_CLASS` (REF-VLM)
    units: list[int]  #: per target: :data:`UNIT_MASK` or :data:`UNIT_BOX`
    word_spans: list[tuple[int, int, int]]  #: (output occurrence, token start, token end) per name, list order
    word_based: list[bool]  #: per output occurrence: an MVP-LM word-based turn (False: sentence, REF-VLM)


def _units(regions: list[dict], targets: list[int]) -> list[int]:
    return [UNIT_BOX if unit_of(regions[r]) == "box" else UNIT_MASK for r in targets]


def refvlm_row(chat, meta: dict, view: dict, view_index: int, n_image: int):
    """(ids, labels, FormatRow) of one REF-VLM view (0: the sample, 1: its pair), or None if malformed."""
    systems = meta["format_fields"]["system" if view_index == 0 else "pair_system"]
    if len(systems) != sum(turn["role"] == "user" for turn in view["conversations"]):
        return None
    ids, labels, _ = chat.encode_spans(view["conversations"], n_image, systems=systems)
    targets = list(view["seg_targets"])
    row = FormatRow(
        boxes=[list(meta["regions"][r]["bbox"]) for r in targets], outputs=list(range(len(targets))),
        classes=[NO_CLASS] * len(targets), units=_units(meta["regions"], targets), word_spans=[],
        word_based=[False] * len(targets),
    )  # fmt: skip
    return ids, labels, row


def _char_spans(turn: dict, content: str) -> list[tuple[int, int]] | None:
    """The names' (word-based) or the expression's (sentence-based) character spans in the user turn."""
    if turn["mode"] == "word":
        spans = [(start, end) for start, end in turn["word_spans"]]
        return spans if [content[s:e] for s, e in spans] == turn["words"] else None
    expression = turn["words"][0]
    return [(len(content) - len(expression), len(content))] if content.endswith(expression) else None


def mvplm_row(chat, meta: dict, n_image: int):
    """(ids, labels, FormatRow) of an MVP-LM sample (one row: MVP-LM has no paired view), or None if malformed."""
    turns, conversations = meta["format_fields"]["turns"], meta["conversations"]
    if len(conversations) != 2 * len(turns):
        return None
    spans = {}
    for n, turn in enumerate(turns):
        spans[2 * n] = _char_spans(turn, conversations[2 * n]["content"])
        if spans[2 * n] is None or len(turn["targets"]) != len(turn["classes"]):
            return None
    targets = [(n, region, cls) for n, turn in enumerate(turns) for region, cls in zip(turn["targets"], turn["classes"])]
    if [region for _, region, _ in targets] != list(meta["seg_targets"]):
        return None
    ids, labels, token_spans = chat.encode_spans(conversations, n_image, spans=spans)
    regions = [region for _, region, _ in targets]
    row = FormatRow(
        boxes=[list(meta["regions"][r]["bbox"]) for r in regions], outputs=[n for n, _, _ in targets],
        classes=[cls for _, _, cls in targets], units=_units(meta["regions"], regions),
        word_spans=[(n, start, end) for n in range(len(turns)) for start, end in token_spans.get(2 * n, [])],
        word_based=[turn["mode"] == "word" for turn in turns],
    )  # fmt: skip
    return ids, labels, row
