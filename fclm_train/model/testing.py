"""Small, real-format batches for tests and ``bench/model_step.py`` (not the production collate).

:func:`build_tiny_tokenizer` is a byte-level Qwen2 tokenizer (no merges) whose special-token ids match the
``tiny`` preset. :func:`make_inputs` turns plain Python conversations (``<image>``, ``<region>``, ``[SEG]``
placeholders, numpy masks, an RGB array) into a valid :class:`FCLMInputs` using ChatML, the real Qwen2-VL
image processor and the SAM-frame helpers, so tests exercise the same tensors the trainer will produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from .config import FCLMConfig
from .inputs import IGNORE_INDEX, FCLMInputs
from .llm import add_fclm_tokens
from .vision import mask_to_sam_frame, to_sam_frame

QWEN_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def build_tiny_tokenizer():
    """256 byte symbols, <|endoftext|> (256), Qwen's chat / vision specials (257-262), then FCLM's (263-265)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens(list(QWEN_SPECIALS), special_tokens=True)
    add_fclm_tokens(tokenizer)
    return tokenizer


@dataclass
class ToySample:
    """One conversation row. Masks are (H, W) bool at the image's resolution, in placeholder order."""

    turns: list[tuple[str, str]]  #: (role, content) with <image>, <region>, [SEG] placeholders
    image: np.ndarray  #: (H, W, 3) uint8 RGB
    region_masks: list[np.ndarray] = field(default_factory=list)  #: one per <region>
    seg_masks: list[np.ndarray] = field(default_factory=list)  #: one per [SEG]


def make_image_processor(cfg: FCLMConfig):
    """Qwen2-VL image processor that keeps an image already resized to ``cfg.image_long_side``."""
    from transformers import Qwen2VLImageProcessor

    side, llm = cfg.image_long_side, cfg.llm
    factor = llm.patch_size * llm.spatial_merge_size
    return Qwen2VLImageProcessor(
        min_pixels=factor * factor * 4, max_pixels=(side + factor) ** 2, patch_size=llm.patch_size,
        merge_size=llm.spatial_merge_size, temporal_patch_size=llm.temporal_patch_size,
    )  # fmt: skip


def resize_long_side(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def encode_turns(tokenizer, turns: list[tuple[str, str]], n_image_tokens: int, region_text: str):
    """ChatML ids and labels (assistant content and its <|im_end|> supervised)."""
    image_text = "<|vision_start|>" + "<|image_pad|>" * n_image_tokens + "<|vision_end|>"
    ids: list[int] = []
    labels: list[int] = []
    for role, content in turns:
        text = content.replace("<image>", image_text).replace("<region>", region_text)
        head = tokenizer.encode(f"<|im_start|>{role}\n", add_special_tokens=False)
        body = tokenizer.encode(f"{text}<|im_end|>", add_special_tokens=False)
        tail = tokenizer.encode("\n", add_special_tokens=False)
        ids += head + body + tail
        supervised = role == "assistant"
        labels += [IGNORE_INDEX] * len(head) + (body if supervised else [IGNORE_INDEX] * len(body))
        labels += [IGNORE_INDEX] * len(tail)
    return ids, labels


def make_inputs(
    samples: list[ToySample], tokenizer, cfg: FCLMConfig, pairs: list[tuple[int, int]] = (), seed: int = 0,
    token_map: dict[int, int] | None = None,
) -> FCLMInputs:  # fmt: skip
    """Collate toy samples into :class:`FCLMInputs` (right padding, SAM frame at ``cfg.image_long_side``).

    ``pairs`` are (region occurrence, [SEG] occurrence) indexes; ``token_map`` rewrites token ids afterwards
    (the benchmark maps the tiny tokenizer's special ids onto the real Qwen ids).
    """
    side, merge = cfg.image_long_side, cfg.llm.spatial_merge_size
    processor = make_image_processor(cfg)
    images = [resize_long_side(s.image, side) for s in samples]
    vision = processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
    grids = vision["image_grid_thw"]  # (B, 3)
    rows = [
        encode_turns(tokenizer, s.turns, int(g.prod()) // merge**2, cfg.region_token_text)
        for s, g in zip(samples, grids)
    ]
    T = max(len(ids) for ids, _ in rows)
    pad = cfg.llm.pad_token_id if token_map else tokenizer.pad_token_id
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), T), dtype=torch.long)
    for b, (ids, lab) in enumerate(rows):
        input_ids[b, : len(ids)], labels[b, : len(ids)], attention[b, : len(ids)] = (
            torch.tensor(ids), torch.tensor(lab), 1)  # fmt: skip
    if token_map:
        input_ids = _remap(input_ids, token_map)
        labels = _remap(labels, token_map)
    frames = [to_sam_frame(s.image, side) for s in samples]
    region_b = [b for b, s in enumerate(samples) for _ in s.region_masks]
    seg_b = [b for b, s in enumerate(samples) for _ in s.seg_masks]
    return FCLMInputs(
        input_ids=input_ids, attention_mask=attention, labels=labels,
        pixel_values=vision["pixel_values"], image_grid_thw=grids,
        mm_token_type_ids=(input_ids == cfg.llm.image_token_id).int(),
        sam_images=torch.stack([f[0] for f in frames]),
        sam_input_sizes=torch.tensor([f[1] for f in frames], dtype=torch.long),
        original_sizes=torch.tensor([s.image.shape[:2] for s in samples], dtype=torch.long),
        region_masks=_stack_masks([m for s in samples for m in s.region_masks], side),
        region_batch_index=torch.tensor(region_b, dtype=torch.long),
        seg_masks=_stack_masks([m for s in samples for m in s.seg_masks], side),
        seg_batch_index=torch.tensor(seg_b, dtype=torch.long),
        consistency_pairs=torch.tensor(list(pairs), dtype=torch.long).view(-1, 2),
        seed=seed,
    )  # fmt: skip


def _stack_masks(masks: list[np.ndarray], side: int) -> torch.Tensor:
    if not masks:
        return torch.zeros(0, side, side, dtype=torch.bool)
    return torch.stack([mask_to_sam_frame(m, side) for m in masks])


def _remap(ids: torch.Tensor, token_map: dict[int, int]) -> torch.Tensor:
    out = ids.clone()
    for old, new in token_map.items():
        out[ids == old] = new
    return out


def tiny_token_map(tokenizer, cfg: FCLMConfig) -> dict[int, int]:
    """Map the tiny tokenizer's special ids onto ``cfg.llm``'s (identity for the tiny preset)."""
    llm = cfg.llm
    names = {"<|endoftext|>": llm.pad_token_id, "<|im_end|>": llm.eos_token_id, "<|image_pad|>": llm.image_token_id,
             "<|video_pad|>": llm.video_token_id, "<|vision_start|>": llm.vision_start_token_id,
             "<|vision_end|>": llm.vision_end_token_id, "<mask>": llm.mask_token_id, "<pos>": llm.pos_token_id,
             "[SEG]": llm.seg_token_id, "<|im_start|>": llm.eos_token_id - 1}  # fmt: skip
    return {tokenizer.convert_tokens_to_ids(tok): new for tok, new in names.items()}


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W) bool mask with the box [x0, y0, x1) x [y0, y1) set."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
