"""Osprey-724K region instruction data: ShortForm, LVISPosNeg, Conversations, DetailedDescription.

Release (HF ``AntGroup-MI/Osprey-724K``), defaults under ``--data-root``:
``osprey/osprey_short_form.json``, ``osprey/osprey_lvis_positive_negative.json``,
``osprey/osprey_conversation.json``, ``osprey/osprey_detail_description.json`` (Osprey's own
``stage3.json`` says ``osprey_detailed_description.json``: accepted when the default is missing).
Each file is a JSON list of per-image records ``{id, file_name, height, width, annotation:
[{segmentation, ...}], conversations: [{from: human|gpt, value}]}`` (detail: ``description:
["<region1>: text", ...]`` instead of ``conversations``); ``segmentation`` is a polygon list, an
uncompressed or a compressed RLE. Text names regions with 1-based tags ``<regionN>``.

Decisions (see also :mod:`fclm_data.sources.osprey_tags` for the tag repairs):

* One sample per record for all four files (Table 7's 27,454 / 20,008 / 30,217 / 29,334 are
  per-image record counts of this order); a detail record is one turn pair per description.
* ``region_style="inline"`` (default, the issue's rule): each user-turn tag is one ``<region>``
  input; assistant-turn tags become "region k". ``"listed"`` reproduces Osprey's loader: the first
  user turn lists every annotation ("There are N part regions in the picture: region 1 <region>,
  ...") and all tags become "region N". LVISPosNeg is inline in Osprey too.
* ShortForm appends Osprey's " Answer the question using a single word or phrase." to every user
  turn (``answer_suffix``; not doubled when the release already has it).
* Osprey's ``<image>`` token is stripped from the text; ours is put first by ``with_image``.
* Records must alternate human/gpt from a human turn with an even count, else they are rejected.
* A detail description naming several regions is dropped as its own index reject (UniPixel drops
  the whole record); ``multi_region="keep"`` keeps it with the extra tags as "region k" text.
* Images: ``COCO_train2014_%012d.jpg`` names are read from ``train2014_dir``; any other name falls
  back to Osprey's rule ``file_name.split('_')[-1]`` in ``coco2017_dirs`` (train2017, then
  val2017); names with a directory ("train2017/x.jpg") resolve under ``coco_root``. LVISPosNeg
  names are bare ``%012d.jpg`` and resolve in the 2017 folders unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fclm_data.errors import Reject
from fclm_data.images import ImageData, expect_size, read_first_image, safe_relpath
from fclm_data.jsonstream import Span, iter_json_list, read_record
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.schema import Provenance, Region, Sample, Turn
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.sources.osprey_tags import CANONICAL_TAG, render_inline, render_listed, repair_tags
from fclm_data.sources.pairing import as_view, paired, text_to_seg_view
from fclm_data.templates import SHORT_ANSWER_SUFFIX, pick, template_text, with_image

_ROLES = {"human": "user", "gpt": "assistant"}
_IMAGE_TAG = re.compile(r"\s*<image>\s*")
_DESCRIPTION = re.compile(r"^<region(\d+)>\s*:\s*(.+)$", re.DOTALL)
_COCO_ID = re.compile(r"(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def coco_image_candidates(
    file_name: str, coco_root: str, train2014_dir: str, coco2017_dirs: tuple[str, ...]
) -> list[str]:
    """Where a COCO image named by a release may be, in the order tried (see the module docstring)."""
    name = safe_relpath(file_name)
    if "/" in name:
        return [f"{coco_root}/{name}"]
    first = [f"{train2014_dir}/{name}"] if name.startswith("COCO_train2014_") else []
    return first + [f"{d}/{name.split('_')[-1]}" for d in coco2017_dirs]


def coco_image_id(file_name: str, fallback: Any) -> str:
    """The COCO id in a file name ("COCO_train2014_000000000042.jpg" -> "42"), else ``fallback``."""
    match = _COCO_ID.search(PurePosixPath(str(file_name)).name)
    return str(int(match.group(1))) if match else str(fallback)


@dataclass
class _OspreySource(Source):
    """Shared reading of an Osprey-724K file; subclasses turn one record into turns."""

    file: str = "osprey/osprey_conversation.json"
    alt_file: str = ""  #: read when ``file`` is missing (another published name of the same file)
    coco_root: str = "coco"
    train2014_dir: str = "coco/train2014"
    coco2017_dirs: tuple[str, ...] = ("coco/train2017", "coco/val2017")

    @property
    def ann_file(self) -> str:
        if self.alt_file and not (self.data_root / self.file).exists() and (self.data_root / self.alt_file).exists():
            return self.alt_file
        return self.file

    def required_paths(self) -> list[str]:
        return [self.ann_file, self.coco_root]

    def index(self) -> IndexResult:
        """Stream the file (releases are 57-153 MB): units keep the record's byte span, not its content."""
        result = IndexResult([], [], self.missing_paths())
        if self.ann_file in result.missing:
            return result
        try:  # a Reject here is the file's: then it is the one reject, and nothing is kept
            for pos, span in enumerate(iter_json_list(self.data_root / self.ann_file, self.ann_file)):
                self._index_record(pos, span, result)
        except Reject as exc:
            return IndexResult([], [self.reject(self.ann_file, exc, file=self.ann_file)], result.missing)
        return result

    def _index_record(self, pos: int, span: Span, result: IndexResult) -> None:
        name = _record_name(pos, span.value)
        try:
            meta = _record_meta(span.value)
            payload = self._payload(span.value, meta, name, result)
        except Reject as exc:
            result.rejects.append(self.reject(name, exc, file=self.ann_file))
            return
        if payload is not None:
            slim = {"record": pos, "offset": span.offset, "length": span.length, "file_name": meta["file_name"]}
            result.units.append(Unit(f"{pos:07d}", slim, meta["image_id"]))

    def payload_of(self, unit: Unit) -> dict:
        """The unit's record re-read from its span and turned into the payload ``build`` uses."""
        p = unit.payload
        record = read_record(self.data_root / self.ann_file, self.ann_file, p["offset"], p["length"])
        name = _record_name(p["record"], record)
        meta = _record_meta(record)
        payload = self._payload(record, meta, name, IndexResult([]))  # its index rejects were counted by index()
        return {**meta, "record": name, **(payload or {})}

    def _payload(self, record: dict, meta: dict, name: str, result: IndexResult) -> dict | None:
        raise NotImplementedError

    # ---- build helpers ---------------------------------------------------------------------
    def image_candidates(self, unit: Unit) -> list[str]:
        return coco_image_candidates(
            unit.payload["file_name"], self.coco_root, self.train2014_dir, tuple(self.coco2017_dirs)
        )

    def _image(self, p: dict, options: BuildOptions) -> ImageData:
        candidates = coco_image_candidates(
            p["file_name"], self.coco_root, self.train2014_dir, tuple(self.coco2017_dirs)
        )
        image = read_first_image(self.data_root, candidates, options.max_image_pixels, options.image_check)
        expect_size(image, p["width"], p["height"], f"{self.ann_file} {p['record']}")
        return image

    def _region(self, p: dict, index: int, image: ImageData) -> Region:
        rle = segmentation_to_rle(p["regions"][str(index)]["segmentation"], image.height, image.width)
        rle, box = nonempty_region_mask(rle, f"{p['record']} region {index + 1}")
        return Region(mask=rle, bbox=box)

    def _sample(
        self,
        p: dict,
        key: str,
        repeat: int,
        image: ImageData,
        order: list[int],
        regions: list[Region],
        turns: list[Turn],
        region_inputs: list[int],
        templates: list[str],
        options: BuildOptions,
    ) -> Sample:
        """``order``: the 0-based annotation index of each of ``regions``."""
        turns[0] = Turn("user", with_image(turns[0].content))
        ann_ids = [p["regions"][str(i)]["ann_id"] for i in order]
        return self.new_sample(
            key=key,
            provenance=Provenance("train", p["image_id"], ann_ids, self.ann_file, repeat),
            image=image,
            regions=regions,
            conversations=turns,
            region_inputs=region_inputs,
            seg_targets=[],
            templates=templates,
        )


def _record_name(pos: int, record: Any) -> str:
    return f"record #{pos}" + (f" (id {record.get('id')})" if isinstance(record, dict) and "id" in record else "")


def _record_meta(record: Any) -> dict:
    if not isinstance(record, dict):
        raise Reject("malformed_annotation", f"record is a {type(record).__name__}, not a dict")
    missing = {"file_name", "height", "width", "annotation"} - set(record)
    if missing:
        raise Reject("malformed_annotation", f"record lacks {sorted(missing)}")
    annotation = record["annotation"]
    if not isinstance(annotation, list) or not all(isinstance(a, dict) and "segmentation" in a for a in annotation):
        raise Reject("malformed_annotation", "'annotation' is not a list of dicts with 'segmentation'")
    try:
        height, width = int(record["height"]), int(record["width"])
    except (TypeError, ValueError) as exc:
        raise Reject("malformed_annotation", f"height/width are not integers: {exc}") from exc
    return {
        "file_name": safe_relpath(record["file_name"]),
        "height": height,
        "width": width,
        "image_id": coco_image_id(record["file_name"], record.get("id", "")),
        "n_regions": len(annotation),
    }


def _strip_image_token(text: str) -> str:
    return _IMAGE_TAG.sub(" ", text).strip()


def _used_regions(record: dict, numbers: set[int]) -> dict[str, dict]:
    """Segmentation and id of the 1-based region numbers, keyed by 0-based index (JSON-safe str keys).

    The id is the annotation's own ``id`` where the release has one, else "region<N>".
    """
    used = {}
    for n in sorted(numbers):
        ann = record["annotation"][n - 1]
        ann_id = str(ann["id"]) if "id" in ann else f"region{n}"
        used[str(n - 1)] = {"segmentation": ann["segmentation"], "ann_id": ann_id}
    return used


@dataclass
class OspreyConversationSource(_OspreySource):
    """Records with ``conversations``: Conversations, ShortForm, LVISPosNeg."""

    region_style: str = "inline"  #: "inline" (each tag a <region> input) | "listed" (Osprey's prefix)
    answer_suffix: str = ""  #: appended to every user turn (ShortForm: Osprey's short-answer limit)
    task = "conversation"

    def __post_init__(self) -> None:
        if self.region_style not in ("inline", "listed"):
            raise ValueError(f"region_style must be 'inline' or 'listed', got {self.region_style!r}")

    def _payload(self, record: dict, meta: dict, name: str, result: IndexResult) -> dict | None:
        turns = _conversation_turns(record.get("conversations"), meta["n_regions"])
        user_numbers = {int(n) for role, text in turns if role == "user" for n in CANONICAL_TAG.findall(text)}
        if self.region_style == "inline" and not user_numbers:
            raise Reject("no_regions", "no user turn names a region")
        numbers = set(range(1, meta["n_regions"] + 1)) if self.region_style == "listed" else user_numbers
        if not numbers:
            raise Reject("no_regions", "the record has an empty 'annotation' list")
        return {"turns": turns, "regions": _used_regions(record, numbers)}

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = self.payload_of(unit)
        image = self._image(p, options)
        templates: list[str] = []
        if self.region_style == "listed":
            intro_id = f"region_list_intro:{1 if p['n_regions'] > 1 else 2}"
            turns, order, region_inputs = render_listed(p["turns"], p["n_regions"], template_text(intro_id))
            templates.append(intro_id)
        else:
            turns, order, region_inputs = render_inline(p["turns"])
        regions = []
        for index in order:
            try:
                regions.append(self._region(p, index, image))
            except Reject as exc:
                detail = f"region {index + 1} is referenced but unusable: {exc.detail}"
                raise Reject(exc.code, detail, self.ann_file) from exc
        if self.answer_suffix:
            turns = [_with_suffix(t, self.answer_suffix) for t in turns]
        return Built(
            self._sample(p, key, repeat, image, order, regions, turns, region_inputs, templates, options), image
        )


def _with_suffix(turn: Turn, suffix: str) -> Turn:
    if turn.role != "user" or turn.content.endswith(suffix.strip()):
        return turn
    return Turn("user", turn.content + suffix)


def _conversation_turns(conversations: Any, n_regions: int) -> list[tuple[str, str]]:
    """Validated (role, text) pairs with canonical tags and no image token."""
    if not isinstance(conversations, list) or not conversations:
        raise Reject("malformed_annotation", "'conversations' is missing or empty")
    if len(conversations) % 2:
        raise Reject("malformed_annotation", f"{len(conversations)} turns: a question has no answer")
    turns = []
    for i, turn in enumerate(conversations):
        expected = "human" if i % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise Reject("malformed_annotation", f"turn {i} is not a {expected!r} turn with a text 'value'")
        text = _strip_image_token(turn["value"])
        if not text:
            raise Reject("bad_text", f"turn {i} ({expected}) is empty")
        try:
            turns.append((_ROLES[expected], repair_tags(text, n_regions).text))
        except Reject as exc:
            raise Reject(exc.code, f"turn {i} ({expected}): {exc.detail}") from exc
    return turns


@dataclass
class OspreyShortFormSource(OspreyConversationSource):
    task = "region_caption"


@dataclass
class OspreyPosNegSource(OspreyConversationSource):
    task = "roc"


@dataclass
class OspreyDetailSource(_OspreySource):
    """``description: ["<regionN>: text", ...]``: one turn pair per kept description."""

    multi_region: str = "drop"  #: a description naming several regions: "drop" it or "keep" it
    #: write, as ``pair``, Table 12's DL-RES view of every description (description -> [SEG] of its region), so
    #: the sample is a DLC + DL-RES consistency pair as Describe-Anything's are (``pairing.py``); default off
    pair: bool = False
    task = "detailed_description"

    def _payload(self, record: dict, meta: dict, name: str, result: IndexResult) -> dict | None:
        descriptions = record.get("description")
        if not isinstance(descriptions, list) or not descriptions:
            raise Reject("malformed_annotation", "'description' is missing or empty")
        kept: list[tuple[int, str]] = []
        for j, description in enumerate(descriptions):
            try:
                kept.append(self._description(description, meta["n_regions"]))
            except Reject as exc:
                result.rejects.append(self.reject(f"{name} description {j}", exc, file=self.ann_file))
        if not kept:
            return None  # every description was rejected above, each with its reason
        numbers = {n for n, _ in kept}
        return {"descriptions": kept, "regions": _used_regions(record, numbers)}

    def _description(self, description: Any, n_regions: int) -> tuple[int, str]:
        if not isinstance(description, str) or not description.strip():
            raise Reject("bad_text", "description is empty or not a string")
        repaired = repair_tags(_strip_image_token(description), n_regions)
        match = _DESCRIPTION.match(repaired.text)
        if not match or not match.group(2).strip():
            raise Reject("bad_text", f"description does not read '<regionN>: text': {description[:60]!r}")
        if len(repaired.numbers) > 1 and self.multi_region == "drop":
            detail = f"description names {len(repaired.numbers)} regions {repaired.numbers}; its subject is ambiguous"
            raise Reject("bad_text", detail)
        return int(match.group(1)), match.group(2).strip()

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = self.payload_of(unit)
        image = self._image(p, options)
        usable, dropped = {}, []
        for number in sorted({n for n, _ in p["descriptions"]}):
            try:
                usable[number - 1] = self._region(p, number - 1, image)
            except Reject as exc:
                exc.file = exc.file or self.ann_file
                dropped.append((f"{p['record']} region {number}", exc))
        raw_turns, templates = [], []
        for n, (number, text) in enumerate(d for d in p["descriptions"] if d[0] - 1 in usable):
            template_id, question = pick("dlc_question", options.seed, key, f"turn{n}")
            raw_turns += [("user", question.replace("<region>", f"<region{number}>")), ("assistant", text)]
            templates.append(template_id)
            if usable[number - 1].caption is None:  # the region's (first) description is its caption
                usable[number - 1].caption = CANONICAL_TAG.sub(lambda m: f"region {m.group(1)}", text)
        if not raw_turns:
            raise Reject(dropped[0][1].code, f"no described region is usable: {dropped[0][1].detail}", self.ann_file)
        turns, order, region_inputs = render_inline(raw_turns)
        regions = [usable[i] for i in order]
        sample = self._sample(p, key, repeat, image, order, regions, turns, region_inputs, templates, options)
        if self.pair:
            answers = [t.content for t in sample.conversations if t.role == "assistant"]
            seg_view, dlres_templates = text_to_seg_view(list(zip(sample.region_inputs, answers)), "description",
                                                         options.seed, key)  # fmt: skip
            sample = paired(sample, as_view(sample), seg_view, templates + dlres_templates)
        return Built(sample, image, dropped)


_FILES = "osprey/osprey_{}.json"
register_source(
    "osprey_short_form", OspreyShortFormSource, "Osprey-724K ShortForm: region questions with one-word/phrase answers",
    "Stage 1 Captioning: Osprey.ShortForm 27,454", file=_FILES.format("short_form"), answer_suffix=SHORT_ANSWER_SUFFIX,
)  # fmt: skip
register_source(
    "osprey_lvis_posneg", OspreyPosNegSource, "Osprey-724K LVIS positive/negative region classification",
    "Stage 1 Captioning: Osprey.LVISPosNeg 20,008", file=_FILES.format("lvis_positive_negative"),
)  # fmt: skip
register_source(
    "osprey_conversations", OspreyConversationSource, "Osprey-724K multi-turn region conversations",
    "Stage 1 Captioning: Osprey.Conversations 30,217", file=_FILES.format("conversation"),
)  # fmt: skip
register_source(
    "osprey_detailed_description", OspreyDetailSource, "Osprey-724K detailed region descriptions (one turn per region)",
    "Stage 1 Captioning: Osprey.DetailedDescription 29,334",
    file=_FILES.format("detail_description"), alt_file=_FILES.format("detailed_description"),
)  # fmt: skip
