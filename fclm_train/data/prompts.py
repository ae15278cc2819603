"""Region input masks for the four visual prompts of the schema (``visual_prompt``: mask | box | point | scribble).

The extractor always receives a binary mask; how much of the region it reveals depends on the prompt:

* ``mask`` -- the region's mask.
* ``box`` -- the filled box ``regions[i].bbox``.
* ``point`` -- a disc around each of ``regions[i].points`` (``fclm-data build --visual-prompt point`` writes the
  mask pixel nearest the centroid; around one seeded foreground pixel when a sample carries no points).
* ``scribble`` -- a polyline through ``regions[i].points`` (the builder writes 8 mask pixels top to bottom;
  through three seeded foreground pixels, ordered along the region's long axis, when there are none), drawn thick and clipped to the region (the region itself when
  the clipped stroke is empty), so a scribble never marks background.

A prompt that would be empty on the frame (a point outside the image) falls back to the region's mask.

Everything is drawn on the SAM frame (``side x side``, the image resized by ``scale`` = (x, y) factors, each axis
by its own rounded size as SAM's ``ResizeLongestSide.apply_coords``), so a disc has the same size whatever the
original resolution. The seeded choices hash ``(key, region index)``: a sample always gets
the same prompt, epoch after epoch and after a resume.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image, ImageDraw

#: Disc radius and stroke width as a fraction of the frame side (10 px and 8 px at 1024).
POINT_RADIUS = 0.01
STROKE_WIDTH = 0.008


def prompt_mask(
    kind: str, mask_frame: torch.Tensor, region: dict, key: str, index: int, scale: tuple[float, float], side: int
) -> torch.Tensor:  # fmt: skip
    """The (side, side) bool input mask of region ``index`` for prompt ``kind``.

    Args:
        kind: the sample's ``visual_prompt``.
        mask_frame: (side, side) bool, the region's mask on the SAM frame.
        region: the schema region (``bbox`` [x0, y0, x1, y1] and ``points`` [[x, y], ...] in original pixels).
        key, index: seed the derived points.
        scale: (x, y) factors from original pixels to frame pixels (``vision.frame_scale``).
    """
    if kind == "mask":
        return mask_frame
    if kind == "box":
        return _box(region["bbox"], scale, side)
    sx, sy = scale
    points = [(x * sx, y * sy) for x, y in region.get("points") or []]
    if kind == "point":
        drawn = _draw(side, points or _seeded_points(mask_frame, key, index, 1), stroke=False)
    elif kind == "scribble":
        drawn = _draw(side, points or _seeded_points(mask_frame, key, index, 3), stroke=True) & mask_frame
    else:
        raise ValueError(f"unknown visual_prompt {kind!r}")
    return drawn if drawn.any() else mask_frame  # e.g. a point outside the image


def _box(bbox: list[float], scale: tuple[float, float], side: int) -> torch.Tensor:
    left, top, right, bottom = box_on_frame(bbox, scale)
    out = torch.zeros(side, side, dtype=torch.bool)
    out[top:bottom, left:right] = True
    return out


def box_on_frame(bbox: list[float], scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1] in original pixels -> (left, top, right, bottom) frame pixels, at least one pixel."""
    sx, sy = scale
    x0, y0, x1, y1 = bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy
    left, top = int(np.floor(x0)), int(np.floor(y0))
    return left, top, max(left + 1, int(np.ceil(x1))), max(top + 1, int(np.ceil(y1)))


def _seeded_points(mask_frame: torch.Tensor, key: str, index: int, n: int) -> list[tuple[float, float]]:
    """``n`` foreground pixels chosen by a hash of (key, index), ordered along the region's long axis."""
    ys, xs = mask_frame.nonzero(as_tuple=True)
    if len(ys) == 0:
        raise ValueError(f"{key}: region {index} is empty on the frame")
    digest = hashlib.blake2b(f"{key}/{index}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
    points = [(float(xs[i]) + 0.5, float(ys[i]) + 0.5) for i in pick]
    wide = float(xs.max() - xs.min()) >= float(ys.max() - ys.min())
    return sorted(points, key=lambda p: p[0] if wide else p[1])


def _draw(side: int, points: list[tuple[float, float]], stroke: bool) -> torch.Tensor:
    canvas = Image.new("1", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    radius = max(1.0, POINT_RADIUS * side)
    if stroke and len(points) > 1:
        draw.line(points, fill=1, width=max(1, round(STROKE_WIDTH * side)), joint="curve")
    for x, y in points if not stroke or len(points) == 1 else []:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)
    return torch.from_numpy(np.array(canvas, dtype=bool))
