"""Mask conversions: every release's mask encoding -> one COCO compressed RLE with ASCII counts.

Releases use polygons (RefCOCO*, MUSE, Osprey), uncompressed RLE (counts as a list), compressed
RLE (PACO, GranD-f, DAM) and panoptic PNG ids (Pix2Cap). We normalise all of them to
``{"size": [h, w], "counts": "<ascii>"}`` so the trainer has one decoder, and we check every mask
against the image grid it belongs to. Failures raise :class:`~fclm_data.errors.Reject`.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from fclm_data.errors import Reject

RLE = dict  # {"size": [h, w], "counts": str}


def encode_mask(mask: np.ndarray) -> RLE:
    """Binary (H, W) array -> compressed RLE with ASCII counts."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    fortran = np.asfortranarray(mask.astype(np.uint8, copy=False) > 0, dtype=np.uint8)
    return _to_ascii(mask_utils.encode(fortran))


def decode_rle(rle: RLE) -> np.ndarray:
    """Compressed RLE (str or bytes counts) -> (H, W) uint8 array of {0, 1} (trusted RLEs; see check_rle)."""
    counts = rle["counts"]
    coco = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(coco)


def _to_ascii(rle: dict) -> RLE:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def polygons_to_rle(polygons: Any, height: int, width: int) -> RLE:
    """COCO polygon list ``[[x1, y1, x2, y2, ...], ...]`` -> the union of the polygons as one RLE.

    pycocotools reads a 4-number "polygon" as a box, so polygons of fewer than 3 points are
    rejected here instead of being silently rasterised as rectangles.
    """
    if not isinstance(polygons, list) or not polygons:
        raise Reject("bad_polygon", f"expected a non-empty list of polygons, got {type(polygons).__name__}")
    cleaned = []
    for i, poly in enumerate(polygons):
        try:  # one C-level conversion instead of a Python check per coordinate
            coords = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise Reject("bad_polygon", f"polygon {i} is not a flat list of numbers") from exc
        if coords.ndim != 1 or not np.isfinite(coords).all():
            raise Reject("bad_polygon", f"polygon {i} is not a flat list of finite numbers")
        if len(coords) % 2 or len(coords) < 6:
            raise Reject("bad_polygon", f"polygon {i} has {len(coords)} coordinates (needs >= 3 points, even count)")
        _check_window(coords[0::2], coords[1::2], height, width, f"polygon {i}")
        cleaned.append(coords.tolist())
    rles = mask_utils.frPyObjects(cleaned, height, width)
    return _to_ascii(mask_utils.merge(rles) if len(rles) > 1 else rles[0])


#: How far (in image sizes) a coordinate may lie outside the image. pycocotools rasterises polygons
#: on a 5x grid in 32-bit ints: coordinates around 1e9 crash the process (SIGSEGV), and a far-away
#: vertex costs time and memory along its whole edge. Real annotations overshoot by a few pixels.
COORD_WINDOW = 1.0


def _check_window(xs: np.ndarray, ys: np.ndarray, height: int, width: int, what: str) -> None:
    """Reject coordinates further than COORD_WINDOW image sizes outside the image (before pycocotools)."""
    if height <= 0 or width <= 0:
        raise Reject("malformed_annotation", f"{what}: image size {height}x{width} is not positive")
    lo_x, hi_x = -COORD_WINDOW * width, (1 + COORD_WINDOW) * width
    lo_y, hi_y = -COORD_WINDOW * height, (1 + COORD_WINDOW) * height
    if xs.min() < lo_x or xs.max() > hi_x or ys.min() < lo_y or ys.max() > hi_y:
        raise Reject(
            "bad_polygon",
            f"{what} has coordinates outside x in [{lo_x:g}, {hi_x:g}], y in [{lo_y:g}, {hi_y:g}] "
            f"(x {xs.min():g}..{xs.max():g}, y {ys.min():g}..{ys.max():g}) for a {width}x{height} image",
        )


def _check_uncompressed(counts: list, height: int, width: int) -> list[int]:
    """Uncompressed RLE counts must be non-negative ints that tile h*w (pycocotools trusts them)."""
    if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts):
        raise Reject("malformed_annotation", "uncompressed RLE counts are not all integers")
    runs = [int(c) for c in counts]
    if any(c < 0 for c in runs) or sum(runs) != height * width:
        raise Reject("malformed_annotation", f"uncompressed RLE counts do not tile the declared size {[height, width]}")
    return runs


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """Any pycocotools segmentation form -> compressed RLE on the (height, width) grid.

    Accepts a polygon list, an uncompressed RLE (``counts`` list) or a compressed RLE (``counts``
    str/bytes). An RLE whose ``size`` differs from the image raises ``mask_size_mismatch``.
    """
    if isinstance(segmentation, list):
        if segmentation and isinstance(segmentation[0], dict):  # list of RLEs (gRefCOCO style)
            return merge_rles([segmentation_to_rle(s, height, width) for s in segmentation])
        return polygons_to_rle(segmentation, height, width)
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise Reject("malformed_annotation", f"segmentation is neither polygons nor RLE: {str(segmentation)[:80]}")
    size = segmentation["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) for v in size):
        raise Reject("malformed_annotation", f"RLE size {str(size)[:40]} is not [height, width] integers")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise Reject("mask_size_mismatch", f"RLE size {size} != image [h, w] [{height}, {width}]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        runs = _check_uncompressed(counts, height, width)
        return _to_ascii(mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width))
    if isinstance(counts, (str, bytes)):
        try:
            rle = _to_ascii({"size": [height, width], "counts": counts})
        except UnicodeDecodeError as exc:
            raise Reject("malformed_annotation", "RLE counts bytes are not ASCII") from exc
        _check_decodable(rle)
        return rle
    raise Reject("malformed_annotation", f"RLE counts of type {type(counts).__name__}")


def _is_int(value: Any) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        or (isinstance(value, float) and value.is_integer())
    )


def check_rle(rle: Any) -> RLE:
    """A compressed RLE read from an untrusted place (a shard): checked before any pycocotools call."""
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str):
        raise Reject("malformed_annotation", "mask is not an RLE with string counts")
    size = rle.get("size")
    if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) and v >= 0 for v in size):
        raise Reject("malformed_annotation", f"RLE size {str(size)[:40]} is not [height, width]")
    _check_decodable(rle)
    return rle


def _check_decodable(rle: RLE) -> None:
    """Reject compressed RLEs whose runs do not tile the declared h*w grid.

    pycocotools does not validate: a truncated counts string decodes to garbage (measured: a
    250-pixel mask cut by 3 characters decoded to 119,086 pixels), so we parse the runs ourselves.
    """
    h, w = rle["size"]
    runs = rle_runs(rle["counts"])
    if runs is None or (runs < 0).any() or int(runs.sum()) != h * w:
        raise Reject("malformed_annotation", f"RLE counts do not tile the declared size {[h, w]}")


def parse_rle_counts(counts: str) -> list[int] | None:
    """Decode COCO's compressed counts string (6-bit chars, 5 data bits, delta from run i-2).

    Returns None when the string ends inside a number or holds characters outside the alphabet.
    """
    runs = rle_runs(counts)
    return None if runs is None else runs.tolist()


#: a run length fits 12 characters (60 bits); a longer number is no RLE of any real image
_MAX_RUN_CHARS = 12


def rle_runs(counts: str | bytes) -> np.ndarray | None:
    """:func:`parse_rle_counts` vectorised: (R,) int64 run lengths, or None for a malformed string.

    COCO's ``rleFrString`` in numpy: a number is a group of characters whose 0x20 bit is set except on the last;
    each contributes 5 bits (little end first), the last one's 0x10 bit sign-extends, and from the third run on
    each value is a delta from the run two before (so odd and even runs are two cumulative sums). ~5x faster than
    pycocotools' decode plus a pack for the loader's masks, and it validates while it parses.
    """
    if isinstance(counts, str) and not counts.isascii():
        return None
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() >= 64 or c[-1] & 0x20:
        return None
    ends = np.flatnonzero((c & 0x20) == 0)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RUN_CHARS:
        return None
    shift = 5 * (np.arange(c.size) - np.repeat(starts, lengths))
    runs = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    runs[negative] -= np.left_shift(1, 5 * lengths[negative])
    runs[1::2] = np.cumsum(runs[1::2])  # run m += run m-2 for m > 2: runs 1, 3, 5, ... and 2, 4, 6, ...
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def merge_rles(rles: Sequence[RLE]) -> RLE:
    """Union of RLEs on the same grid."""
    if len(rles) == 1:
        return rles[0]
    coco = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return _to_ascii(mask_utils.merge(coco, intersect=False))


def rle_area(rle: RLE) -> int:
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def rle_bbox(rle: RLE) -> list[float]:
    """Tight box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of an RLE's foreground."""
    x, y, w, h = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()
    return [float(x), float(y), float(x + w), float(y + h)]


def box_to_rle(box_xyxy: Sequence[float], height: int, width: int) -> RLE:
    """Filled box -> RLE, rasterised the way pycocotools rasterises COCO boxes."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    _check_window(np.array([x0, x1]), np.array([y0, y1]), height, width, f"box {[x0, y0, x1, y1]}")
    rle = mask_utils.frPyObjects(np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64), height, width)[0]
    return _to_ascii(rle)


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def check_box(box_xyxy: Sequence[float], height: int, width: int) -> list[float]:
    """Clip a box to the image; reject boxes that are empty or lie entirely outside it."""
    if len(box_xyxy) != 4 or not all(isinstance(v, Real) for v in box_xyxy):
        raise Reject("malformed_annotation", f"box {list(box_xyxy)} is not 4 numbers")
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise Reject("malformed_annotation", f"box {[x0, y0, x1, y1]} has a non-finite coordinate")
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if not (cx1 - cx0 >= 1.0 and cy1 - cy0 >= 1.0):
        raise Reject("bbox_outside_image", f"box {[x0, y0, x1, y1]} is empty or outside the {width}x{height} image")
    return [cx0, cy0, cx1, cy1]


def nonempty_region_mask(rle: RLE, what: str) -> tuple[RLE, list[float]]:
    """Check a mask has foreground and return it with its tight box."""
    if rle_area(rle) == 0:
        raise Reject("empty_mask", f"{what} has no foreground pixel")
    return rle, rle_bbox(rle)
