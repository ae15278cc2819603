"""The shared overlay (``fclm_data.render``): a <region> input is drawn as the prompt the extractor receives
(box / point / scribble / mask, from the trainer's own RegionMasks), a [SEG] target as its mask; ``inspect --render``
and the report draw the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_samples
from PIL import Image
from typer.testing import CliRunner

from fclm_data.cli import app
from fclm_data.masks import decode_rle
from fclm_data.render import colour, draw_view, draw_views, prompt_masks, render_sample
from fclm_data.sources import BuildOptions

SOURCES = ["osprey_conversations", "dam_sam"]


@pytest.fixture(scope="module")
def builds(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    outs = {}
    for kind in ("mask", "box", "point", "scribble"):
        outs[kind] = tmp_path_factory.mktemp(kind)
        build(SOURCES, data_root, outs[kind], options=BuildOptions(visual_prompt=kind))
    return outs


def _input_sample(out: Path) -> tuple[dict, Image.Image, int]:
    """An osprey sample whose first input region leaves room between its mask and its box."""
    for sample, data, _ in sorted(read_samples(out).values(), key=lambda t: t[0]["key"]):
        if sample["source"] != "osprey_conversations":
            continue
        i = sample["region_inputs"][0]
        mask = decode_rle(sample["regions"][i]["mask"]).astype(bool)
        box = _box(sample["regions"][i]["bbox"], mask.shape)
        if (box & ~mask).sum() > 0.2 * box.sum():
            return sample, Image.open(io.BytesIO(data)).convert("RGB"), i
    raise AssertionError("no osprey sample with a non-rectangular input region")


def _box(bbox: list[float], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    x0, y0, x1, y1 = (round(v) for v in bbox)
    out[y0:y1, x0:x1] = True
    return out


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return mask


def _tinted(sample: dict, image: Image.Image, i: int) -> np.ndarray:
    """Pixels the overlay moved towards region i's colour."""
    prompts, note = prompt_masks(sample, [i])
    assert note is None
    drawn = np.asarray(draw_view(image, sample, sample, prompts, 10_000)).astype(float)
    plain = np.asarray(image).astype(float)
    target = np.array(colour(i), float)
    return np.linalg.norm(drawn - target, axis=2) < np.linalg.norm(plain - target, axis=2) - 20


def _untagged(sample: dict, i: int, shape: tuple[int, int]) -> np.ndarray:
    """Everywhere but region i's index tag (drawn at its box corner)."""
    out = np.ones(shape, bool)
    x0, y0 = (round(v) for v in sample["regions"][i]["bbox"][:2])
    out[max(0, y0 - 1) : y0 + 14, max(0, x0 - 1) : x0 + 16] = False
    return out


def test_box_prompt_fills_the_box_not_just_the_mask(builds: dict[str, Path]) -> None:
    sample, image, i = _input_sample(builds["box"])
    mask = decode_rle(sample["regions"][i]["mask"]).astype(bool)
    box = _box(sample["regions"][i]["bbox"], mask.shape)
    outside = box & ~mask
    assert _tinted(sample, image, i)[outside & _erode(box, 3) & _untagged(sample, i, mask.shape)].mean() > 0.99
    same, image_m, i_m = _input_sample(builds["mask"])
    assert same["key"] == sample["key"] and same["visual_prompt"] == "mask"
    gap = _erode(outside, 2) & _untagged(same, i_m, mask.shape)  # between mask and box, away from outlines and tag
    assert gap.any() and _tinted(same, image_m, i_m)[gap].mean() < 0.01  # a mask prompt leaves the gap alone


def test_point_and_scribble_prompts_mark_part_of_the_region(builds: dict[str, Path]) -> None:
    for kind in ("point", "scribble"):
        sample, image, i = _input_sample(builds[kind])
        mask = decode_rle(sample["regions"][i]["mask"]).astype(bool)
        tinted = _tinted(sample, image, i)
        strong = tinted & _erode(mask, 2) & _untagged(sample, i, mask.shape)  # not the dotted outline, not the tag
        assert 0 < strong[mask].sum() < 0.6 * mask.sum(), kind
        if kind == "point":  # the disc sits on the written point
            x, y = sample["regions"][i]["points"][0]
            ys, xs = np.nonzero(strong & mask)
            assert abs(xs.mean() - x) < 4 and abs(ys.mean() - y) < 4


def test_prompt_masks_match_the_box_on_the_original_grid(builds: dict[str, Path]) -> None:
    """The frame crop and scale: the box prompt, brought back to the image, is the region's box."""
    sample, _, i = _input_sample(builds["box"])
    prompts, _ = prompt_masks(sample, [i])
    h, w = sample["image"]["height"], sample["image"]["width"]
    back = np.asarray(Image.fromarray(prompts[i].astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    box = _box(sample["regions"][i]["bbox"], (h, w))
    assert (back & box).sum() / (back | box).sum() > 0.95


def test_paired_samples_draw_both_views(builds: dict[str, Path]) -> None:
    sample, data, _ = next(t for t in read_samples(builds["point"]).values() if t[0]["pair"] is not None)
    drawn, note = draw_views(data, sample)
    assert note is None and len(drawn) == 2
    region = sample["pair"]["seg_targets"][0]
    mask = decode_rle(sample["regions"][region]["mask"]).astype(bool)
    target = np.array(colour(region), float)
    dlc, dlres = (np.linalg.norm(np.asarray(d).astype(float) - target, axis=2) for d in drawn)
    assert (dlres[mask] < dlc[mask]).mean() > 0.5  # the DL-RES view fills the whole target, the DLC view a point
    assert render_sample(data, sample).width > drawn[0].width * 2


def test_inspect_render_draws_the_prompt(builds: dict[str, Path], tmp_path: Path) -> None:
    sample, image, i = _input_sample(builds["box"])
    shard = builds["box"] / "shard-000000.tar"
    result = CliRunner().invoke(app, ["inspect", str(shard), "--render", str(tmp_path), "-n", "0"])
    assert result.exit_code == 0, result.output
    png = np.asarray(Image.open(tmp_path / f"{sample['key']}.png").convert("RGB"))
    prompts, _ = prompt_masks(sample, [i])
    expected = np.asarray(draw_view(image, sample, sample, prompts, 768))
    assert np.array_equal(png[: expected.shape[0], : expected.shape[1]], expected)  # the same drawing, one place
