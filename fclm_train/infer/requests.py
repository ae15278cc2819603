"""Inference inputs: an image, a user turn and its regions -> left-padded ``FCLMInputs``, the trainer's own way.

Everything a model sees at inference comes from the functions that built its training batches:

1. pixels -- :func:`fclm_train.data.vision.open_image` (bytes, reduced-size JPEG decoding as in training); the Qwen
   patches and the SAM frame are built on the model's device by the training step's own
   :meth:`fclm_train.data.device.CompactBatch.prepare`;
2. text -- :meth:`fclm_train.data.encode.ChatTemplate.prompt` (system turn, ChatML, ``<image>`` expanded to the
   image pads, ``<region>`` to ``<mask><pos>``), ending with the assistant head;
3. regions -- schema region dicts named by :class:`fclm_train.data.encode.CompactMasks` and drawn on the device
   (points with ``prompts.py``), so a user's box or point becomes the very mask
   ``fclm-data build --visual-prompt box|point`` trains on.

A :class:`Query` is the schema's view of one conversation (what a shard sample holds); :func:`region_from_input`
turns a user's mask / box / point into such a region. Rows are padded on the left so that every row's last
prompt token sits in the last column and generation appends to all rows at once.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from fclm_data.masks import encode_mask
from fclm_train.data.device import NO_MASK, CompactBatch, CompactImage, compact_batch
from fclm_train.data.encode import IGNORE_INDEX, ChatTemplate, CompactMasks, EncoderConfig
from fclm_train.data.vision import image_token_count, long_side_size, open_image, qwen_grid_size, to_rgb

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]
#: a (H, W) bool mask, a box ``[x0, y0, x1, y1]`` (x1 / y1 exclusive, original pixels) or a point ``(x, y)``
RegionInput = Union[np.ndarray, Sequence[float]]


@dataclass
class LoadedImage:
    """Decoded pixels plus the original size (the pixels may be a reduced JPEG decode, as in training)."""

    pixels: torch.Tensor  #: (3, h, w) uint8 RGB
    original_size: tuple[int, int]  #: (H, W)
    data: bytes | None = None  #: the original bytes when the image came as a file / bytes (overlays reuse them)


def load_image(image: ImageInput, side: int, draft: bool = True) -> LoadedImage:
    """A path, bytes, PIL image or (H, W, 3) uint8 array -> :class:`LoadedImage`.

    Files and bytes go through the trainer's :func:`open_image` (reduced-size JPEG decoding for large originals),
    so their pixels match training exactly; PIL images and arrays are taken as they are, transparency composited
    onto white (:func:`~fclm_train.data.vision.to_rgb`).
    """
    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, bytes):
        pixels, original = open_image(image, side, draft)
        return LoadedImage(pixels, original, image)
    if isinstance(image, Image.Image):
        image = np.array(to_rgb(image))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
        raise ValueError(f"an image array must be (H, W, 3) uint8 RGB or (H, W, 4) RGBA, got {array.shape} "
                         f"{array.dtype}")  # fmt: skip
    if array.shape[2] == 4:  # onto white, as a PIL RGBA image (and transformers' processors) would be
        array = np.array(to_rgb(Image.fromarray(array, "RGBA")))
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return LoadedImage(pixels, (array.shape[0], array.shape[1]))


def region_from_input(region: RegionInput, height: int, width: int) -> tuple[dict, str]:
    """A user's region -> (schema region dict, visual prompt) drawn later exactly as in training.

    * mask: ``(H, W)`` bool / {0, 1} array -> visual prompt ``mask``;
    * box: ``[x0, y0, x1, y1]`` -> ``box`` (the filled box, ``prompts.py``), the box also standing in as mask;
    * point: ``(x, y)`` -> ``point`` (a disc around it on the SAM frame), the pixel under it as mask.
    """
    if isinstance(region, np.ndarray) and region.ndim == 2:
        mask = region.astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f"region mask is {mask.shape}, the image is {(height, width)}")
        if not mask.any():
            raise ValueError("region mask is empty")
        ys, xs = np.nonzero(mask)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        return _region(mask, bbox), "mask"
    values = [float(v) for v in region]
    if len(values) == 4:
        x0, y0 = max(0.0, values[0]), max(0.0, values[1])
        x1, y1 = min(float(width), values[2]), min(float(height), values[3])
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"box {values} is empty or outside the {width}x{height} image")
        mask = np.zeros((height, width), dtype=bool)
        mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        return _region(mask, [x0, y0, x1, y1]), "box"
    if len(values) == 2:
        x, y = values
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"point {values} is outside the {width}x{height} image")
        mask = np.zeros((height, width), dtype=bool)
        mask[int(y), int(x)] = True
        return _region(mask, [float(int(x)), float(int(y)), float(int(x) + 1), float(int(y) + 1)], [[x, y]]), "point"
    raise ValueError(f"a region is a 2-D mask, a box [x0, y0, x1, y1] or a point (x, y); got {region!r}")


def _region(mask: np.ndarray, bbox: list[float], points: list[list[float]] | None = None) -> dict:
    return {"mask": encode_mask(mask), "bbox": bbox, "label": None, "caption": None, "ignore": None,
            "box_only": False, "points": points or []}  # fmt: skip


@dataclass
class Query:
    """One conversation to answer: the user turn(s) and the regions its ``<region>`` placeholders name."""

    image: LoadedImage
    turns: list[dict]  #: ``[{"role": "user", "content": "<image>\\n..."}]``, the answer is generated
    regions: list[dict] = field(default_factory=list)  #: schema regions
    region_inputs: list[int] = field(default_factory=list)  #: index into ``regions`` per ``<region>``
    visual_prompt: str = "mask"  #: how ``<region>`` inputs are drawn (schema ``visual_prompt``)
    key: str = "query"  #: seeds derived prompt points when a region carries none (as in training)
    answer: str | None = None  #: teacher-forced assistant answer (LISA-style evaluation), else generated


@dataclass
class Request:
    """A :class:`Query` encoded: prompt ids, the compact image and its region specs (``device.py``)."""

    key: str
    prompt_ids: list[int]
    answer_ids: list[int]  #: teacher-forced answer ids ([] when generating)
    grid: tuple[int, int, int]
    sam_size: tuple[int, int]  #: (h, w) inside the frame
    original_size: tuple[int, int]  #: (H, W)
    image: CompactImage  #: uint8 pixels and bit-packed region masks
    region_specs: list[tuple[int, int, int, int, int]]  #: one per <region>

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.answer_ids


class RequestBuilder:
    """Encodes :class:`Query` objects with the trainer's chat template, image tensors and region masks."""

    def __init__(self, tokenizer, config: EncoderConfig) -> None:
        self.config = config
        self.chat = ChatTemplate(tokenizer, config.region_text, config.system_prompt)
        region_pieces = [f"<{piece}" for piece in config.region_text.split("<") if piece]
        self.region_token_ids = [tokenizer.convert_tokens_to_ids(t) for t in region_pieces]
        self.seg_token_id = tokenizer.convert_tokens_to_ids("[SEG]")

    def build(self, query: Query) -> Request:
        cfg = self.config
        height, width = query.image.original_size
        n_image = image_token_count(height, width, cfg.side, cfg.patch_size, cfg.merge_size)
        prompt_ids = self.chat.prompt(query.turns, n_image)
        answer_ids = [] if query.answer is None else self.chat.content_ids(query.answer, n_image) + [self.chat.im_end]
        self._check_regions(prompt_ids, query)
        image = CompactImage((height, width), pixels=query.image.pixels.permute(1, 2, 0))
        meta = {"key": query.key, "visual_prompt": query.visual_prompt, "regions": query.regions}
        masks = CompactMasks(meta, cfg.side, image)
        h, w = qwen_grid_size(height, width, cfg.side, cfg.patch_size, cfg.merge_size)
        return Request(
            key=query.key, prompt_ids=prompt_ids, answer_ids=answer_ids,
            grid=(1, h // cfg.patch_size, w // cfg.patch_size), sam_size=long_side_size(height, width, cfg.side),
            original_size=(height, width), image=image, region_specs=[masks.prompt(i) for i in query.region_inputs],
        )  # fmt: skip

    def _check_regions(self, ids: list[int], query: Query) -> None:
        """As the trainer's encoder: the text itself must not hold FCLM's tokens (they would misalign)."""
        counts = Counter(ids)
        if any(counts[t] != len(query.region_inputs) for t in self.region_token_ids) or counts[self.seg_token_id]:
            raise ValueError(
                f"{query.key}: the prompt has {counts[self.region_token_ids[0]]} region tokens for "
                f"{len(query.region_inputs)} regions and {counts[self.seg_token_id]} [SEG] (expected 0)"
            )


def collate_requests(requests: list[Request], pad_token_id: int, image_token_id: int, seg_token_id: int,
                     config: EncoderConfig) -> CompactBatch:  # fmt: skip
    """Left-padded rows (labels all -100) as a :class:`CompactBatch`; ``seg_batch_index`` lists teacher-forced
    [SEG]s (without ground truth). ``.prepare(device)`` gives the model's ``FCLMInputs``."""
    B, T = len(requests), max(len(r.input_ids) for r in requests)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    for b, request in enumerate(requests):
        ids = request.input_ids
        input_ids[b, T - len(ids) :] = torch.tensor(ids)
        attention_mask[b, T - len(ids) :] = 1
    segs = (input_ids == seg_token_id).sum(1).tolist()
    return compact_batch(
        input_ids=input_ids, attention_mask=attention_mask, labels=torch.full_like(input_ids, IGNORE_INDEX),
        image_token_id=image_token_id, geometry=config.geometry, images=[r.image for r in requests],
        row_image=list(range(B)), grids=[r.grid for r in requests], region_specs=[r.region_specs for r in requests],
        seg_specs=[[NO_MASK] * n for n in segs], ignore_specs=[[NO_MASK] * n for n in segs],
        consistency_pairs=torch.zeros(0, 2, dtype=torch.long),
    )  # fmt: skip


def image_bytes(image: LoadedImage) -> bytes:
    """The original bytes, or a PNG of the pixels (overlays need encoded bytes)."""
    if image.data is not None:
        return image.data
    buffer = io.BytesIO()
    Image.fromarray(image.pixels.permute(1, 2, 0).numpy()).save(buffer, "PNG")
    return buffer.getvalue()
