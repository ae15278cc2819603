"""The device step (``device.py``) against the CPU path (``vision.py`` / ``RegionMasks``): images of several sizes
and aspect ratios, every prompt kind, ignore masks, paired rows, JPEG decoding in the worker or in the step."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fclm_data.masks import encode_mask
from fclm_train.data.collate import collate
from fclm_train.data.device import pack_mask, pack_rle, unpack_masks
from fclm_train.data.encode import Encoder, EncoderConfig, RegionMasks, image_tensors
from fclm_train.data.vision import QWEN_STD, SAM_STD, frame_scale, open_image
from fclm_train.model.vision import to_sam_frame

#: Measured tolerances of the device step vs the CPU path, in grey levels (uniform noise: the worst case).
QWEN_LEVELS, SAM_LEVELS = 2, 1
QWEN_ATOL = QWEN_LEVELS / 255 / min(QWEN_STD) + 1e-5
SAM_ATOL = SAM_LEVELS / min(SAM_STD) + 1e-4

# (H, W, side, format): COCO size, SA-1B size (drafted to 1/2), odd sizes, extreme aspect ratios, tiny
CASES = [(480, 640, 1024, "JPEG"), (1536, 2048, 1024, "JPEG"), (333, 517, 256, "PNG"), (37, 1000, 64, "PNG"),
         (1000, 37, 64, "PNG"), (9, 7, 64, "PNG")]  # fmt: skip


def encoded_image(h: int, w: int, fmt: str, seed: int) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue(), pixels


def region(mask: np.ndarray, ignore: np.ndarray | None = None, points=None) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return {"mask": encode_mask(mask), "bbox": bbox, "label": None, "caption": None, "box_only": False,
            "ignore": None if ignore is None else encode_mask(ignore), "points": points or []}  # fmt: skip


def raw_sample(h: int, w: int, fmt: str, prompt: str, seed: int, paired: bool = True) -> dict:
    """A schema sample: a big region (with an ignore area), a one-pixel region (vanishes on small frames)."""
    data, _ = encoded_image(h, w, fmt, seed)
    rng = np.random.default_rng(seed + 1)
    big = np.zeros((h, w), dtype=bool)
    big[h // 4 : max(h // 4 + 1, 3 * h // 4), w // 3 : max(w // 3 + 1, 5 * w // 6)] = True
    big &= rng.random((h, w)) < 0.9
    ignore = np.zeros((h, w), dtype=bool)
    ignore[: max(1, h // 5), : max(1, w // 5)] = True
    dot = np.zeros((h, w), dtype=bool)
    dot[h - 1, w - 1] = True
    ys, xs = np.nonzero(big)
    points = [[float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5]] if prompt == "point" else None
    regions = [region(big, ignore, points), region(dot)]
    dlc = {"conversations": [{"role": "user", "content": "<image>\nWhat are <region> and <region>?"},
                             {"role": "assistant", "content": "Noise."}], "region_inputs": [0, 1], "seg_targets": []}
    dlres = {"conversations": [{"role": "user", "content": "<image>\nSegment the noise."},
                               {"role": "assistant", "content": "[SEG] and [SEG]."}], "region_inputs": [],
             "seg_targets": [0, 1]}  # fmt: skip
    meta = {"key": f"k-{seed}", "source": "test", "image": {"height": h, "width": w}, "regions": regions,
            "visual_prompt": prompt, **dlc, "pair": dlres if paired else None}  # fmt: skip
    return {"json": json.dumps(meta).encode(), "jpg" if fmt == "JPEG" else "png": data}


def reference(raw: dict, config: EncoderConfig) -> dict:
    """Today's CPU path, one image at a time: ``image_tensors`` and ``RegionMasks``."""
    meta = json.loads(raw["json"])
    pixels, original = open_image(raw.get("jpg", raw.get("png")), config.side, config.draft)
    patches, grid, frame, size = image_tensors(pixels, original, config)
    masks = RegionMasks(meta, config.side, frame_scale(*original, config.side))
    views = [meta] + ([meta["pair"]] if meta["pair"] else [])
    return {"patches": patches, "grid": grid, "frame": frame, "size": size, "pixels": pixels,
            "regions": [masks.prompt(i) for v in views for i in v["region_inputs"]],
            "segs": [masks.target(i) for v in views for i in v["seg_targets"]],
            "ignore": [masks.ignore(i) for v in views for i in v["seg_targets"]], "rows": len(views)}  # fmt: skip


def device_step(raws: list[dict], tokenizer, config: EncoderConfig, device: str = "cpu"):
    encoder = Encoder(tokenizer, config)
    samples = [encoder(raw) for raw in raws]
    assert all(s is not None for s in samples), encoder.skipped
    return collate(samples, tokenizer.pad_token_id, 261, config=config).prepare(device)


def assert_close_levels(ours: torch.Tensor, ref: torch.Tensor, atol: float, what: str, share: float = 0.07) -> None:
    """At most ``atol`` apart, and apart at all on under ``share`` of the values."""
    diff = (ours.cpu() - ref).abs()
    assert float(diff.max()) <= atol, f"{what}: max {float(diff.max()):.4f} > {atol:.4f}"
    assert float((diff > 1e-4).float().mean()) < share, f"{what}: {float((diff > 1e-4).float().mean()):.3f} differ"


@pytest.mark.parametrize("H,W,side,fmt", CASES)
@pytest.mark.parametrize("prompt", ["mask", "box", "point", "scribble"])
def test_device_step_equals_the_cpu_path(H, W, side, fmt, prompt, tiny_tokenizer):
    config = EncoderConfig(side=side)
    raws = [raw_sample(H, W, fmt, prompt, seed=1), raw_sample(W, H, fmt, prompt, seed=2, paired=False)]
    inputs = device_step(raws, tiny_tokenizer, config)
    refs = [reference(raw, config) for raw in raws]
    row_of_image = [0, 2]
    offset = 0
    for ref, row in zip(refs, row_of_image):
        n = ref["patches"].shape[0]
        assert inputs.image_grid_thw[row].tolist() == list(ref["grid"])
        assert_close_levels(inputs.pixel_values[offset : offset + n], ref["patches"], QWEN_ATOL, "qwen")
        offset += n * ref["rows"]
        assert inputs.sam_input_sizes[row].tolist() == list(ref["size"])
        # a float pass rounded vs the uint8 kernel's fixed point: 1 level on up to ~20 % of the pixels
        assert_close_levels(inputs.sam_images[row], ref["frame"], SAM_ATOL, "sam", share=0.25)
        h, w = ref["size"]
        assert torch.all(inputs.sam_images[row, :, h:] == 0) and torch.all(inputs.sam_images[row, :, :, w:] == 0)
        # within the tolerance segment-anything's float preprocessing is held to (test_data_vision)
        sam_float, _ = to_sam_frame(ref["pixels"].permute(1, 2, 0).numpy(), side)
        assert float((inputs.sam_images[row] - sam_float).abs().max()) < 0.02
    assert torch.equal(inputs.sam_images[0], inputs.sam_images[1])  # the paired rows share the image
    assert torch.equal(inputs.region_masks, torch.stack([m for ref in refs for m in ref["regions"]]))
    assert torch.equal(inputs.seg_masks, torch.stack([m for ref in refs for m in ref["segs"]]))
    empty = torch.zeros(side, side, dtype=torch.bool)
    ignore = [empty if m is None else m for ref in refs for m in ref["ignore"]]
    assert inputs.seg_ignore is not None and torch.equal(inputs.seg_ignore, torch.stack(ignore))
    assert inputs.region_masks.flatten(1).any(1).all()  # the one-pixel region keeps its centre pixel


def test_jpeg_decoded_by_the_step_matches_the_worker_decode(tiny_tokenizer):
    """``jpeg_decode="device"``: bytes cross to the step (here decoded by libjpeg-turbo on the CPU, nvJPEG on CUDA)."""
    for H, W in ((480, 640), (1536, 2048)):
        raws = [raw_sample(H, W, "JPEG", "mask", seed=3)]
        worker = device_step(raws, tiny_tokenizer, EncoderConfig(side=1024))
        step = device_step(raws, tiny_tokenizer, EncoderConfig(side=1024, jpeg_decode="device"))
        assert torch.equal(worker.region_masks, step.region_masks) and torch.equal(worker.seg_masks, step.seg_masks)
        if H == 480:  # full decode in both: the same pixels
            assert_close_levels(step.pixel_values, worker.pixel_values, 1e-5, "qwen")
            assert_close_levels(step.sam_images, worker.sam_images, 1e-5, "sam")
        else:  # the worker drafts at 1/2 DCT scale, the step decodes the full image: fine detail differs
            assert float((step.sam_images - worker.sam_images).abs().mean()) < 0.5


def test_bad_jpeg_decode_setting_is_a_clear_error(tiny_tokenizer):
    encoder = Encoder(tiny_tokenizer, EncoderConfig(side=64, jpeg_decode="gpu"))
    assert encoder(raw_sample(30, 40, "JPEG", "mask", seed=4)) is None and encoder.skipped == {"decode_error": 1}


@pytest.mark.parametrize("H,W", [(1, 1), (7, 9), (480, 640), (33, 1)])
def test_bit_packed_masks_round_trip(H, W):
    mask = np.asfortranarray(np.random.default_rng(H + W).random((H, W)) < 0.3).astype(np.uint8)
    packed = torch.from_numpy(np.stack([pack_mask(mask), pack_mask(1 - mask)]))
    out = unpack_masks(packed, H, W).transpose(1, 2)
    assert torch.equal(out[0], torch.from_numpy(mask.astype(bool))) and torch.equal(out[1], ~out[0])
    assert packed.shape[1] == -(-H * W // 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_equals_the_cpu_step(tiny_tokenizer):
    """On the accelerator (nvJPEG included) within the same tolerance as the CPU step vs the CPU path."""
    for H, W, side, fmt in CASES[:3]:
        for jpeg_decode in ("worker", "device"):
            config = EncoderConfig(side=side, jpeg_decode=jpeg_decode)
            raws = [raw_sample(H, W, fmt, "box", seed=5), raw_sample(W, H, fmt, "mask", seed=6)]
            cpu, cuda = device_step(raws, tiny_tokenizer, config), device_step(raws, tiny_tokenizer, config, "cuda")
            levels = 6 if jpeg_decode == "device" and fmt == "JPEG" else 1  # nvJPEG's IDCT vs libjpeg-turbo's
            assert_close_levels(cuda.pixel_values, cpu.pixel_values, levels * QWEN_ATOL, "qwen")
            assert_close_levels(cuda.sam_images, cpu.sam_images, levels * SAM_ATOL, "sam", share=0.25)
            for name in ("region_masks", "seg_masks", "seg_ignore", "input_ids", "labels"):
                assert torch.equal(getattr(cuda, name).cpu(), getattr(cpu, name)), name


@pytest.mark.parametrize("shape", [(480, 640), (9, 7), (1, 300)])
def test_pack_rle_equals_packing_the_decoded_mask(shape) -> None:
    from fclm_data.masks import decode_rle

    mask = (np.random.default_rng(shape[1]).random(shape) < 0.4).astype(np.uint8)
    rle = encode_mask(mask)
    assert np.array_equal(pack_rle(rle), pack_mask(decode_rle(rle)))
    with pytest.raises(ValueError, match="do not tile"):  # a truncated string must not decode to garbage
        pack_rle({**rle, "counts": rle["counts"][:-2]})
