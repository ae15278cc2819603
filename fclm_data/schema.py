"""The shard sample schema, shared by fclm_data (writer) and fclm_train (reader).

A shard sample is two tar members with the same key: the image's original bytes (``<key>.jpg`` or
``<key>.png``) and ``<key>.json`` holding a :class:`Sample`. Every sample has the same key set
(empty values are ``[]`` or ``null``) so that webdataset, wids and HF ``datasets`` read it alike.

Text conventions inside ``conversations``:

* ``<image>`` appears exactly once, in the first user turn.
* every ``<region>`` (user turns only) is a visual-prompt *input*; ``region_inputs[i]`` is the index
  into ``regions`` of the i-th ``<region>`` in reading order.
* every ``[SEG]`` (assistant turns only) is a mask *output*; ``seg_targets[i]`` is the index into
  ``regions`` of the i-th ``[SEG]`` in reading order.

SHARD FORMAT changes bump :data:`SCHEMA_VERSION`; ``tests/data/test_schema.py`` pins the key sets.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"
SEG_TOKEN = "[SEG]"

ROLES = ("user", "assistant")
#: How ``<region>`` inputs are presented to the model; all are derived from the region mask.
VISUAL_PROMPTS = ("mask", "box", "point", "scribble")
#: Task names used by the sources. ``dlc_dlres`` samples are paired (DLC view + DL-RES ``pair``).
TASKS = (
    "res",  # referring expression segmentation
    "gres",  # generalized RES (gRefCOCO): multi-target and no-target expressions
    "reason_seg",  # reasoning segmentation (ReasonSeg)
    "multi_reason_seg",  # multi-target reasoning segmentation (MUSE)
    "region_seg_caption",  # Pixel2Cap: caption -> mask
    "region_caption",  # short region captions (VG, Osprey short form)
    "roc",  # referring object classification (PACO-LVIS, Osprey LVIS pos/neg)
    "detailed_description",  # Osprey detailed description
    "conversation",  # Osprey region conversations
    "gcg",  # grounded conversation generation
    "dlc_dlres",  # Describe-Anything: DLC (region -> caption) paired with DL-RES (caption -> mask)
)

#: Sample keys are tar basenames: no dots (webdataset splits at the first dot), no slashes.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass
class Turn:
    role: str  #: "user" | "assistant"
    content: str  #: text with <image>, <region>, [SEG] placeholders


@dataclass
class View:
    """One task view of a sample: a conversation and the regions it references."""

    conversations: list[Turn]
    region_inputs: list[int]  #: index into regions per <region>, in reading order
    seg_targets: list[int]  #: index into regions per [SEG], in reading order


@dataclass
class Region:
    mask: dict  #: COCO compressed RLE {"size": [h, w], "counts": ascii str}
    bbox: list[float]  #: [x0, y0, x1, y1] absolute pixels, x1/y1 exclusive (x0 + w)
    label: str | None = None  #: category / class name where the source has one
    caption: str | None = None  #: region caption / referring text where the source has one
    ignore: dict | None = None  #: RLE of pixels to exclude from loss and metrics (ReasonSeg)
    box_only: bool = False  #: True when the source has only a box and ``mask`` is the filled box
    #: visual-prompt geometry for point / scribble prompts: [[x, y], ...]; [] for mask / box
    points: list[list[float]] = field(default_factory=list)


@dataclass
class Provenance:
    split: str  #: split of the source release ("train", "val", "testA", ...)
    image_id: str  #: the release's image id (COCO id, SA-1B id, ...) as a string
    ann_ids: list[str]  #: the release's annotation / ref / region ids used by this sample
    source_file: str  #: annotation file the record came from, relative to the data root
    repeat: int = 0  #: repetition index when a recipe repeats a small source


@dataclass
class ImageInfo:
    file_name: str  #: image path relative to the data root (or tar path + "#" + member)
    width: int
    height: int
    sha256: str  #: of the original image bytes; exact-duplicate and leakage detection


@dataclass
class Sample:
    key: str
    source: str  #: registry name of the source
    task: str  #: one of TASKS
    provenance: Provenance
    image: ImageInfo
    regions: list[Region]
    conversations: list[Turn]
    region_inputs: list[int]
    seg_targets: list[int]
    pair: View | None = None  #: DL-RES view of the same region for paired (consistency) samples
    visual_prompt: str = "mask"  #: how <region> inputs are presented: one of VISUAL_PROMPTS
    templates: list[str] = field(default_factory=list)  #: ids of the templates used, "<table>:<n>"
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the fixed key order (``schema`` first) used for the shard JSON.

        Written out by hand: ``dataclasses.asdict`` deep-copies every RLE string and cost ~2 ms
        per sample, more than the image check.
        """
        return {
            "schema": self.schema,
            "key": self.key,
            "source": self.source,
            "task": self.task,
            "provenance": vars(self.provenance).copy(),
            "image": vars(self.image).copy(),
            "regions": [vars(r).copy() for r in self.regions],
            "conversations": _turns(self.conversations),
            "region_inputs": list(self.region_inputs),
            "seg_targets": list(self.seg_targets),
            "pair": None if self.pair is None else _view(self.pair),
            "visual_prompt": self.visual_prompt,
            "templates": list(self.templates),
        }


def _turns(turns: list[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def _view(view: View) -> dict[str, Any]:
    return {
        "conversations": _turns(view.conversations),
        "region_inputs": list(view.region_inputs),
        "seg_targets": list(view.seg_targets),
    }


SAMPLE_KEYS = (
    "schema", "key", "source", "task", "provenance", "image", "regions", "conversations",
    "region_inputs", "seg_targets", "pair", "visual_prompt", "templates",
)  # fmt: skip
#: keys a non-default format (``fclm-data build --format refvlm|mvplm``, :mod:`fclm_data.formats`) appends
FORMAT_KEYS = ("format", "format_fields")
REGION_KEYS = tuple(f.name for f in dataclasses.fields(Region))
PROVENANCE_KEYS = tuple(f.name for f in dataclasses.fields(Provenance))
IMAGE_KEYS = tuple(f.name for f in dataclasses.fields(ImageInfo))
VIEW_KEYS = tuple(f.name for f in dataclasses.fields(View))


def encode_sample(sample: Sample | dict[str, Any]) -> bytes:
    """Serialise deterministically (fixed key order, compact separators, UTF-8)."""
    body = sample.to_dict() if isinstance(sample, Sample) else sample
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_sample(data: bytes | str | dict) -> dict[str, Any]:
    """Parse a shard JSON member into a plain dict (the trainer works on dicts)."""
    if isinstance(data, dict):
        return data
    return json.loads(data)


def _count_token(text: str, token: str) -> int:
    return text.count(token)


def _check_view(view: dict, n_regions: int, where: str, input_token: str | None = REGION_TOKEN,
                output_token: str | None = SEG_TOKEN) -> list[str]:  # fmt: skip
    """Turn roles, ``<image>`` once, and one index per placeholder (a format's own placeholders; a None token
    is not counted, its indexes are only range-checked)."""
    problems: list[str] = []
    turns = view.get("conversations") or []
    if not turns:
        problems.append(f"{where}: empty conversation")
        return problems
    if turns[0].get("role") != "user":
        problems.append(f"{where}: first turn is not a user turn")
    n_region = n_seg = n_image = 0
    for i, turn in enumerate(turns):
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES or not isinstance(content, str):
            problems.append(f"{where}: turn {i} has role {role!r} / content type {type(content).__name__}")
            continue
        r, s, im = (_count_token(content, t) if t else 0 for t in (input_token, output_token, IMAGE_TOKEN))
        if r and role != "user":
            problems.append(f"{where}: turn {i} ({role}) contains {input_token}")
        if s and role != "assistant":
            problems.append(f"{where}: turn {i} ({role}) contains {output_token}")
        if im and i != 0:
            problems.append(f"{where}: {IMAGE_TOKEN} outside the first turn (turn {i})")
        n_region, n_seg, n_image = n_region + r, n_seg + s, n_image + im
    if n_image != 1:
        problems.append(f"{where}: {IMAGE_TOKEN} appears {n_image} times (expected once)")
    for name, count, idx in (
        ("region_inputs", None if input_token is None else n_region, view.get("region_inputs")),
        ("seg_targets", None if output_token is None else n_seg, view.get("seg_targets")),
    ):
        if not isinstance(idx, list) or (count is not None and len(idx) != count):
            problems.append(f"{where}: {name} has {len(idx or [])} entries for {count} placeholders")
        elif any(not isinstance(j, int) or not 0 <= j < n_regions for j in idx):
            problems.append(f"{where}: {name} {idx} out of range for {n_regions} regions")
    return problems


def validate_sample(sample: dict[str, Any]) -> list[str]:
    """Return every schema violation found in a decoded sample ([] when valid).

    Checks the fixed key sets, the key pattern, token/index agreement of both views and that every
    mask, ignore RLE and box lies on the image grid named by ``image``.
    """
    problems: list[str] = []
    keys = SAMPLE_KEYS + FORMAT_KEYS if "format" in sample else SAMPLE_KEYS
    if tuple(sample.keys()) != keys:
        return [f"sample keys {sorted(sample)} differ from schema v{SCHEMA_VERSION} {sorted(keys)}"]
    tokens = _format_tokens(sample.get("format"))
    if isinstance(tokens, str):
        return [tokens]
    if sample["schema"] != SCHEMA_VERSION:
        problems.append(f"schema version {sample['schema']} != {SCHEMA_VERSION}")
    if not KEY_PATTERN.match(str(sample["key"])):
        problems.append(f"key {sample['key']!r} does not match {KEY_PATTERN.pattern}")
    if sample["task"] not in TASKS:
        problems.append(f"unknown task {sample['task']!r}")
    if sample["visual_prompt"] not in VISUAL_PROMPTS:
        problems.append(f"unknown visual_prompt {sample['visual_prompt']!r}")
    for name, keys in (("provenance", PROVENANCE_KEYS), ("image", IMAGE_KEYS)):
        if tuple(sample[name].keys()) != keys:
            problems.append(f"{name} keys {list(sample[name])} != {list(keys)}")
    height, width = sample["image"].get("height"), sample["image"].get("width")
    regions = sample["regions"]
    for i, region in enumerate(regions):
        problems.extend(_check_region(region, i, height, width))
    problems.extend(_check_view(sample, len(regions), "conversations", *tokens))
    if sample["pair"] is not None:
        if tuple(sample["pair"].keys()) != VIEW_KEYS:
            problems.append(f"pair keys {list(sample['pair'])} != {list(VIEW_KEYS)}")
        else:
            problems.extend(_check_view(sample["pair"], len(regions), "pair", *tokens))
    return problems


def _format_tokens(name: str | None) -> tuple[str | None, str | None] | str:
    """(input, output) placeholders of a sample's format, or the problem with its name."""
    if name is None:
        return REGION_TOKEN, SEG_TOKEN
    from fclm_data.formats import get_format

    try:
        fmt = get_format(name)
    except ValueError as exc:
        return str(exc)
    if name == "fclm":
        return "format 'fclm' is the default and is not written into samples"
    return fmt.input_token, (None if name == "mvplm" else fmt.output_token)


def _check_region(region: dict, i: int, height: int, width: int) -> list[str]:
    if tuple(region.keys()) != REGION_KEYS:
        return [f"region {i} keys {list(region)} != {list(REGION_KEYS)}"]
    problems = []
    for name in ("mask", "ignore"):
        rle = region[name]
        if rle is None and name == "ignore":
            continue
        if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str):
            problems.append(f"region {i} {name} is not a compressed RLE with string counts")
        elif list(rle.get("size", [])) != [height, width]:
            problems.append(f"region {i} {name} size {rle.get('size')} != image [h, w] {[height, width]}")
    box = region["bbox"]
    if len(box) != 4 or not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
        problems.append(f"region {i} bbox {box} is empty or outside the {width}x{height} image")
    return problems


def iter_region_indexes(sample: dict[str, Any]) -> Iterable[int]:
    """Indexes of all regions referenced by either view (inputs and targets)."""
    yield from sample["region_inputs"]
    yield from sample["seg_targets"]
    if sample["pair"] is not None:
        yield from sample["pair"]["region_inputs"]
        yield from sample["pair"]["seg_targets"]


def _field(name: str, kind: str, spec: Any) -> dict[str, Any]:
    return {"name": name, kind: spec}


def _format_fields_yaml(fmt: str) -> list[dict[str, Any]]:
    """The ``format`` / ``format_fields`` features of a non-default format (``fclm_data.formats``)."""
    string, int64 = "string", "int64"
    if fmt == "refvlm":
        fields = [_field("system", "list", string), _field("pair_system", "list", string)]
    elif fmt == "mvplm":
        turn = [_field("mode", "dtype", string), _field("words", "list", string),
                _field("word_spans", "list", {"list": int64}), _field("targets", "list", int64),
                _field("classes", "list", int64)]  # fmt: skip
        fields = [_field("turns", "list", turn)]
    else:
        raise ValueError(f"no HF features for format {fmt!r}")
    return [_field("format", "dtype", string), _field("format_fields", "struct", fields)]


def hf_features_yaml(image_ext: str = "jpg", fmt: str = "fclm") -> list[dict[str, Any]]:
    """The shard sample as an HF ``dataset_info.features`` YAML list (no ``datasets`` import).

    Builds write it into the output's ``README.md`` so that ``load_dataset(OUT)`` works for any mix of
    samples: HF ``datasets`` infers column types from the first 5 samples, and a field that is
    ``null`` there and a struct later (``pair``, ``ignore``) otherwise fails the load.
    """
    string, int64 = "string", "int64"
    rle = [_field("size", "list", int64), _field("counts", "dtype", string)]
    turns = _field("conversations", "list", [_field("role", "dtype", string), _field("content", "dtype", string)])
    indexes = [_field("region_inputs", "list", int64), _field("seg_targets", "list", int64)]
    region = [
        _field("mask", "struct", rle), _field("bbox", "list", "float64"), _field("label", "dtype", string),
        _field("caption", "dtype", string), _field("ignore", "struct", rle), _field("box_only", "dtype", "bool"),
        _field("points", "list", {"list": "float64"}),
    ]  # fmt: skip
    provenance = [
        _field("split", "dtype", string), _field("image_id", "dtype", string), _field("ann_ids", "list", string),
        _field("source_file", "dtype", string), _field("repeat", "dtype", int64),
    ]  # fmt: skip
    image = [_field("file_name", "dtype", string), _field("width", "dtype", int64), _field("height", "dtype", int64),
             _field("sha256", "dtype", string)]  # fmt: skip
    sample = [
        _field("schema", "dtype", int64), _field("key", "dtype", string), _field("source", "dtype", string),
        _field("task", "dtype", string), _field("provenance", "struct", provenance), _field("image", "struct", image),
        _field("regions", "list", region), turns, *indexes, _field("pair", "struct", [turns, *indexes]),
        _field("visual_prompt", "dtype", string), _field("templates", "list", string),
    ]  # fmt: skip
    if fmt != "fclm":
        sample += _format_fields_yaml(fmt)
    features = [
        _field(image_ext, "dtype", "image"),
        _field("json", "struct", sample),
        _field("__key__", "dtype", string),
        _field("__url__", "dtype", string),
    ]
    # fresh objects: shared sub-lists would become YAML aliases, and datasets' reader pops keys in place
    return json.loads(json.dumps(features))


def hf_features(image_ext: str = "jpg", fmt: str = "fclm"):
    """``datasets.Features`` of a shard sample; pass as ``features=`` to ``load_dataset("webdataset", ...)``."""
    from datasets import Features

    return Features._from_yaml_list(hf_features_yaml(image_ext, fmt))
