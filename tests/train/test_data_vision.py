"""Image and mask tensors: equal to the Qwen2-VL processor and to the model's SAM-frame helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fclm_train.data.vision import (
    image_token_count,
    jpeg_frame,
    mask_to_frame,
    open_image,
    qwen_grid_size,
    qwen_patches,
    resize,
    sam_frame,
    smart_resize,
)  # fmt: skip
from fclm_train.model import FCLMConfig
from fclm_train.model.testing import make_image_processor
from fclm_train.model.vision import mask_to_sam_frame, to_sam_frame

SIZES = [(480, 640, 1024), (240, 320, 64), (333, 517, 1024), (1000, 37, 64)]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("H,W,side", SIZES[:3])
def test_qwen_patches_equal_the_processor(H, W, side):
    """Same resized pixels in -> the processor's exact patch layout, grid and normalisation out."""
    image = torch.from_numpy(_image(H, W)).permute(2, 0, 1)
    processor = make_image_processor(FCLMConfig.preset("tiny", image_long_side=side))
    h, w = qwen_grid_size(H, W, side, 14, 2)
    reference = processor(images=[resize(image, (h, w), "bicubic")], return_tensors="pt")
    patches, grid = qwen_patches(image, (H, W), side, 14, 2, 2)
    assert [list(grid)] == reference["image_grid_thw"].tolist()
    assert patches.shape == reference["pixel_values"].shape
    torch.testing.assert_close(patches, reference["pixel_values"], atol=1e-5, rtol=0)
    assert image_token_count(H, W, side, 14, 2) == grid[1] * grid[2] // 4
    assert max(h, w) in range(side - 28, side + 29)  # long side ~ side, rounded to the 28-px merge grid


def test_smart_resize_is_the_processors():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as reference

    rng = np.random.default_rng(0)
    for h, w in [*rng.integers(1, 3000, (300, 2)).tolist(), (10, 1999), (1024, 1024), (28, 28)]:
        if max(h, w) / min(h, w) <= 200:
            for low, high in ((3136, 1052**2), (28 * 28 * 4, 92**2), (56 * 56, 14 * 14 * 4 * 1280)):
                assert smart_resize(h, w, 28, low, high) == tuple(reference(h, w, 28, low, high)), (h, w)


@pytest.mark.parametrize("H,W,side", SIZES + [(7, 9, 64)])
def test_mask_to_frame_equals_the_model_helper(H, W, side):
    rng = np.random.default_rng(H * W)
    for density in (0.5, 0.05):
        mask = np.asfortranarray(rng.random((H, W)) < density).astype(np.uint8)  # decode_rle's layout
        assert torch.equal(mask_to_frame(mask, side), mask_to_sam_frame(mask, side))


@pytest.mark.parametrize("H,W,side", SIZES[:3])
def test_sam_frame_matches_the_model_helper(H, W, side):
    pixels = _image(H, W, seed=1)
    frame, size = sam_frame(torch.from_numpy(pixels).permute(2, 0, 1), (H, W), side)
    reference, reference_size = to_sam_frame(pixels, side)
    assert size == reference_size and frame.shape == (3, side, side)
    assert (frame - reference).abs().max() < 0.02  # uint8 rounding of the resized pixels (< 1 grey level)
    assert torch.all(frame[:, size[0] :, :] == 0) and torch.all(frame[:, :, size[1] :] == 0)


def test_draft_decoding_reduces_large_jpegs_only():
    def jpeg(h: int, w: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(_image(h, w, seed=2)).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    big = jpeg(1800, 2400)
    drafted, original = open_image(big, 1024)
    full, _ = open_image(big, 1024, draft=False)
    assert original == (1800, 2400) and full.shape == (3, 1800, 2400)
    assert drafted.shape == (3, 900, 1200)  # 1/2 DCT scale: still >= the 768 x 1024 target
    a, _ = sam_frame(drafted, original, 1024)
    b, _ = sam_frame(full, original, 1024)
    assert (a - b).abs().mean() < 0.5  # noise image: drafting only changes fine detail
    small, _ = open_image(jpeg(480, 640), 1024)
    assert small.shape == (3, 480, 640)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_transparent_pngs_are_composited_onto_white_as_the_processor_does():
    from transformers.image_transforms import convert_to_rgb

    from fclm_train.infer.requests import load_image

    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 256, (24, 32, 4), dtype=np.uint8), "RGBA")
    la = rgba.convert("LA")
    palette = Image.fromarray(rng.integers(0, 8, (24, 32), dtype=np.uint8), "P")
    palette.putpalette(list(range(0, 256, 32)) * 3 * 32)
    palette.info["transparency"] = 2  # palette index 2 is see-through
    for image in (rgba, la, palette, rgba.convert("RGB")):
        expected = torch.from_numpy(convert_to_rgb(image, return_numpy=True)).permute(2, 0, 1)
        decoded, size = open_image(_png(image), 1024)
        assert size == (24, 32) and torch.equal(decoded, expected), image.mode
        assert torch.equal(load_image(image, 1024).pixels, expected)  # fclm-infer's PIL input
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert torch.all(open_image(_png(clear), 1024)[0] == 255)  # white, not black
    assert torch.all(load_image(np.asarray(clear), 1024).pixels == 255)  # an (H, W, 4) array input


@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 75, "subsampling": 0}, {"progressive": True}])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_full_size_jpeg_decoding_gives_pils_pixels(options, mode):
    """Full-size JPEGs are decoded by torchvision (no copies through PIL's tobytes): the pixels PIL gives."""
    buffer = io.BytesIO()
    Image.fromarray(_image(48, 80, seed=5)).convert(mode).save(buffer, format="JPEG", **options)
    decoded, size = open_image(buffer.getvalue(), 1024)
    expected = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert size == (48, 80) and np.array_equal(decoded.permute(1, 2, 0).numpy(), expected)
    with pytest.raises(OSError):
        open_image(buffer.getvalue()[: len(buffer.getvalue()) // 2], 1024)  # truncated: PIL's error


@pytest.mark.parametrize("options", [{"quality": 90}, {"progressive": True}, {"exif": b"Exif\x00\x00" + bytes(64)},
                                     {"icc_profile": bytes(3000)}, {"quality": 75, "subsampling": 0}])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_frame_reads_what_pil_reads(options, mode):
    """The marker scan that replaces PIL's parser on the loader's path: size and components as PIL has them."""
    buffer = io.BytesIO()
    Image.fromarray(_image(37, 91, seed=3)).convert(mode).save(buffer, format="JPEG", **options)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        assert jpeg_frame(data) == (image.height, image.width, len(image.getbands()))
    assert jpeg_frame(data[:20]) is None  # cut before the frame header: PIL decides
    assert jpeg_frame(_png(Image.new("RGB", (4, 4)))) is None and jpeg_frame(b"") is None
