"""Overlays for people: one view of a sample drawn as the model gets it, shared by ``inspect --render`` and
``fclm-data report``.

Per view (the conversation, or the DL-RES ``pair``), each region gets a fixed colour (``PALETTE[index]``):

* a ``<region>`` input is drawn as its *visual prompt* -- the binary mask the region extractor receives, computed by
  the trainer itself (``fclm_train.data.encode.RegionMasks`` -> ``fclm_train/data/prompts.py``) on the SAM frame
  and cropped back to the image; when the prompt is not the mask (box / point / scribble), the region's own mask
  is outlined dotted beside it;
* a ``[SEG]`` target is its mask, filled and outlined, with its box;
* a region the view does not mention is outlined only, and ignore pixels (ReasonSeg) are greyed.

The trainer's code needs torch (``pip install fclm[train]``); without it the prompts fall back to the region
masks and :func:`prompt_masks` says why, so fclm_data itself stays torch-free.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fclm_data.masks import decode_rle

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]  # fmt: skip
PANEL_WIDTH = 520
MAX_SIDE = 768
#: Fill opacity of prompts, targets and ignore pixels.
PROMPT_ALPHA, TARGET_ALPHA, IGNORE_ALPHA = 0.55, 0.35, 0.5


def colour(index: int) -> tuple[int, int, int]:
    """The colour of region ``index`` (text legends use the same one)."""
    return PALETTE[index % len(PALETTE)]


def colour_hex(index: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour(index))


def views(sample: dict) -> list[tuple[str, dict]]:
    """(title, view) for the conversation and, for a paired sample, its DL-RES view."""
    first = "DLC view (region -> caption)" if sample.get("pair") else "conversation"
    return [(first, sample)] + ([("DL-RES view (caption -> mask)", sample["pair"])] if sample.get("pair") else [])


def prompt_masks(sample: dict, indices: list[int]) -> tuple[dict[int, np.ndarray], str | None]:
    """Input mask of each region in ``indices`` as the extractor receives it, on the image part of the SAM frame.

    Returns ({index: (h, w) bool on the frame}, None), or ({}, reason) when the trainer's code is not importable.
    """
    if not indices:
        return {}, None
    try:
        from fclm_train.data.encode import EncoderConfig, RegionMasks
        from fclm_train.data.vision import frame_scale, long_side_size
    except ImportError as exc:
        return {}, f"visual prompts shown as region masks: the trainer's prompt drawing needs fclm[train] ({exc})"
    side = EncoderConfig().side
    height, width = sample["image"]["height"], sample["image"]["width"]
    frame_h, frame_w = long_side_size(height, width, side)
    meta = {**sample, "visual_prompt": sample.get("visual_prompt", "mask")}  # fclm-infer's overlays carry none
    masks = RegionMasks(meta, side, frame_scale(height, width, side))  # (x, y) factors, as the encoder passes them
    return {i: masks.prompt(i)[:frame_h, :frame_w].numpy() for i in indices}, None


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask whose 4-neighbourhood leaves the mask."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _thick(edge: np.ndarray) -> np.ndarray:
    out = edge.copy()
    out[1:, :] |= edge[:-1, :]
    out[:, 1:] |= edge[:, :-1]
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (width, height)."""
    if mask.shape[::-1] == tuple(size):
        return mask.astype(bool)
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127


def draw_view(
    image: Image.Image, sample: dict, view: dict, prompts: dict[int, np.ndarray], max_side: int
) -> Image.Image:
    """The image (long side at most ``max_side``) with ``view``'s prompts, targets, boxes and index tags."""
    base = image.convert("RGB")
    scale = min(1.0, max_side / max(base.size))
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    base = base.resize(size, Image.BILINEAR) if scale < 1.0 else base
    pixels = np.asarray(base).astype(np.float32)
    inputs, targets = set(view["region_inputs"]), set(view["seg_targets"])
    kind = sample.get("visual_prompt", "mask")
    dots = (np.add.outer(np.arange(size[1]), np.arange(size[0])) // 3) % 2 == 0

    def paint(mask: np.ndarray, rgb: np.ndarray, alpha: float) -> None:
        pixels[mask] = (1 - alpha) * pixels[mask] + alpha * rgb

    def edge(mask: np.ndarray, rgb: np.ndarray) -> None:
        """A 2-px outline in the region's colour on a light halo (visible on an object of the same colour)."""
        line = _thick(_outline(mask))
        paint(_dilate(line) & ~line, np.array([255, 255, 255], np.float32), 0.7)
        pixels[line] = rgb

    for i, region in enumerate(sample["regions"]):
        rgb = np.array(colour(i), dtype=np.float32)
        mask = _to_size(decode_rle(region["mask"]), size)
        if region.get("ignore"):
            paint(_to_size(decode_rle(region["ignore"]), size), np.array([128, 128, 128], np.float32), IGNORE_ALPHA)
        if i in inputs and i in prompts:
            shown = _to_size(prompts[i], size)
            paint(shown, rgb, PROMPT_ALPHA)
            edge(shown, rgb)
            if kind != "mask":
                pixels[_outline(mask) & dots] = rgb
        elif i in inputs or i in targets:
            paint(mask, rgb, PROMPT_ALPHA if i in inputs else TARGET_ALPHA)
            edge(mask, rgb)
        else:
            pixels[_outline(mask)] = rgb
    result = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    font = ImageFont.load_default()
    for i, region in enumerate(sample["regions"]):
        x0, y0, x1, y1 = (v * scale for v in region["bbox"])
        if i in targets or (i in inputs and kind == "box"):
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour(i), width=1)
        tag_x, tag_y = min(x0, size[0] - 15), min(y0, size[1] - 13)
        draw.rectangle([tag_x, tag_y, tag_x + 14, tag_y + 12], fill=colour(i))
        draw.text((tag_x + 3, tag_y), str(i), fill=(255, 255, 255), font=font)
    return result


def draw_views(image_bytes: bytes, sample: dict, max_side: int = MAX_SIDE) -> tuple[list[Image.Image], str | None]:
    """One drawn image per view of ``sample`` (two for a paired sample), and the note of :func:`prompt_masks`."""
    with Image.open(io.BytesIO(image_bytes)) as opened:
        image = opened.convert("RGB")
    drawn, note = [], None
    for _, view in views(sample):
        prompts, why = prompt_masks(sample, sorted(set(view["region_inputs"])))
        note = note or why
        drawn.append(draw_view(image, sample, view, prompts, max_side))
    return drawn, note


def _panel_lines(sample: dict, note: str | None) -> list[tuple[str, tuple[int, int, int]]]:
    lines: list[tuple[str, tuple[int, int, int]]] = [
        (f"{sample['key']}  [{sample['source']} / {sample['task']}]", (0, 0, 0)),
        (f"image {sample['image']['width']}x{sample['image']['height']}  {sample['image']['file_name']}", (90, 90, 90)),
        (f"visual prompt: {sample.get('visual_prompt', 'mask')}", (90, 90, 90)),
    ]
    if note:
        lines += [(chunk, (160, 0, 0)) for chunk in textwrap.wrap(note, 78)]
    for n, (title, view) in enumerate(views(sample)):
        if n:
            lines.append(("", (0, 0, 0)))
        lines.append((title, (0, 0, 160)))
        lines.append((f"region_inputs={view['region_inputs']}  seg_targets={view['seg_targets']}", (90, 90, 90)))
        for turn in view["conversations"]:
            tint = (0, 90, 0) if turn["role"] == "assistant" else (0, 0, 0)
            for k, chunk in enumerate(textwrap.wrap(f"{turn['role']}: {turn['content']}", 78) or [""]):
                lines.append((("   " if k else "") + chunk, tint))
    for i, region in enumerate(sample["regions"]):
        label = region.get("label") or ""
        lines.append((f"region {i}: {label} bbox={[round(v) for v in region['bbox']]}", colour(i)))
    return lines


def render_sample(image_bytes: bytes, sample: dict) -> Image.Image:
    """Every view's overlay side by side, the conversation(s) and region legend beside them."""
    drawn, note = draw_views(image_bytes, sample)
    lines = _panel_lines(sample, note)
    images_width = sum(im.width for im in drawn) + 8 * (len(drawn) - 1)
    height = max(max(im.height for im in drawn), 14 * len(lines) + 20)
    canvas = Image.new("RGB", (images_width + PANEL_WIDTH, height), (255, 255, 255))
    x = 0
    for im in drawn:
        canvas.paste(im, (x, 0))
        x += im.width + 8
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for n, (text, tint) in enumerate(lines):
        draw.text((images_width + 10, 10 + 14 * n), text, fill=tint, font=font)
    return canvas


def render_to(directory: Path, image_bytes: bytes, sample: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sample['key']}.png"
    render_sample(image_bytes, sample).save(path)
    return path
