"""Image and mask tensors of one sample: the Qwen2.5-VL patches, the SAM frame, masks on the SAM frame.

Paper §S1.1: the image input and the decoder's segmentation both work at a long side of 1024 (``side``).

* :func:`open_image` decodes the JPEG at reduced size when the original is at least twice the target
  (``Image.draft``: libjpeg's DCT scaling, 1.4-1.9x faster than a full decode), one of the savings of
  storing original bytes in shards; other JPEGs go straight into a tensor (torchvision's decoder). Transparent
  images are composited onto white (:func:`to_rgb`), as transformers' image processors do, not flattened to black
  by ``convert("RGB")``.
* :func:`qwen_patches` resizes (bicubic, antialiased: torchvision's kernel, which the default "fast"
  ``Qwen2VLImageProcessor`` uses) to the processor's ``smart_resize`` grid for a long side of ``side`` and lays
  the pixels out exactly as the processor does (a test pins equality); written out because the processor's
  generic path costs a second resize and extra copies.
* :func:`sam_frame` is the SAM input: resized (bilinear, antialiased, aspect kept) so the long side is
  ``side``, SAM-normalised, zero-padded bottom / right to ``side x side`` -- the convention of ``FCLMInputs``.
* :func:`mask_to_frame` resizes a decoded RLE with nearest-exact sampling and pads it.

Images travel as (3, h, w) uint8 tensors and are resized with torch's uint8 kernels (2-3x faster than PIL's);
normalisation runs in place on channel-contiguous memory (a third of the cost of normalising a permuted view).
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fclm_data.images import _SOF

#: OpenAI CLIP statistics, which the Qwen2-VL image processor uses.
QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)
#: SAM's pixel statistics (segment-anything ``Sam`` defaults, RGB 0..255); equal to ``model.vision``'s.
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


def long_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) with the long side ``side``, aspect kept, rounded half up (the model's SAM-frame rule)."""
    scale = side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def frame_scale(height: int, width: int, side: int) -> tuple[float, float]:
    """(x, y) factors from original pixels to SAM-frame pixels: each axis by its own rounded size, as
    segment-anything's ``ResizeLongestSide.apply_coords`` scales points and boxes (``new_w / W``, ``new_h / H``)."""
    h, w = long_side_size(height, width, side)
    return w / width, h / height


def open_image(data: bytes, side: int, draft: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode to a (3, h, w) uint8 RGB tensor, at a reduced DCT scale when that still leaves >= ``side``.

    Returns the (possibly smaller) image and the original ``(H, W)``.
    """
    header = jpeg_frame(data)  # the common case without PIL's parser (~0.3 ms a COCO image)
    if header is not None and header[2] in (1, 3) and not (draft and max(header[:2]) >= 2 * side):
        pixels = _decode_jpeg_full(data)
        if pixels is not None:
            return pixels, header[:2]
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if image.format == "JPEG" and draft and max(width, height) >= 2 * side:
        h, w = long_side_size(height, width, side)
        image.draft("RGB", (w, h))  # picks the largest 1/2^k scale still >= (w, h)
    elif image.format == "JPEG" and header is None:  # a JPEG our scan could not read: torchvision may
        pixels = _decode_jpeg_full(data)
        if pixels is not None:
            return pixels, (height, width)
    pixels = np.array(to_rgb(image))  # (h, w, 3), writable
    return torch.from_numpy(pixels).permute(2, 0, 1), (height, width)


#: markers without a length field (TEM, RSTn)
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(H, W, components) from a JPEG's start-of-frame segment, or None when ``data`` is not a JPEG whose frame
    header this short scan finds (PIL then decides). Walks the marker segments before the first SOF only."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _SOF:  # the build's image check's set of start-of-frame markers
            if length < 8 or pos + 10 > n:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return (height, width, data[pos + 9]) if height and width else None
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / scan data before any frame: not for us
            return None
        pos += 2 + length
    return None


def _decode_jpeg_full(data: bytes) -> torch.Tensor | None:
    """A full-size JPEG decode straight into a tensor (torchvision's libjpeg-turbo: the same pixels as PIL's, a
    test pins it, without PIL's two copies through ``tobytes``); None when it refuses the file (PIL decides)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for torchcodec; read-only bytes
            warnings.simplefilter("ignore", DeprecationWarning)  # are fine: the decoder only reads them
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError:
        return None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto white: transformers' ``convert_to_rgb``, which the Qwen2-VL
    processor applies (``convert("RGB")`` alone drops alpha and leaves transparent pixels black)."""
    if image.mode == "RGB":
        return image  # convert() would copy the pixels (half the cost of a 640x480 decode)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(3, h, w) uint8 -> (3, *size) uint8 with torch's antialiased uint8 kernels (torchvision's ``resize``)."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode=mode, antialias=True, align_corners=False)[0]


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen2-VL processor's rounding (``transformers...image_processing_qwen2_vl.smart_resize``, pinned equal
    by a test): both sides multiples of ``factor``, the area within [min_pixels, max_pixels], aspect ~kept.
    Restated because importing that module costs ~4 s in every fresh loader worker."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio above 200: {height} x {width}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@lru_cache(maxsize=256)
def qwen_grid_size(height: int, width: int, side: int, patch_size: int, merge_size: int) -> tuple[int, int]:
    """The (h, w) in pixels that the Qwen2-VL processor produces for an image already at long side ``side``."""
    factor = patch_size * merge_size
    h, w = long_side_size(height, width, side)
    return smart_resize(h, w, factor, qwen_min_pixels(factor), qwen_max_pixels(side, factor))


def qwen_min_pixels(factor: int) -> int:
    return factor * factor * 4


def qwen_max_pixels(side: int, factor: int) -> int:
    """Enough for any aspect ratio at long side ``side`` after rounding to multiples of ``factor``."""
    return (side + factor) ** 2


def image_token_count(height: int, width: int, side: int, patch_size: int, merge_size: int) -> int:
    """``<|image_pad|>`` tokens of an (H, W) image: t * h * w / merge^2 with t = 1 (known from the JSON alone)."""
    h, w = qwen_grid_size(height, width, side, patch_size, merge_size)
    return (h // patch_size) * (w // patch_size) // merge_size**2


def qwen_patches(
    image: torch.Tensor, original_hw: tuple[int, int], side: int, patch_size: int, merge_size: int,
    temporal_patch_size: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:  # fmt: skip
    """(3, h, w) uint8 -> ((t*h*w, 3 * temporal * patch^2) float patches, (t, h, w) grid) as Qwen2VLImageProcessor."""
    h, w = qwen_grid_size(*original_hw, side, patch_size, merge_size)
    pixels = resize(image, (h, w), "bicubic").permute(1, 2, 0)  # (h, w, 3), the processor's bicubic
    gh, gw, m, p = h // patch_size, w // patch_size, merge_size, patch_size
    x = pixels.reshape(gh // m, m, p, gw // m, m, p, 3)
    x = x.permute(0, 3, 1, 4, 6, 2, 5).reshape(gh * gw, 3, p * p)  # (N, C, p*p) uint8, merge-window order
    scale, shift = _qwen_affine()
    x = x.float().mul_(scale).sub_(shift)  # (x / 255 - mean) / std
    out = torch.empty(gh * gw, 3, temporal_patch_size, p * p)
    out.copy_(x[:, :, None, :].expand(-1, -1, temporal_patch_size, -1))  # a still image repeats in time
    return out.view(gh * gw, -1), (1, gh, gw)


@lru_cache(maxsize=1)
def _qwen_affine() -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(QWEN_MEAN), torch.tensor(QWEN_STD)
    return (1 / 255 / std).view(1, 3, 1), (mean / std).view(1, 3, 1)


def sam_frame(image: torch.Tensor, original_hw: tuple[int, int], side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(3, h, w) uint8 -> ((3, side, side) SAM-normalised, zero-padded float frame, pre-pad (h, w))."""
    h, w = long_side_size(*original_hw, side)
    frame = torch.zeros(3, side, side)
    inside = frame[:, :h, :w]
    inside.copy_(resize(image, (h, w), "bilinear"))  # uint8 -> float in place, no temporary
    inside.sub_(_SAM_MEAN).div_(_SAM_STD)
    return frame, (h, w)


_SAM_MEAN = torch.tensor(SAM_MEAN).view(3, 1, 1)
_SAM_STD = torch.tensor(SAM_STD).view(3, 1, 1)


def mask_to_frame(mask: np.ndarray, side: int) -> torch.Tensor:
    """(H, W) binary mask -> (side, side) bool in the SAM frame (nearest-exact resize, zero padding).

    PIL's NEAREST samples the pixel under each output pixel's centre, the same pixels as
    ``torch.nn.functional.interpolate(mode="nearest-exact")`` (a test pins equality), at a quarter of the cost.
    """
    height, width = mask.shape
    h, w = long_side_size(height, width, side)
    frame = torch.zeros(side, side, dtype=torch.bool)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).resize((w, h), Image.NEAREST))
    frame[:h, :w] = torch.from_numpy(resized != 0)
    return frame
