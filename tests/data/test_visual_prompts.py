"""Visual-prompt variants derived from masks: recorded in the sample, geometry inside the region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_samples

from fclm_data.masks import decode_rle
from fclm_data.visual_prompts import interior_point, scribble


def _inside(mask: np.ndarray, point: list[float]) -> bool:
    return bool(mask[int(point[1]), int(point[0])])


def test_interior_point_of_a_concave_mask() -> None:
    ring = np.zeros((50, 50), bool)
    ring[10:40, 10:40] = True
    ring[18:32, 18:32] = False  # the centroid lies in the hole
    point = interior_point(ring)
    assert _inside(ring, point)
    centroid = (np.nonzero(ring)[1].mean(), np.nonzero(ring)[0].mean())
    assert not ring[int(centroid[1]), int(centroid[0])]


def test_scribble_runs_top_to_bottom_inside() -> None:
    mask = np.zeros((60, 40), bool)
    mask[5:55, 10:30] = True
    points = scribble(mask)
    assert len(points) == 8 and all(_inside(mask, p) for p in points)
    assert [p[1] for p in points] == sorted(p[1] for p in points)


@pytest.mark.parametrize("mode", ["box", "point", "scribble"])
def test_build_records_the_variant(mode: str, data_root: Path, tmp_path: Path) -> None:
    build(["dam_mapillary", "refcoco"], data_root, tmp_path, options=_options(mode))
    for sample, _, _ in read_samples(tmp_path).values():
        assert sample["visual_prompt"] == mode
        inputs = set(sample["region_inputs"])
        for i, region in enumerate(sample["regions"]):
            if i not in inputs or mode == "box":
                assert region["points"] == []
                continue
            mask = decode_rle(region["mask"]).astype(bool)
            assert len(region["points"]) == (1 if mode == "point" else len(region["points"])) >= 1
            assert all(_inside(mask, p) for p in region["points"])


def _options(mode: str):
    from fclm_data.sources import BuildOptions

    return BuildOptions(visual_prompt=mode)
