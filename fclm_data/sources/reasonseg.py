"""ReasonSeg (LISA) reasoning segmentation: one merged target mask per image, with its ignore area.

Release layout (defaults, all overridable): ``reason_seg/ReasonSeg/{train,val,test}/`` holding
``<stem>.jpg`` with a same-named LabelMe-style ``<stem>.json``::

    {"text": [instruction, ...], "is_sentence": bool,
     "shapes": [{"label": "target" | "ignore" | "flag", "points": [[x, y], ...],
                 "shape_type": "polygon", "image_name": "<stem>.jpg", ...}, ...],
     "imageHeight"?: int, "imageWidth"?: int}

plus ``reason_seg/ReasonSeg/explanatory/train.json``: a list of ``{image, query, outputs}`` whose
``outputs`` explains the answer for the image named ``image`` (joined on the file's basename).
Some per-image JSONs are cp1252, not UTF-8: :func:`~fclm_data.sources.base.load_json_file` retries.

Masks (documented choices):

* ``mask`` = the union of every ``target`` polygon, rasterised by pycocotools (``frPyObjects``):
  one region per image, shared by all its instructions (LISA merges them the same way).
* ``ignore`` = the pixels LISA labels 255: every non-flag shape painted in LISA's order (largest
  area first, so a later, smaller polygon overwrites), keeping the pixels whose last painter is an
  ``ignore`` polygon; null when there are none. Hence ``mask`` minus ``ignore`` is exactly LISA's
  label-1 area and metrics that skip ``ignore`` pixels equal LISA's (``ignore_index=255``).
* LISA rasterises with cv2 (integer-truncated vertices, ``fillPoly`` plus a 1-px ``polylines``
  border); pycocotools samples polygon edges differently, so masks differ from LISA's along
  boundaries by about a pixel, and areas used for the paint order are pycocotools areas.
* ``flag`` shapes are deprecated and skipped; any other label than target/ignore/flag rejects the
  image (LISA would treat it as a target; UniPixel asserts none exists).

Conversations (train, LISA ``reason_seg_dataset.py``): each sample uses ONE instruction, drawn
from the image's 1-5 with the sample key (so a recipe's repetitions draw afresh). Sentences use
the long-question templates, phrases the short ones with the phrase lower-cased, answers LISA's
ANSWER_LIST. For images with an explanation (``explanatory_file``; "" disables), LISA's three
modes are drawn per sample: with probability ``text_only_rate`` (LISA's ``--explanatory 0.1``) the
question is the bare instruction and the answer the explanation alone, with no mask (no region
either); otherwise, with probability ``explain_rate`` (LISA: 1/2), the question is
"<instruction> <explanatory question>" and the answer "<answer> <explanation>"; else plain.
Val/test: one sample per instruction, with LISA's evaluation prompt ("<sentence> Please output
segmentation mask." / "What is <phrase> in this image? Please output segmentation mask.") and
answer "[SEG]." when ``fixed_eval_prompt`` (default). Table 7's 40,000 = the 239 train images
repeated by the recipe with fresh draws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from fclm_data.errors import Reject
from fclm_data.images import expect_size
from fclm_data.masks import decode_rle, encode_mask, nonempty_region_mask, polygons_to_rle, rle_area
from fclm_data.schema import Provenance, Region, Turn
from fclm_data.seeding import stable_index, stable_uniform
from fclm_data.sources import register_source
from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit, load_json_file
from fclm_data.templates import pick, res_question, template_text, with_image

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_TARGET, _IGNORE = 1, 2  #: paint values (LISA: 1 and 255)


@dataclass
class ReasonSegSource(Source):
    split: str = "train"  #: train | val | test
    root_dir: str = "reason_seg/ReasonSeg"
    #: LISA's explanatory answers (train only); "" disables them
    explanatory_file: str = "reason_seg/ReasonSeg/explanatory/train.json"
    #: share of an explained image's samples answered by the explanation alone, without a mask
    text_only_rate: float = 0.1
    #: share of the remaining samples whose answer is "[SEG] answer + explanation"
    explain_rate: float = 0.5
    #: non-train splits use LISA's evaluation prompt instead of seeded template draws
    fixed_eval_prompt: bool = True
    task = "reason_seg"

    @property
    def split_dir(self) -> str:
        return f"{self.root_dir}/{self.split}"

    @property
    def _uses_explanations(self) -> bool:
        return self.split == "train" and bool(self.explanatory_file)

    def required_paths(self) -> list[str]:
        return [self.split_dir] + ([self.explanatory_file] if self._uses_explanations else [])

    # ---- index -------------------------------------------------------------------------------
    def index(self) -> IndexResult:
        result = IndexResult([], [], self.missing_paths())
        if self.split_dir in result.missing:
            return result
        folder = self.data_root / self.split_dir
        files = {p.name for p in folder.iterdir() if p.is_file()}
        stems = sorted({n.rsplit(".", 1)[0] for n in files if n.endswith((".jpg", ".json"))})
        explanations = self._explanations(files, result)
        uids: set[str] = set()
        for stem in stems:
            try:
                payload = self._read_image_json(stem, files)
                payload["explanation"] = explanations.get(f"{stem}.jpg")
                self._add_units(stem, payload, uids, result)
            except Reject as exc:
                result.rejects.append(
                    self.reject(f"{self.split}/{stem}", exc, file=exc.file or f"{self.split_dir}/{stem}.json")
                )
        return result

    def _read_image_json(self, stem: str, files: set[str]) -> dict:
        json_rel, jpg_rel = f"{self.split_dir}/{stem}.json", f"{self.split_dir}/{stem}.jpg"
        if f"{stem}.json" not in files:
            raise Reject("missing_file", f"{jpg_rel} has no annotation {stem}.json", json_rel)
        if f"{stem}.jpg" not in files:
            raise Reject("missing_image", f"{json_rel} has no image {stem}.jpg", json_rel)
        data = load_json_file(self.data_root, json_rel)
        if not isinstance(data, dict):
            raise Reject("malformed_annotation", f"{json_rel} holds a {type(data).__name__}, not an object", json_rel)
        texts = data.get("text")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not [t for t in texts if isinstance(t, str) and t.strip()]:
            raise Reject("bad_text", f"{json_rel} has no non-empty instruction in 'text'", json_rel)
        if not isinstance(data.get("is_sentence"), bool):
            raise Reject("malformed_annotation", f"{json_rel} lacks a boolean 'is_sentence'", json_rel)
        return {
            "image": jpg_rel,
            "json": json_rel,
            "texts": [[i, t.strip()] for i, t in enumerate(texts) if isinstance(t, str) and t.strip()],
            "is_sentence": data["is_sentence"],
            "shapes": _shapes_of(data.get("shapes"), json_rel),
            "size": _annotated_size(data),
        }

    def _add_units(self, stem: str, payload: dict, uids: set[str], result: IndexResult) -> None:
        safe = _UNSAFE_KEY_CHARS.sub("_", stem)
        if self.split == "train":
            entries = [(f"{self.split}-{safe}", payload)]
        else:
            entries = [(f"{self.split}-{safe}-{i}", {**payload, "texts": [[i, t]]}) for i, t in payload["texts"]]
        if any(uid in uids for uid, _ in entries):
            raise Reject("duplicate_id", f"{stem} maps to sample id {entries[0][0]} which another image already uses")
        for uid, p in entries:
            uids.add(uid)
            result.units.append(Unit(uid, p, stem))

    def _explanations(self, files: set[str], result: IndexResult) -> dict[str, str]:
        """``<stem>.jpg`` -> explanation text; entries naming no image of the split are rejects."""
        if not self._uses_explanations or self.explanatory_file in result.missing:
            return {}
        try:
            items = load_json_file(self.data_root, self.explanatory_file)
            if not isinstance(items, list):
                raise Reject(
                    "malformed_annotation", f"{self.explanatory_file} holds a {type(items).__name__}, not a list"
                )
        except Reject as exc:
            result.rejects.append(self.reject(self.explanatory_file, exc, file=self.explanatory_file))
            return {}
        explanations: dict[str, str] = {}
        for i, item in enumerate(items):
            name = PurePosixPath(str(item.get("image", ""))).name if isinstance(item, dict) else ""
            name = name if name.endswith(".jpg") else f"{name}.jpg"
            record = f"{self.explanatory_file}#{i}"
            if not isinstance(item, dict) or not isinstance(item.get("outputs"), str) or not item["outputs"].strip():
                exc = Reject("bad_text", f"explanation #{i} has no text 'outputs'")
            elif name not in files:
                exc = Reject("missing_image", f"explanation #{i} names {name!r}, which is not in {self.split_dir}")
            elif name in explanations:
                exc = Reject("duplicate_id", f"a second explanation for {name}")
            else:
                explanations[name] = item["outputs"].strip()
                continue
            result.rejects.append(self.reject(record, exc, file=self.explanatory_file))
        return explanations

    # ---- build -------------------------------------------------------------------------------
    def image_candidates(self, unit: Unit) -> list[str]:
        return [unit.payload["image"]]

    def build(self, unit: Unit, key: str, repeat: int, options: BuildOptions) -> Built:
        p = unit.payload
        image = self.read_unit_image(unit, options)
        if p["size"] is not None:
            expect_size(image, p["size"][1], p["size"][0], p["json"])
        text_id, text = p["texts"][stable_index(len(p["texts"]), "instruction", options.seed, key)]
        mode = self._mode(p["explanation"], options.seed, key)
        turns, templates = self._conversation(text, p["is_sentence"], p["explanation"], mode, options.seed, key)
        regions = [] if mode == "text" else [self._region(p, image.height, image.width, text)]
        sample = self.new_sample(
            key=key,
            provenance=Provenance(
                split=self.split,
                image_id=unit.image_ref,
                ann_ids=[f"text{text_id}"],
                source_file=p["json"],
                repeat=repeat,
            ),
            image=image,
            regions=regions,
            conversations=turns,
            region_inputs=[],
            seg_targets=[0] if regions else [],
            templates=templates,
        )
        return Built(sample, image)

    def _mode(self, explanation: str | None, seed: int, key: str) -> str:
        """LISA's per-sample choice for explained images: "text" | "explain" | "seg"."""
        if explanation is None or self.split != "train":
            return "seg"
        if stable_uniform("explanatory", seed, key) < self.text_only_rate:
            return "text"
        return "explain" if stable_uniform("explain", seed, key) < self.explain_rate else "seg"

    def _conversation(self, text: str, is_sentence: bool, explanation: str | None, mode: str, seed: int, key: str):
        if mode == "text":
            return [Turn("user", with_image(text)), Turn("assistant", explanation)], []
        if self.split != "train" and self.fixed_eval_prompt:
            q_id, a_id = ("reason_long_question:2" if is_sentence else "res_question:4"), "res_answer:5"
            question, answer = template_text(q_id), template_text(a_id)
        else:
            q_id, question = pick("reason_long_question" if is_sentence else "res_question", seed, key)
            a_id, answer = pick("res_answer", seed, key)
        if mode == "explain":
            e_id, suffix = pick("reason_explanatory_question", seed, key)
            user, answer, ids = f"{text} {suffix}", f"{answer} {explanation}", [e_id, a_id]
        elif is_sentence:
            user, ids = question.replace("{sent}", text), [q_id, a_id]
        else:  # LISA lower-cases phrases in training prompts, not in its evaluation prompt
            phrase = text if self.split != "train" and self.fixed_eval_prompt else text.lower()
            user, ids = res_question(question, phrase), [q_id, a_id]
        return [Turn("user", with_image(user)), Turn("assistant", answer)], ids

    def _region(self, p: dict, height: int, width: int, text: str) -> Region:
        targets = [poly for label, poly in p["shapes"] if label == "target"]
        try:
            mask, box = nonempty_region_mask(polygons_to_rle(targets, height, width), f"{p['json']} targets")
            ignore = _lisa_ignore(p["shapes"], height, width)
        except Reject as exc:
            raise Reject(exc.code, f"{p['json']}: {exc.detail}", p["json"]) from exc
        return Region(mask=mask, bbox=box, label=None, caption=text, ignore=ignore)


def _shapes_of(shapes: Any, rel: str) -> list[list]:
    """Non-flag shapes as ``[label, flat polygon]`` in file order; at least one target."""
    if not isinstance(shapes, list):
        raise Reject("malformed_annotation", f"{rel} lacks a 'shapes' list", rel)
    kept = []
    for i, shape in enumerate(shapes):
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str):
            raise Reject("malformed_annotation", f"{rel} shape {i} has no string label", rel)
        kind = label.strip().lower()
        if kind == "flag":
            continue
        if kind not in ("target", "ignore"):
            raise Reject(
                "malformed_annotation", f"{rel} shape {i} has label {label!r} (expected target/ignore/flag)", rel
            )
        if shape.get("shape_type", "polygon") != "polygon":
            raise Reject(
                "malformed_annotation", f"{rel} shape {i} is a {shape.get('shape_type')!r}, not a polygon", rel
            )
        points = shape.get("points")
        if not isinstance(points, list) or not all(isinstance(pt, (list, tuple)) and len(pt) == 2 for pt in points):
            raise Reject("bad_polygon", f"{rel} shape {i} points are not [[x, y], ...]", rel)
        kept.append([kind, [v for pt in points for v in pt]])
    if not any(kind == "target" for kind, _ in kept):
        raise Reject("no_regions", f"{rel} has no 'target' shape", rel)
    return kept


def _annotated_size(data: dict) -> list[int] | None:
    """LabelMe's ``[imageHeight, imageWidth]`` when the file carries them."""
    height, width = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(height, int) and isinstance(width, int) and not isinstance(height, bool):
        return [height, width]
    return None


def _lisa_ignore(shapes: list[list], height: int, width: int) -> dict | None:
    """Pixels whose last painter, in LISA's largest-area-first order, is an ignore polygon.

    LISA orders by ``np.argsort(areas)[::-1]``: for equal areas the later shape is painted first,
    so the earlier one wins; the key (-area, -index) reproduces that.
    """
    if not any(kind == "ignore" for kind, _ in shapes):
        return None
    rles = [polygons_to_rle([poly], height, width) for _, poly in shapes]
    order = sorted(range(len(shapes)), key=lambda i: (-rle_area(rles[i]), -i))
    painted = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        painted[decode_rle(rles[i]) > 0] = _IGNORE if shapes[i][0] == "ignore" else _TARGET
    ignore = painted == _IGNORE
    return encode_mask(ignore) if ignore.any() else None


_TABLE7 = "Stage 1 Grounding: ReasonSeg 40,000"
register_source(
    "reasonseg", ReasonSegSource, "ReasonSeg (LISA) reasoning segmentation, one merged mask per image", _TABLE7
)
