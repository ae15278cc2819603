"""One shard sample -> rows: Qwen ChatML ids and labels, the image and its masks in the compact form of ``device.py``.

Text (Qwen2.5-VL ChatML, written by hand so the labels follow the turn boundaries)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|image_pad|> x N<|vision_end|>Describe <mask><pos> ...<|im_end|>\\n
    <|im_start|>assistant\\nIt is [SEG].<|im_end|>\\n

token for token what the released Qwen2.5-VL-*-Instruct ``chat_template`` renders for the messages
``[{"type": "image"}, {"type": "text", "text": "Describe ..."}]``: the template puts the text right after
``<|vision_end|>``, so the schema's ``"<image>\\n"`` (LLaVA's convention) loses its newline (a test renders the
template text itself).

The schema's single ``<image>`` becomes ``N = t*h*w / merge^2`` image pads (N is known from the JSON's image
size, before any pixel is decoded); each ``<region>`` becomes ``region_text`` (``<mask><pos>``). Labels are the
ids on assistant content and its ``<|im_end|>``, -100 elsewhere.

A paired sample (``pair`` not null) gives two rows of the same image: the DLC view (``conversations``, with
``<region>`` inputs) and the DL-RES view (``pair``, with ``[SEG]`` targets); ``pairs`` links each region
occurrence of the first to the [SEG] occurrence of the same region in the second (the consistency losses).

Samples that cannot become rows are skipped and counted by reason (``Encoder.skipped``), never truncated:
``too_long`` (a view exceeds ``max_length`` tokens, paper: 4096), ``token_mismatch`` (the text itself
contains FCLM's special tokens), ``image_size`` (the image differs from the JSON's size), ``decode_error``,
``format_mismatch`` (a sample of another format than ``EncoderConfig.format``).

REF-VLM and MVP-LM samples (``EncoderConfig.format = "refvlm" | "mvplm"``) use the same template and image /
mask path; their rows add :class:`~.format_rows.FormatRow` (``format_rows.py``: the per-pair system turns,
exact word token spans, boxes and classes per target).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from fclm_data.masks import decode_rle
from fclm_train.config import DataConfig
from fclm_train.model.inputs import IGNORE_INDEX

from .device import (
    NO_MASK,
    PROMPT_BOX,
    PROMPT_DRAWN,
    PROMPT_MASK,
    CompactImage,
    ImageGeometry,
    jpeg_header,
    pack_frame,
    pack_rle,
)
from .format_rows import FormatRow, mvplm_row, refvlm_row
from .prompts import box_on_frame, prompt_mask
from .tokenizer import format_token_ids
from .vision import (
    frame_scale,
    image_token_count,
    long_side_size,
    mask_to_frame,
    open_image,
    qwen_grid_size,
    qwen_patches,
    sam_frame,
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    """What the encoder needs from the model and training configs (plain values: it is pickled to workers)."""

    side: int = 1024  #: paper §S1.1: long side of the Qwen input and of the SAM frame
    patch_size: int = 14  #: Qwen2.5-VL
    merge_size: int = 2  #: Qwen2.5-VL
    temporal_patch_size: int = 2  #: Qwen2.5-VL
    region_text: str = "<mask><pos>"  #: ``FCLMConfig.region_token_text``
    max_length: int = DataConfig.max_length  #: the train config's data fields own these defaults
    system_prompt: str | None = DataConfig.system_prompt
    draft: bool = DataConfig.draft
    #: "worker": JPEGs decoded in the loader workers (PIL, reduced DCT scale); "device": shipped as bytes and
    #: decoded by the device step (nvJPEG on CUDA, libjpeg-turbo otherwise), header checked in the worker
    jpeg_decode: str = DataConfig.jpeg_decode
    #: the sample format this encoder reads (``fclm-data build --format``); samples of another are skipped and
    #: counted (``format_mismatch``). "refvlm" / "mvplm" rows carry :class:`~.format_rows.FormatRow` fields
    format: str = "fclm"

    @property
    def geometry(self) -> ImageGeometry:
        return ImageGeometry(self.side, self.patch_size, self.merge_size, self.temporal_patch_size)


@dataclass
class EncodedRow:
    """One conversation row of a batch; masks are named by specs into the sample's :class:`CompactImage`."""

    input_ids: list[int]
    labels: list[int]
    region_specs: list[tuple[int, int, int, int, int]]  #: (kind, a, b, c, d) per <region>, ``device.PROMPT_*``
    seg_refs: list[int]  #: mask index per [SEG] occurrence
    ignore_refs: list[int]  #: mask index of its ignore region, or ``device.NO_MASK``, per [SEG]
    region_ids: list[int]  #: schema region index per <region> occurrence
    seg_ids: list[int]  #: schema region index per [SEG] occurrence
    targets: FormatRow | None = None  #: REF-VLM / MVP-LM rows: boxes, classes, word spans (None: FCLM)


@dataclass
class EncodedSample:
    """All rows of one shard sample (1, or 2 for a paired sample) and its compact image and masks."""

    key: str
    source: str
    rows: list[EncodedRow]
    image: CompactImage  #: uint8 pixels (or JPEG bytes) and bit-packed masks at the stored size
    grid: tuple[int, int, int]  #: (t, h, w) patches
    sam_size: tuple[int, int]  #: (h, w) before padding
    original_size: tuple[int, int]  #: (H, W)
    #: (region occurrence in rows[0], [SEG] occurrence in rows[1]) of the same region; [] when unpaired
    pairs: list[tuple[int, int]] = field(default_factory=list)
    format: str = "fclm"  #: the sample's format (``EncoderConfig.format``)


class ChatTemplate:
    """ChatML ids and labels for a list of turns (token pieces cached, the image pads inserted as ids)."""

    def __init__(self, tokenizer, region_text: str, system_prompt: str | None) -> None:
        self.tokenizer = tokenizer
        self.region_text = region_text
        ids = tokenizer.convert_tokens_to_ids
        self.vision_start, self.vision_end = ids("<|vision_start|>"), ids("<|vision_end|>")
        self.image_pad, self.im_end = ids("<|image_pad|>"), ids("<|im_end|>")
        self.newline = self._encode("\n")
        self.heads = {role: self._encode(f"<|im_start|>{role}\n") for role in ("user", "assistant")}
        self.system = [] if system_prompt is None else self._encode(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def content_ids(self, content: str, n_image_tokens: int) -> list[int]:
        """A turn's content; ``<image>`` -> vision_start + N pads + vision_end, ``<region>`` -> region text."""
        pieces = content.replace("<region>", self.region_text).split("<image>")
        ids = self._encode(pieces[0])
        for piece in pieces[1:]:
            ids += [self.vision_start] + [self.image_pad] * n_image_tokens + [self.vision_end]
            ids += self._encode(piece.removeprefix("\n"))  # Qwen's template: text follows <|vision_end|> directly
        return ids

    def content_spans(self, content: str, n_image_tokens: int, spans: Sequence[tuple[int, int]]
                      ) -> tuple[list[int], list[tuple[int, int]]]:  # fmt: skip
        """:meth:`content_ids` tokenised piecewise at the edges of ``spans`` (character [start, end) in
        ``content``) -> (ids, each span's token [start, end)).

        Each piece is tokenised on its own, so a span is whole tokens that decode to exactly its text: in one pass
        Qwen's BPE would glue the space before a name to it (" dog") and merge a name's last punctuation with the
        ", " after it ("(tv)," is one pre-token), and the same name would get other ids first in a list than
        after a comma. Pieces decode to the same text as the whole; only the ids at the edges differ.
        """
        if not spans:
            return self.content_ids(content, n_image_tokens), []
        edges = sorted({0, len(content), *(edge for span in spans for edge in span)})
        ids: list[int] = []
        at = {}
        for start, end in zip(edges, edges[1:]):
            at[start] = len(ids)
            ids += self.content_ids(content[start:end], n_image_tokens)
        at[len(content)] = len(ids)
        return ids, [(at[start], at[end]) for start, end in spans]

    def encode(self, turns: list[dict], n_image_tokens: int) -> tuple[list[int], list[int]]:
        """(input_ids, labels): assistant content and its <|im_end|> supervised, all else -100."""
        ids, labels, _ = self.encode_spans(turns, n_image_tokens)
        return ids, labels

    def encode_spans(
        self, turns: list[dict], n_image_tokens: int, systems: list[str] | None = None,
        spans: dict[int, Sequence[tuple[int, int]]] | None = None,
    ) -> tuple[list[int], list[int], dict[int, list[tuple[int, int]]]]:  # fmt: skip
        """:meth:`encode` for the REF-VLM / MVP-LM formats, plus the token spans of ``spans[t]`` (character
        spans in turn t's content, :meth:`content_spans`) as positions in ``input_ids``.

        ``systems``: one system text per user turn, written as a ``system`` turn before it instead of the config's
        system prompt -- REF-VLM's per-turn task command (xtuner's template prepends a turn's ``system`` to its
        input; Qwen's chat template writes a system message where it stands and then adds no default).
        """
        ids, labels = (list(self.system), [IGNORE_INDEX] * len(self.system)) if systems is None else ([], [])
        token_spans: dict[int, list[tuple[int, int]]] = {}
        users = 0
        for t, turn in enumerate(turns):
            if systems is not None and turn["role"] == "user":
                block = self._encode(f"<|im_start|>system\n{systems[users]}<|im_end|>\n")
                ids, labels, users = ids + block, labels + [IGNORE_INDEX] * len(block), users + 1
            head = self.heads[turn["role"]]
            content, found = self.content_spans(turn["content"], n_image_tokens, (spans or {}).get(t, ()))
            body = content + [self.im_end]
            supervised = turn["role"] == "assistant"
            if found:
                token_spans[t] = [(len(ids) + len(head) + a, len(ids) + len(head) + b) for a, b in found]
            ids += head + body + self.newline
            labels += [IGNORE_INDEX] * len(head) + (body if supervised else [IGNORE_INDEX] * len(body))
            labels += [IGNORE_INDEX] * len(self.newline)
        return ids, labels, token_spans

    def prompt(self, turns: list[dict], n_image_tokens: int) -> list[int]:
        """Generation prompt: ``turns`` as :meth:`encode` writes them, then the assistant head (inference).

        The ids are a prefix of what :meth:`encode` gives for ``turns`` + an assistant answer, so a model sees at
        inference exactly the tokens it was trained on up to the answer.
        """
        ids, _ = self.encode(turns, n_image_tokens)
        return ids + self.heads["assistant"]


class Encoder:
    """Raw shard sample (``{"__key__", "json", "jpg" | "png"}``) -> :class:`EncodedSample`, or None if skipped."""

    def __init__(self, tokenizer, config: EncoderConfig) -> None:
        self.config = config
        self.chat = ChatTemplate(tokenizer, config.region_text, config.system_prompt)
        self.region_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in _special_pieces(config.region_text)]
        self.seg_token_id = tokenizer.convert_tokens_to_ids("[SEG]")
        #: the format's special tokens -> ids (raises when the tokenizer would split one: add_format_tokens)
        self.format_ids = format_token_ids(tokenizer, config.format)
        self.skipped: Counter[str] = Counter()

    def __call__(self, raw: dict) -> EncodedSample | None:
        meta = json.loads(raw["json"])
        key = meta["key"]
        sample_format = meta.get("format", "fclm")
        if sample_format != self.config.format:  # another system's inputs: never trained on silently
            if not self.skipped["format_mismatch"]:
                log.warning("skipping %s: a %s-format sample; this loader reads %s samples (EncoderConfig.format; "
                            "FCLM trains on fclm-data build --format fclm); further ones are only counted",
                            key, sample_format, self.config.format)  # fmt: skip
            self.skipped["format_mismatch"] += 1
            return None
        views = [meta] + ([meta["pair"]] if meta["pair"] is not None else [])
        texts = self._texts(meta, views)
        if texts is None:
            return None
        try:
            return self._with_pixels(raw, meta, views, texts)
        except Exception as exc:  # a corrupt image must not stop a training run: skip, count, say so once
            if not self.skipped["decode_error"]:
                log.warning("skipping %s: %s: %s (further decode errors are only counted)", key,
                            type(exc).__name__, exc)
            self.skipped["decode_error"] += 1
            return None

    def _texts(self, meta: dict, views: list[dict]) -> list[tuple[list[int], list[int], FormatRow | None]] | None:
        cfg = self.config
        image = meta["image"]
        n_image = image_token_count(image["height"], image["width"], cfg.side, cfg.patch_size, cfg.merge_size)
        texts = []
        for index, view in enumerate(views):
            text = self._view_text(meta, view, index, n_image)
            if text is not None and len(text[0]) > cfg.max_length:
                self.skipped["too_long"] += 1
                return None
            if text is None or not self._tokens_match(text[0], view, meta):
                self.skipped["token_mismatch"] += 1
                return None
            texts.append(text)
        return texts

    def _view_text(self, meta: dict, view: dict, index: int, n_image: int):
        """(ids, labels, FormatRow or None) of one view in the encoder's format; None if its fields disagree."""
        if self.config.format == "refvlm":
            return refvlm_row(self.chat, meta, view, index, n_image)
        if self.config.format == "mvplm":
            return mvplm_row(self.chat, meta, n_image)
        ids, labels = self.chat.encode(view["conversations"], n_image)
        return ids, labels, None

    def _tokens_match(self, ids: list[int], view: dict, meta: dict) -> bool:
        """The text's placeholders are the view's: one per input region and per target (MVP-LM: per turn)."""
        regions = len(view["region_inputs"])  # list.count: a few C scans, ~10x cheaper than a Counter of ids
        if self.config.format == "refvlm":
            ids_of = self.format_ids
            return ids.count(ids_of["[VPT]"]) == regions and ids.count(ids_of["<REF>"]) == len(view["seg_targets"])
        if self.config.format == "mvplm":
            return not regions and ids.count(self.format_ids["<PER>"]) == len(meta["format_fields"]["turns"])
        return ids.count(self.seg_token_id) == len(view["seg_targets"]) and all(
            ids.count(t) == regions for t in self.region_token_ids
        )

    def _with_pixels(self, raw: dict, meta: dict, views: list[dict], texts) -> EncodedSample | None:
        cfg = self.config
        original = (meta["image"]["height"], meta["image"]["width"])
        image = load_compact_image(raw.get("jpg", raw.get("png")), cfg)
        if image.original_size != original:
            self.skipped["image_size"] += 1
            return None
        masks = CompactMasks(meta, cfg.side, image)
        rows = [self._row(view, ids, labels, masks, targets) for view, (ids, labels, targets) in zip(views, texts)]
        return EncodedSample(
            key=meta["key"], source=meta["source"], rows=rows, image=image, grid=_grid(original, cfg),
            sam_size=long_side_size(*original, cfg.side), original_size=original, pairs=_pairs(rows),
            format=cfg.format,
        )  # fmt: skip

    def _row(self, view: dict, ids: list[int], labels: list[int], masks: CompactMasks,
             targets: FormatRow | None) -> EncodedRow:  # fmt: skip
        return EncodedRow(
            input_ids=ids, labels=labels,
            region_specs=[masks.prompt(i) for i in view["region_inputs"]],
            seg_refs=[masks.target(i) for i in view["seg_targets"]],
            ignore_refs=[masks.ignore(i) for i in view["seg_targets"]],
            region_ids=list(view["region_inputs"]), seg_ids=list(view["seg_targets"]), targets=targets,
        )  # fmt: skip


def load_compact_image(data: bytes, config: EncoderConfig) -> CompactImage:
    """What a worker ships of an image: decoded uint8 pixels, or (``jpeg_decode="device"``) the JPEG bytes after a
    header read (size and mode; CMYK and other rare JPEG modes are still decoded here)."""
    if config.jpeg_decode == "device":
        kind, size, mode = jpeg_header(data)
        if kind == "JPEG" and mode in ("RGB", "L"):
            return CompactImage(size, jpeg=data)
    elif config.jpeg_decode != "worker":
        raise ValueError(f"jpeg_decode must be 'worker' or 'device', got {config.jpeg_decode!r}")
    pixels, size = open_image(data, config.side, config.draft)
    return CompactImage(size, pixels=pixels.permute(1, 2, 0))  # the decoder's HWC layout, no copy


def _grid(original: tuple[int, int], cfg: EncoderConfig) -> tuple[int, int, int]:
    h, w = qwen_grid_size(*original, cfg.side, cfg.patch_size, cfg.merge_size)
    return 1, h // cfg.patch_size, w // cfg.patch_size


class CompactMasks:
    """Decodes each region's RLE once per sample at its stored size, bit-packs it into ``image.masks`` and names
    it in the row specs; the device step resizes it onto the frame (``device.py``).

    Mask and box prompts become specs; point and scribble prompts are drawn here on the frame with
    :class:`RegionMasks` (they are seeded from the region's frame mask) and shipped packed in ``image.drawn``.
    """

    def __init__(self, meta: dict, side: int, image: CompactImage) -> None:
        self.meta, self.side, self.image = meta, side, image
        self.scale = frame_scale(*image.original_size, side)
        self._index: dict[tuple[str, int], int] = {}
        self._reference: RegionMasks | None = None

    def _packed(self, kind: str, index: int, rle: dict) -> int:
        if (kind, index) not in self._index:
            self._index[kind, index] = len(self.image.masks)
            self.image.masks.append(pack_rle(rle))
        return self._index[kind, index]

    def target(self, index: int) -> int:
        return self._packed("mask", index, self.meta["regions"][index]["mask"])

    def ignore(self, index: int) -> int:
        rle = self.meta["regions"][index]["ignore"]
        return NO_MASK if rle is None else self._packed("ignore", index, rle)

    def prompt(self, index: int) -> tuple[int, int, int, int, int]:
        region, kind = self.meta["regions"][index], self.meta["visual_prompt"]
        if kind == "mask":
            return (PROMPT_MASK, self.target(index), *centre_pixel(region["bbox"], self.scale, self.side), 0)
        if kind == "box":
            return (PROMPT_BOX, *box_on_frame(region["bbox"], self.scale))
        if self._reference is None:
            self._reference = RegionMasks(self.meta, self.side, self.scale)
        self.image.drawn.append(pack_frame(self._reference.prompt(index)))
        return (PROMPT_DRAWN, len(self.image.drawn) - 1, 0, 0, 0)


def image_tensors(
    image: torch.Tensor, original: tuple[int, int], config: EncoderConfig
) -> tuple[torch.Tensor, tuple[int, int, int], torch.Tensor, tuple[int, int]]:  # fmt: skip
    """(3, h, w) uint8 image -> (Qwen patches, (t, h, w) grid, (3, S, S) SAM frame, pre-pad (h, w)) on the CPU.

    The reference the device step (``device.py``) is tested against, one image at a time.
    """
    pixel_values, grid = qwen_patches(image, original, config.side, config.patch_size, config.merge_size,
                                      config.temporal_patch_size)  # fmt: skip
    frame, sam_size = sam_frame(image, original, config.side)
    return pixel_values, grid, frame, sam_size


class RegionMasks:
    """Decodes each region's RLE once per sample and derives target, ignore and prompt masks on the frame (CPU).

    The reference for the device step's masks, and the drawer of point and scribble prompts.

    ``meta`` needs ``key``, ``visual_prompt`` and ``regions`` (schema regions); inference builds such a dict
    from a user's mask, box or point so that its prompt masks are drawn exactly as in training.
    """

    def __init__(self, meta: dict, side: int, scale: tuple[float, float]) -> None:
        self.meta, self.side, self.scale = meta, side, scale
        self._targets: dict[int, torch.Tensor] = {}

    def target(self, index: int) -> torch.Tensor:
        if index not in self._targets:
            self._targets[index] = mask_to_frame(decode_rle(self.meta["regions"][index]["mask"]), self.side)
        return self._targets[index]

    def ignore(self, index: int) -> torch.Tensor | None:
        rle = self.meta["regions"][index]["ignore"]
        return None if rle is None else mask_to_frame(decode_rle(rle), self.side)

    def prompt(self, index: int) -> torch.Tensor:
        """The extractor's input mask; never empty (a region thinner than a frame pixel keeps its centre)."""
        region = self.meta["regions"][index]
        target = self.target(index)
        if not target.any():
            target = self._centre_pixel(region["bbox"])
        return prompt_mask(self.meta["visual_prompt"], target, region, self.meta["key"], index, self.scale, self.side)

    def _centre_pixel(self, bbox: list[float]) -> torch.Tensor:
        out = torch.zeros(self.side, self.side, dtype=torch.bool)
        x, y = centre_pixel(bbox, self.scale, self.side)
        out[y, x] = True
        return out


def centre_pixel(bbox: list[float], scale: tuple[float, float], side: int) -> tuple[int, int]:
    """(x, y) frame pixel under a box's centre: the prompt of a region thinner than a frame pixel."""
    x = min(side - 1, int((bbox[0] + bbox[2]) / 2 * scale[0]))
    y = min(side - 1, int((bbox[1] + bbox[3]) / 2 * scale[1]))
    return x, y


def _pairs(rows: list[EncodedRow]) -> list[tuple[int, int]]:
    """(region occurrence in the DLC row, [SEG] occurrence of the same region in the DL-RES row)."""
    if len(rows) != 2:
        return []
    seg_of = {}
    for k, region in enumerate(rows[1].seg_ids):
        seg_of.setdefault(region, k)
    return [(i, seg_of[r]) for i, r in enumerate(rows[0].region_ids) if r in seg_of]


def _special_pieces(region_text: str) -> list[str]:
    """``"<mask><pos>"`` -> ``["<mask>", "<pos>"]``."""
    return [f"<{piece}" for piece in region_text.split("<") if piece]

