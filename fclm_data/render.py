"""PNG overlays for people: the image with every region outlined and numbered, the conversation beside.

Region colours are fixed per index; ``<region>`` inputs are drawn solid, ``[SEG]`` targets dashed
in the text legend so a reader can check that each placeholder points at the right object.
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


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask whose 4-neighbourhood leaves the mask."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay(image: Image.Image, sample: dict) -> Image.Image:
    """Image with translucent region fills, outlines and index labels."""
    base = image.convert("RGB")
    pixels = np.asarray(base).astype(np.float32)
    for i, region in enumerate(sample["regions"]):
        mask = decode_rle(region["mask"]).astype(bool)
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        pixels[mask] = 0.65 * pixels[mask] + 0.35 * colour
        edge = _outline(mask)
        for dy, dx in ((0, 0), (0, 1), (1, 0)):
            pixels[np.roll(edge, (dy, dx), (0, 1))] = colour
    result = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    for i, region in enumerate(sample["regions"]):
        x0, y0 = region["bbox"][:2]
        draw.rectangle([x0, y0, x0 + 14, y0 + 12], fill=PALETTE[i % len(PALETTE)])
        draw.text((x0 + 3, y0), str(i), fill=(255, 255, 255))
    return result


def _panel_lines(sample: dict) -> list[tuple[str, tuple[int, int, int]]]:
    lines: list[tuple[str, tuple[int, int, int]]] = [
        (f"{sample['key']}  [{sample['source']} / {sample['task']}]", (0, 0, 0)),
        (f"image {sample['image']['width']}x{sample['image']['height']}  {sample['image']['file_name']}", (90, 90, 90)),
    ]
    views = [("", sample)] + ([("pair (DL-RES view)", sample["pair"])] if sample.get("pair") else [])
    for title, view in views:
        if title:
            lines.append(("", (0, 0, 0)))
            lines.append((title, (0, 0, 160)))
        lines.append((f"region_inputs={view['region_inputs']}  seg_targets={view['seg_targets']}", (90, 90, 90)))
        for turn in view["conversations"]:
            colour = (0, 90, 0) if turn["role"] == "assistant" else (0, 0, 0)
            for k, chunk in enumerate(textwrap.wrap(f"{turn['role']}: {turn['content']}", 78) or [""]):
                lines.append((("   " if k else "") + chunk, colour))
    for i, region in enumerate(sample["regions"]):
        label = region.get("label") or ""
        lines.append((f"region {i}: {label} bbox={[round(v) for v in region['bbox']]}", PALETTE[i % len(PALETTE)]))
    return lines


def render_sample(image_bytes: bytes, sample: dict) -> Image.Image:
    """Side-by-side overlay and text panel."""
    image = overlay(Image.open(io.BytesIO(image_bytes)), sample)
    scale = min(1.0, MAX_SIDE / max(image.size))
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    lines = _panel_lines(sample)
    height = max(image.height, 14 * len(lines) + 20)
    canvas = Image.new("RGB", (image.width + PANEL_WIDTH, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for n, (text, colour) in enumerate(lines):
        draw.text((image.width + 10, 10 + 14 * n), text, fill=colour, font=font)
    return canvas


def render_to(directory: Path, image_bytes: bytes, sample: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{sample['key']}.png"
    render_sample(image_bytes, sample).save(path)
    return path
