"""Visual-prompt variants (beyond FCLM, after REF-VLM): present ``<region>`` inputs as a mask, box,
point or scribble, all derived from the region's mask so that any source supports every variant.

The sample records the variant in ``visual_prompt`` and the geometry in ``regions[i].points``
(``box`` uses ``regions[i].bbox``; ``mask`` uses the mask itself). Only regions that are inputs
(``<region>``) get points; ``[SEG]`` targets keep their masks as supervision in every variant.
Geometry is deterministic (no sampling): a rebuild gives the same bytes.
"""

from __future__ import annotations

import numpy as np

from fclm_data.masks import decode_rle
from fclm_data.schema import Sample

#: Points along a scribble (one per horizontal band of the mask).
SCRIBBLE_POINTS = 8


def interior_point(mask: np.ndarray) -> list[float]:
    """The mask pixel nearest the mask's centroid (the centroid itself may fall outside a concave mask)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return [float(xs[i]) + 0.5, float(ys[i]) + 0.5]


def scribble(mask: np.ndarray, n: int = SCRIBBLE_POINTS) -> list[list[float]]:
    """A top-to-bottom polyline inside the mask: per band, the mask pixel nearest the band's median x."""
    ys, xs = np.nonzero(mask)
    bands = np.linspace(ys.min(), ys.max() + 1, num=min(n, ys.max() - ys.min() + 1) + 1)
    points = []
    for top, bottom in zip(bands[:-1], bands[1:]):
        rows = (ys >= top) & (ys < bottom)
        if not rows.any():
            continue
        bx, by = xs[rows], ys[rows]
        mid_y = (top + bottom) / 2
        i = int(np.argmin((bx - np.median(bx)) ** 2 + (by - mid_y) ** 2))
        points.append([float(bx[i]) + 0.5, float(by[i]) + 0.5])
    return points


def input_regions(sample: Sample) -> list[int]:
    views = [sample] + ([sample.pair] if sample.pair is not None else [])
    return sorted({i for view in views for i in view.region_inputs})


def apply_visual_prompt(sample: Sample, mode: str) -> Sample:
    """Record ``mode`` and fill ``points`` of every input region (in place; returns the sample)."""
    sample.visual_prompt = mode
    if mode not in ("point", "scribble"):
        return sample
    for i in input_regions(sample):
        region = sample.regions[i]
        mask = decode_rle(region.mask).astype(bool)
        region.points = [interior_point(mask)] if mode == "point" else scribble(mask)
    return sample
