"""Vision side: Qwen2.5-VL image features as 2-D maps, the frozen SAM image encoder, SAM-frame helpers.

* :func:`qwen_image_features` runs the Qwen ViT once; its merged tokens feed both the LLM (through
  ``mm_encoder_outputs``) and the extractor's semantic guidance (as one ``(h, w, D)`` map per image).
* :class:`SamImageEncoder` wraps segment-anything's ``ImageEncoderViT``: always frozen, always under
  ``no_grad``, and usable at any input side (region crops) by resizing its absolute position embedding.
* :func:`to_sam_frame` / :func:`mask_to_sam_frame` build the SAM-frame tensors of ``FCLMInputs``;
  :func:`crop_regions` cuts the per-region focal crops that local aggregation encodes.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import nn

#: SAM's pixel statistics (``segment_anything.modeling.Sam`` defaults), RGB in 0..255.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def qwen_image_features(qwen_model: nn.Module, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor):
    """Run the Qwen2.5-VL vision tower once.

    Args:
        qwen_model: ``Qwen2_5_VLModel`` (``qwen.model``); its ``get_image_features`` returns the merged tokens.
        pixel_values: (N_patches, C) patches of all images, batch order.
        image_grid_thw: (B, 3) patch grid per image.

    Returns:
        ``(encoder_output, maps)``: the HF output to pass back as ``mm_encoder_outputs={"image": ...}`` and a
        list of B maps (h / merge, w / merge, D) in raster order (Qwen's merged tokens are raster-ordered).
    """
    output = qwen_model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
    merge = qwen_model.config.vision_config.spatial_merge_size
    maps = []
    for tokens, (t, h, w) in zip(output.pooler_output, image_grid_thw.tolist()):
        if t != 1:
            raise ValueError("FCLM takes still images (grid t == 1)")
        maps.append(tokens.view(h // merge, w // merge, -1))  # (h', w', D)
    return output, maps


def build_sam_image_encoder(
    image_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
    window_size: int, global_attn_indexes: tuple[int, ...], out_chans: int,
) -> ImageEncoderViT:  # fmt: skip
    """segment-anything's ViT with the hyper-parameters of ``build_sam_vit_*``."""
    return ImageEncoderViT(
        img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=mlp_ratio, out_chans=out_chans, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True, window_size=window_size, global_attn_indexes=tuple(global_attn_indexes),
    )  # fmt: skip


class SamImageEncoder(nn.Module):
    """Frozen SAM image encoder: (N, 3, L, L) normalised images -> (N, prompt_dim, L / 16, L / 16)."""

    def __init__(self, encoder: ImageEncoderViT, chunk_size: int = 8) -> None:
        super().__init__()
        self.encoder = encoder
        self.chunk_size = chunk_size  # images per encoder call; bounds activation memory for region crops
        self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> SamImageEncoder:
        return super().train(False)  # frozen: never in training mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] == 0:
            raise ValueError("SamImageEncoder got no images")
        return torch.cat([self._encode(part) for part in images.split(self.chunk_size)])

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.patch_embed(images)  # (N, g, g, C)
        if enc.pos_embed is not None:
            x = x + _resize_pos_embed(enc.pos_embed, x.shape[1:3])
        for block in enc.blocks:
            x = block(x)
        return enc.neck(x.permute(0, 3, 1, 2))  # (N, prompt_dim, g, g)


def _resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """SAM's absolute embedding is (1, 64, 64, C) for 1024 px; crops at other sides need it resized."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


def to_sam_frame(image: np.ndarray, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((3, side, side) SAM-normalised, zero-padded image, pre-pad (h, w))."""
    h, w = _resized_hw(image.shape[:2], side)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]  # (1, 3, H, W)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, side - w, 0, side - h)), (h, w)


def mask_to_sam_frame(mask: np.ndarray, side: int) -> torch.Tensor:
    """(H, W) binary mask -> (side, side) bool in the SAM frame (nearest resize, zero padding)."""
    h, w = _resized_hw(mask.shape[:2], side)
    m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    m = F.interpolate(m, size=(h, w), mode="nearest-exact")[0, 0] > 0.5
    return F.pad(m, (0, side - w, 0, side - h))


def _resized_hw(hw: tuple[int, int], side: int) -> tuple[int, int]:
    H, W = hw
    scale = side / max(H, W)
    return max(1, int(H * scale + 0.5)), max(1, int(W * scale + 0.5))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(R, S, S) bool -> (R, 4) float boxes [x0, y0, x1, y1], x1 / y1 exclusive."""
    rows, cols = masks.any(2), masks.any(1)  # (R, S) each
    idx = torch.arange(masks.shape[-1], device=masks.device)
    big = masks.shape[-1]
    x0 = torch.where(cols, idx, big).amin(1)
    x1 = torch.where(cols, idx, -1).amax(1) + 1
    y0 = torch.where(rows, idx, big).amin(1)
    y1 = torch.where(rows, idx, -1).amax(1) + 1
    return torch.stack([x0, y0, x1, y1], 1).float()


def crop_regions(
    images: torch.Tensor, input_sizes: torch.Tensor, masks: torch.Tensor, batch_index: torch.Tensor,
    crop_size: int, expand: float, min_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Focal crops of each region for local aggregation (DAM-style context around the box).

    Args:
        images: (B, 3, S, S) SAM-frame images. input_sizes: (B, 2) pre-pad (h, w).
        masks: (R, S, S) bool region masks. batch_index: (R,) row of each region.
        crop_size: side of the square crop canvas; the crop's long side is resized to it.
        expand: context added on each side, in box widths / heights. min_size: minimum box side before that.

    Returns:
        crops (R, 3, crop_size, crop_size) zero-padded, crop_masks (R, crop_size, crop_size) float in [0, 1].
    """
    boxes = mask_boxes(masks)
    crops, crop_masks = [], []
    for r in range(masks.shape[0]):
        b = int(batch_index[r])
        y0, y1, x0, x1 = _context_box(boxes[r], input_sizes[b], expand, min_size)
        pixels = images[b, :, y0:y1, x0:x1][None]  # (1, 3, h, w)
        region = masks[r, y0:y1, x0:x1][None, None].to(images.dtype)
        h, w = _resized_hw((y1 - y0, x1 - x0), crop_size)
        pad = (0, crop_size - w, 0, crop_size - h)
        zoomed = F.interpolate(pixels, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        crops.append(F.pad(zoomed, pad))
        crop_masks.append(F.pad(F.interpolate(region, size=(h, w), mode="bilinear", align_corners=False), pad))
    if not crops:
        return images.new_zeros(0, 3, crop_size, crop_size), images.new_zeros(0, crop_size, crop_size)
    return torch.cat(crops), torch.cat(crop_masks)[:, 0]


def _context_box(box: torch.Tensor, size: torch.Tensor, expand: float, min_size: int) -> tuple[int, ...]:
    x0, y0, x1, y1 = box.tolist()
    h_img, w_img = size.tolist()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = max(x1 - x0, min_size), max(y1 - y0, min_size)
    half_w, half_h = bw * (0.5 + expand), bh * (0.5 + expand)
    left, right = max(0, int(cx - half_w)), min(w_img, int(np.ceil(cx + half_w)))
    top, bottom = max(0, int(cy - half_h)), min(h_img, int(np.ceil(cy + half_h)))
    return top, bottom, left, right
