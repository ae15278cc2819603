"""Hybrid region extractor (paper Fig. 3): each ``<region>`` becomes a ``<mask>`` and a ``<pos>`` token.

Semantic branch, producing ``<mask>`` (each step switchable, paper Table 9):

1. local aggregation: SAM features of the region's focal crop, projected to the LLM width and mask-pooled over
   the foreground, ``T_mask = MP(Proj(Select(F_sam(X_crop))))``. Switched off, a learned query takes its place.
2. pixel enhancement: ``T_mask`` attends to every foreground pixel feature (gated residual).
3. semantic guidance: deformable attention around the region centroid on the Qwen ViT's merged-patch map
   (or plain cross attention, Table 10), then an MLP; both gated residuals.

Position branch, producing ``<pos>``: an MLP over the mask downsampled to ``pos_mask_size``^2 plus the
normalised centroid, box size, box corners and area. Table 8's "mask only" / "pos only" drop a branch.

Gates start at ``gate_init`` (0, DAM): at step 0 the token equals the pooled SAM feature and the gated
branches receive gradient through their gates only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossGuidance, DeformableGuidance

#: centroid (x, y), box size (w, h), box corners (x0, y0, x1, y1), area: all normalised by the image size.
GEOMETRY_DIM = 9


@dataclass
class RegionTokens:
    mask: torch.Tensor | None  #: (R, D) <mask> embeddings, None when the token is switched off
    pos: torch.Tensor | None  #: (R, D) <pos> embeddings, None when the token is switched off


def region_geometry(masks: torch.Tensor, input_sizes: torch.Tensor) -> torch.Tensor:
    """(R, S, S) bool masks and (R, 2) pre-pad (h, w) -> (R, GEOMETRY_DIM) in [0, 1]."""
    R, S, _ = masks.shape
    m = masks.float()
    area = m.flatten(1).sum(1).clamp_min(1.0)  # (R,)
    coords = torch.arange(S, device=masks.device, dtype=torch.float32) + 0.5
    cx = (m.sum(1) * coords).sum(1) / area  # column mass -> centroid x (pixels)
    cy = (m.sum(2) * coords).sum(1) / area
    cols, rows = masks.any(1), masks.any(2)  # (R, S)
    x0 = torch.where(cols, coords - 0.5, float(S)).amin(1)
    x1 = torch.where(cols, coords + 0.5, 0.0).amax(1)
    y0 = torch.where(rows, coords - 0.5, float(S)).amin(1)
    y1 = torch.where(rows, coords + 0.5, 0.0).amax(1)
    h, w = input_sizes[:, 0].float(), input_sizes[:, 1].float()
    geometry = [cx / w, cy / h, (x1 - x0) / w, (y1 - y0) / h, x0 / w, y0 / h, x1 / w, y1 / h, area / (h * w)]
    return torch.stack(geometry, 1).clamp(0.0, 1.0)


def mask_grids(masks: torch.Tensor, input_sizes: torch.Tensor, size: int) -> torch.Tensor:
    """Occupancy of each mask's pre-pad area on a ``size x size`` grid: (R, S, S) -> (R, size * size)."""
    grids = []
    for mask, (h, w) in zip(masks, input_sizes.tolist()):
        valid = mask[:h, :w].float()[None, None]  # (1, 1, h, w)
        grids.append(F.adaptive_avg_pool2d(valid, size).flatten())
    return torch.stack(grids) if grids else masks.new_zeros(0, size * size, dtype=torch.float32)


class PositionBranch(nn.Module):
    """<pos>: a 3-layer MLP (Osprey) over mask shape and normalised geometry."""

    def __init__(self, mask_size: int, hidden_size: int, out_size: int) -> None:
        super().__init__()
        self.mask_size = mask_size
        self.mlp = nn.Sequential(
            nn.Linear(mask_size * mask_size + GEOMETRY_DIM, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, out_size),
        )  # fmt: skip

    def forward(self, masks: torch.Tensor, input_sizes: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        grid = mask_grids(masks, input_sizes, self.mask_size)  # (R, m*m)
        features = torch.cat([grid, geometry], 1).to(self.mlp[0].weight.dtype)
        return self.mlp(features)  # (R, D)


class PixelEnhancement(nn.Module):
    """The <mask> query attends to the region's foreground pixel features (raw SAM width as keys / values)."""

    def __init__(self, dim: int, pixel_dim: int, num_heads: int, gate_init: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, kdim=pixel_dim, vdim=pixel_dim, batch_first=True)
        self.gate = nn.Parameter(torch.full((1,), float(gate_init)))  # (1,): FSDP2 cannot shard 0-d parameters

    def forward(self, token: torch.Tensor, pixels: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """token (R, D); pixels (R, N, C); foreground (R, N) bool -> (R, D)."""
        attended, _ = self.attn(self.norm(token)[:, None], pixels, pixels, key_padding_mask=~foreground,
                                need_weights=False)  # fmt: skip
        return token + self.gate * attended[:, 0]


class SemanticGuidance(nn.Module):
    """Context from the Qwen ViT map around the region (gated attention residual, then a gated MLP)."""

    def __init__(self, dim: int, num_heads: int, num_points: int, attention: str, gate_init: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        if attention == "deformable":
            self.attn: nn.Module = DeformableGuidance(dim, num_heads, num_points)
        elif attention == "cross":
            self.attn = CrossGuidance(dim, num_heads)
        else:
            raise ValueError(f"unknown guidance attention {attention!r}")
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gate_attn = nn.Parameter(torch.full((1,), float(gate_init)))  # (1,) as above
        self.gate_mlp = nn.Parameter(torch.full((1,), float(gate_init)))

    def forward(
        self, token: torch.Tensor, reference: torch.Tensor, maps: list[torch.Tensor], batch_index: torch.Tensor
    ) -> torch.Tensor:
        token = token + self.gate_attn * self.attn(self.norm_attn(token), reference, maps, batch_index)
        return token + self.gate_mlp * self.mlp(self.norm_mlp(token))


class HybridRegionExtractor(nn.Module):
    """Builds the <mask> / <pos> input embeddings of every region in a batch."""

    def __init__(
        self, dim: int, pixel_dim: int, use_mask_token: bool, use_pos_token: bool, local_aggregation: bool,
        pixel_enhancement: bool, semantic_guidance: bool, guidance_attention: str, num_points: int,
        num_heads: int, pos_mask_size: int, pos_hidden_size: int, gate_init: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.use_mask_token, self.use_pos_token = use_mask_token, use_pos_token
        self.local_proj = nn.Linear(pixel_dim, dim) if use_mask_token and local_aggregation else None
        self.query = nn.Parameter(torch.randn(dim) * 0.02) if use_mask_token and not local_aggregation else None
        self.pixel_enhancement = (
            PixelEnhancement(dim, pixel_dim, num_heads, gate_init) if use_mask_token and pixel_enhancement else None
        )
        self.semantic_guidance = (
            SemanticGuidance(dim, num_heads, num_points, guidance_attention, gate_init)
            if use_mask_token and semantic_guidance else None
        )  # fmt: skip
        self.position = PositionBranch(pos_mask_size, pos_hidden_size, dim) if use_pos_token else None

    @property
    def needs_pixel_features(self) -> bool:
        """Whether the forward reads SAM pixel features (skip the SAM passes otherwise)."""
        return self.local_proj is not None or self.pixel_enhancement is not None

    def forward(
        self, masks: torch.Tensor, input_sizes: torch.Tensor, batch_index: torch.Tensor,
        qwen_maps: list[torch.Tensor], pixel_features: torch.Tensor | None = None,
        pixel_foreground: torch.Tensor | None = None,
    ) -> RegionTokens:  # fmt: skip
        """Embed R regions.

        Args:
            masks: (R, S, S) bool SAM-frame masks. input_sizes: (R, 2) pre-pad (h, w) of each region's image.
            batch_index: (R,) image of each region. qwen_maps: per image (h', w', D) merged ViT features.
            pixel_features: (R, C, g, g) SAM features of each region's crop (or image) when
                ``needs_pixel_features``. pixel_foreground: (R, g, g) bool foreground on that grid.

        Returns:
            :class:`RegionTokens` with (R, D) tensors in the dtype of ``qwen_maps``.
        """
        geometry = region_geometry(masks, input_sizes)  # (R, 9)
        dtype = qwen_maps[0].dtype if qwen_maps else geometry.dtype
        mask_token = self._mask_token(geometry, batch_index, qwen_maps, pixel_features, pixel_foreground)
        pos_token = self.position(masks, input_sizes, geometry) if self.position is not None else None
        return RegionTokens(
            mask=mask_token.to(dtype) if mask_token is not None else None,
            pos=pos_token.to(dtype) if pos_token is not None else None,
        )

    def _mask_token(self, geometry, batch_index, qwen_maps, pixel_features, pixel_foreground):
        if not self.use_mask_token:
            return None
        if self.needs_pixel_features:
            if pixel_features is None or pixel_foreground is None:
                raise ValueError("this extractor needs SAM pixel features of each region")
            pixels = pixel_features.flatten(2).transpose(1, 2)  # (R, g*g, C)
            foreground = pixel_foreground.flatten(1)  # (R, g*g)
        if self.local_proj is not None:
            projected = self.local_proj(pixels.to(self.local_proj.weight.dtype))  # (R, N, D)
            weights = foreground.to(projected.dtype)[..., None]
            token = (projected * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # masked average pooling
        else:
            token = self.query[None].expand(geometry.shape[0], -1)
        if self.pixel_enhancement is not None:
            token = self.pixel_enhancement(token, pixels.to(token.dtype), foreground)
        if self.semantic_guidance is not None:
            centroid = geometry[:, :2]  # (R, 2) normalised (x, y): the deformable reference point
            token = self.semantic_guidance(token, centroid.to(token.dtype), qwen_maps, batch_index)
        return token
