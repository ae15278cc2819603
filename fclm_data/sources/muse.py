"""MUSE (PixelLM) multi-target reasoning segmentation: one sample per question.

Release layout (defaults, all overridable): ``muse/muse_{train,val,test_less,test_many}.json``,
each a JSON list with one record per image::

    {"file_name": "COCO_train2014_....jpg"  |  "coco_url": "http://.../train2017/000000xxxxxx.jpg",
     "id"?: int, "height": int, "width": int, "ann_list"?: [...] (not read: answers carry the masks),
     "questions": [str, ...],
     "answers": [[{"segmentation": polygons | uncompressed RLE, "category_name": str,
                   "rephrased_name"?: str, "bbox": [x, y, w, h], "id"?: int}, ...], ...],
     "text_answers"?: [str with one "{seg}" per answer object, ...]}

Images: ``file_name`` -> ``coco/train2014/<basename>``; otherwise ``coco_url`` -> ``coco/train2017``
when the URL contains "train2017", else ``coco/val2017``, with the URL's last component.

Decisions (documented choices):

* **Unit = one question** (PixelLM's QA pair): every split gives one sample per question, which is
  what evaluation needs; Table 7's "MUSE 80,000" is then a seeded subsample of train QA pairs.
  Ledger records mix two granularities: a record that cannot give any question (no image
  reference, no questions) is one reject, otherwise each question is a unit or a reject.
* **Answer text**: the question's ``text_answers`` entry with its ``{seg}`` placeholders replaced
  by ``[SEG]`` in order (one per answer object, in answer order). PixelLM *resamples* an image whose
  ``{seg}`` count differs from its answer list; we instead fall back to PixelLM's template answer
  listing the objects (MR_SINGLE/MR_MULTI_ANSWER_LIST, same composition rules: rephrased name with
  probability ``rephrased_rate``, "a, b and c" joins, multi-answer names lower-cased), as PixelLM
  does when ``text_answers`` is absent. The fallback is countable: exactly the samples whose
  ``templates`` contain a ``muse_single_answer`` or ``muse_multi_answer`` id (manifest.parquet).
  LVIS names' underscores become spaces in answer text only (``label`` keeps the raw name).
* Each answer object is one region (multiple polygons unioned); ``[SEG]`` count = objects. An
  object whose mask is unusable rejects its question: its ``[SEG]`` is part of the answer text.
  FCLM's "up to five objects per segmentation sample" is a loss-time cap and stays the trainer's.
* Records without ``questions``/``answers`` are rejected (``malformed_annotation``): PixelLM's
  category-question branch for them reads attributes its dataset never defines, so it cannot run.
* Questions use LISA/PixelLM's long-question templates; with ``fixed_eval_prompt`` (default)
  non-train splits always use the first one, so evaluation prompts do not vary with the seed.
* The train file is large (~1M objects), so ``index`` streams the top-level list record by record
  and keeps only each record's byte span (:mod:`fclm_data.jsonstream`); ``build`` re-reads and
  parses its own record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from fclm_data.errors import Reject
from fclm_data.images import expect_size, read_image, safe_relpath
from fclm_data.jsonstream import iter_json_list, read_record
from fclm_data.masks import nonempty_region_mask, segmentation_to_rle
from fclm_data.schema import SEG_TOKEN, Provenance, Region, Turn
from fclm_data.seeding import stable_index, stable_uniform
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit
from fclm_data.templates import pick, template_text, with_image

_SEG_SLOT = "{seg}"
_DIGITS = re.compile(r"(\d+)\D*$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class MuseSource(Source):
    split: str = "train"  #: train | val | test_less | test_many
    ann_file: str = "muse/muse_{split}.json"
    train2014_dir: str = "coco/train2014"
    train2017_dir: str = "coco/train2017"
    val2017_dir: str = "coco/val2017"
    #: template answers name an object by its rephrased name with this probability (PixelLM: 0.9)
    rephrased_rate: float = 0.9
    #: non-train splits use the first long-question template instead of a seeded draw
    fixed_eval_prompt: bool = True
    task = "multi_reason_seg"

    @property
    def annotations(self) -> str:
        return self.ann_file.format(split=self.split)

    def required_paths(self) -> list[str]:
        return [self.annotations, self.train2014_dir, self.train2017_dir, self.val2017_dir]

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        result = IndexResult([], [], self.missing_paths())
        if self.annotations in result.missing:
            return result
        seen: dict[str, int] = {}
        try:  # _index_record keeps its own rejects: a Reject here is the file's (then nothing is kept)
            spans = iter_json_list(self.data_root / self.annotations, self.annotations)
            for position, (offset, length, record) in enumerate(spans):
                self._index_record(position, offset, length, record, seen, result)
        except Reject as exc:
            return IndexResult([], [self.reject(self.annotations, exc, file=self.annotations)], result.missing)
        return result

    def _index_record(
        self, position: int, offset: int, length: int, record: Any, seen: dict, result: IndexResult
    ) -> None:
        name = f"record #{position}"
        try:
            image = _image_of(record, self)
            questions = _questions_of(record)
        except Reject as exc:
            result.rejects.append(self.reject(name, exc, file=self.annotations))
            return
        image_id = image["id"]
        occurrence = seen.get(image_id, 0)
        seen[image_id] = occurrence + 1
        stem = _UNSAFE_KEY_CHARS.sub("_", f"{self.split}-{image_id}") + (f"-{occurrence}" if occurrence else "")
        for n in range(len(questions)):
            try:
                _qa_of(record, n)
            except Reject as exc:
                result.rejects.append(
                    self.reject(f"{name} (image {image_id}) question {n}", exc, file=self.annotations)
                )
                continue
            payload = {"offset": offset, "length": length, "record": position, "qa": n}
            result.units.append(Unit(f"{stem}-q{n}", payload, image_id))

    # ---- build -------------------------------------------------------------------------------
    def _record(self, unit: Unit) -> dict:
        p = unit.payload
        return read_record(self.data_root / self.annotations, self.annotations, p["offset"], p["length"])

    def image_candidates(self, unit: Unit) -> list[str]:
        return [_image_of(self._record(unit), self)["file"]]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = unit.payload
        record = self._record(unit)
        meta = _image_of(record, self)
        question, objects, text_answer = _qa_of(record, p["qa"])
        image = read_image(self.data_root, meta["file"], options.max_image_pixels, options.image_check)
        expect_size(image, meta["width"], meta["height"], f"{self.annotations} record #{p['record']}")
        regions = [self._region(obj, i, image.height, image.width, p) for i, obj in enumerate(objects)]
        q_id, q_template = self._question_template(options.seed, key)
        answer, answer_ids = _answer_text(text_answer, objects, options.seed, key, self.rephrased_rate)
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                split=self.split,
                image_id=meta["id"],
                ann_ids=[str(obj.get("id", f"q{p['qa']}/{i}")) for i, obj in enumerate(objects)],
                source_file=self.annotations,
                repeat=repeat,
            ),
            image=image,
            regions=regions,
            conversations=[
                Turn("user", with_image(q_template.replace("{sent}", question))),
                Turn("assistant", answer),
            ],
            region_inputs=[],
            seg_targets=list(range(len(regions))),
            templates=[q_id, *answer_ids],
        )
        return Built(sample, image)

    def _region(self, obj: dict, i: int, height: int, width: int, p: dict) -> Region:
        what = f"record #{p['record']} question {p['qa']} object {i}"
        try:
            rle = segmentation_to_rle(obj["segmentation"], height, width)
        except Reject as exc:
            raise Reject(exc.code, f"{what}: {exc.detail}", self.annotations) from exc
        rle, box = nonempty_region_mask(rle, what)
        label = obj.get("category_name")
        caption = obj.get("rephrased_name")
        return Region(
            mask=rle,
            bbox=box,
            label=label.strip() if isinstance(label, str) and label.strip() else None,
            caption=caption.strip() if isinstance(caption, str) and caption.strip() else None,
        )

    def _question_template(self, seed: int, key: str) -> tuple[str, str]:
        if self.split != "train" and self.fixed_eval_prompt:
            return "reason_long_question:1", template_text("reason_long_question:1")
        return pick("reason_long_question", seed, key)


# ---- record parsing (shared by index and build, so both see the same record) -----------------------
def _image_of(record: Any, source: MuseSource) -> dict:
    """Image file (relative to the data root), COCO id and annotated size of one record."""
    if not isinstance(record, dict):
        raise Reject("malformed_annotation", f"record is a {type(record).__name__}, not a dict")
    if isinstance(record.get("file_name"), str) and record["file_name"].strip():
        base = PurePosixPath(safe_relpath(record["file_name"])).name
        rel = f"{source.train2014_dir}/{base}"
    elif isinstance(record.get("coco_url"), str) and record["coco_url"].strip():
        url = record["coco_url"].strip()
        base = safe_relpath(url.rstrip("/").rsplit("/", 1)[-1], "coco_url file name")
        rel = f"{source.train2017_dir if 'train2017' in url else source.val2017_dir}/{base}"
    else:
        raise Reject("malformed_annotation", "record has neither 'file_name' nor 'coco_url'")
    try:
        height, width = int(record["height"]), int(record["width"])
    except (KeyError, TypeError, ValueError) as exc:
        raise Reject("malformed_annotation", f"record for {base} lacks an integer height/width") from exc
    return {"file": rel, "id": _image_id(record, base), "height": height, "width": width}


def _image_id(record: dict, base: str) -> str:
    """COCO id: the record's ``id``/``image_id`` if given, else the digits of the COCO file name."""
    for field in ("id", "image_id"):
        if isinstance(record.get(field), (int, str)) and str(record[field]).strip():
            return str(record[field]).strip()
    match = _DIGITS.search(PurePosixPath(base).stem)
    if not match:
        raise Reject("malformed_annotation", f"record has no id and {base!r} carries no COCO id")
    return str(int(match.group(1)))


def _questions_of(record: dict) -> list:
    questions, answers = record.get("questions"), record.get("answers")
    if not isinstance(questions, list) or not isinstance(answers, list) or not questions:
        raise Reject(
            "malformed_annotation",
            "record has no 'questions'/'answers' lists (category-question records are not supported)",
        )
    return questions


def _qa_of(record: dict, n: int) -> tuple[str, list[dict], str | None]:
    """Question ``n``: its text, its answer objects and its usable text answer (or None)."""
    question = record["questions"][n]
    if not isinstance(question, str) or not question.strip():
        raise Reject("bad_text", f"question {n} is empty or not a string")
    answers = record["answers"]
    objects = answers[n] if n < len(answers) else None
    if not isinstance(objects, list) or not all(isinstance(o, dict) and "segmentation" in o for o in objects):
        raise Reject("malformed_annotation", f"question {n} has no list of answer objects with 'segmentation'")
    if not objects:
        raise Reject("no_regions", f"question {n} has no answer object")
    text_answers = record.get("text_answers")
    text = text_answers[n] if isinstance(text_answers, list) and n < len(text_answers) else None
    return question.strip(), objects, text if isinstance(text, str) else None


# ---- answers ------------------------------------------------------------------------------------
def _answer_text(
    text_answer: str | None, objects: list[dict], seed: int, key: str, rephrased_rate: float
) -> tuple[str, list[str]]:
    """The release's text answer with ``[SEG]`` in place, or PixelLM's template answer."""
    if text_answer is not None and text_answer.count(_SEG_SLOT) == len(objects):
        answer = text_answer.replace(_SEG_SLOT, SEG_TOKEN).strip()
        if answer.count(SEG_TOKEN) == len(objects):
            return answer, []
    names = [_object_name(obj, i, seed, key, rephrased_rate) for i, obj in enumerate(objects)]
    if stable_index(2, "muse_separate", seed, key):
        t_id, template = pick("muse_single_answer", seed, key)
        clauses = [template.replace("{class_name}", name)[:-1] for name in names]  # drop the "."
        return _join(clauses) + ".", [t_id]
    t_id, template = pick("muse_multi_answer", seed, key)
    segs = _join([SEG_TOKEN] * len(names))
    return template.replace("{class_name}", ", ".join(names).lower()).replace(_SEG_SLOT, segs), [t_id]


def _object_name(obj: dict, i: int, seed: int, key: str, rephrased_rate: float) -> str:
    rephrased, category = obj.get("rephrased_name"), obj.get("category_name")
    has_rephrased = isinstance(rephrased, str) and rephrased.strip()
    name = rephrased if has_rephrased and stable_uniform("muse_name", seed, key, i) < rephrased_rate else category
    if not isinstance(name, str) or not name.strip():
        name = rephrased if isinstance(rephrased, str) else None
    if not isinstance(name, str) or not name.strip():
        raise Reject("bad_text", f"answer object {i} has no category_name or rephrased_name for a template answer")
    return name.strip().replace("_", " ")


def _join(items: list[str]) -> str:
    """PixelLM's list join: "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


register_source(
    "muse", MuseSource, "MUSE (PixelLM) multi-target reasoning segmentation: one sample per question",
    "Stage 1 Grounding: MUSE 80,000",
)  # fmt: skip
