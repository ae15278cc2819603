"""Single-query attention over a region's image, used by the extractor's semantic guidance (paper Table 10).

:class:`DeformableGuidance` is single-level deformable attention (Deformable DETR's sampling scheme written
with ``F.grid_sample``): each head samples ``num_points`` bilinear locations around the region centroid on the
Qwen merged-patch grid and mixes them with softmax weights predicted from the query. :class:`CrossGuidance`
is the Table 10 baseline: plain multi-head attention from the query to every token of the image.

Both take one query per region, the region's reference point and the list of per-image maps, and group the
regions by image so that each image's value projection runs once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DeformableGuidance(nn.Module):
    """Deformable attention, one feature level, ``num_points`` samples per head around a reference point."""

    def __init__(self, dim: int, num_heads: int, num_points: int) -> None:
        super().__init__()
        self.num_heads, self.num_points = num_heads, num_points
        self.head_dim = dim // num_heads
        self.value_proj = nn.Linear(dim, dim)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_points)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Offsets start on a circle (head h points along angle 2*pi*h/H, point p at radius p+1 cells) and the
        attention is uniform, so the first steps already see a spread neighbourhood of the centroid."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)  # (H, 2)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        radii = torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, -1, 1)  # (1, P, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((directions[:, None, :] * radii).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self, query: torch.Tensor, reference: torch.Tensor, maps: list[torch.Tensor], batch_index: torch.Tensor
    ) -> torch.Tensor:
        """query (R, D); reference (R, 2) normalised (x, y) in [0, 1]; maps[b] (h, w, D) -> (R, D)."""
        R, H, P = query.shape[0], self.num_heads, self.num_points
        offsets = self.sampling_offsets(query).view(R, H, P, 2)
        weights = self.attention_weights(query).view(R, H, P).softmax(-1)
        out = query.new_zeros(R, H, self.head_dim)
        for b in batch_index.unique().tolist():
            sel = (batch_index == b).nonzero()[:, 0]
            h, w, _ = maps[b].shape
            value = self.value_proj(maps[b]).view(h, w, H, self.head_dim).permute(2, 3, 0, 1)  # (H, Dh, h, w)
            normaliser = torch.tensor([w, h], dtype=offsets.dtype, device=offsets.device)
            locations = reference[sel, None, None, :] + offsets[sel] / normaliser  # (r, H, P, 2) in [0, 1]
            grid = (2.0 * locations - 1.0).transpose(0, 1)  # (H, r, P, 2), grid_sample wants [-1, 1]
            sampled = F.grid_sample(value.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)  # (H, Dh, r, P)  # fmt: skip
            mixed = torch.einsum("hdrp,rhp->rhd", sampled, weights[sel].to(sampled.dtype))  # (r, H, Dh)
            out = out.index_copy(0, sel, mixed.to(out.dtype))
        return self.output_proj(out.flatten(1))  # (R, D)


class CrossGuidance(nn.Module):
    """Multi-head attention from the region query to all merged-patch tokens of its image."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)

    def forward(
        self, query: torch.Tensor, reference: torch.Tensor, maps: list[torch.Tensor], batch_index: torch.Tensor
    ) -> torch.Tensor:
        """Same signature as :class:`DeformableGuidance`; ``reference`` is unused (global attention)."""
        out = torch.zeros_like(query)
        for b in batch_index.unique().tolist():
            sel = (batch_index == b).nonzero()[:, 0]
            tokens = maps[b].flatten(0, 1)[None].expand(len(sel), -1, -1)  # (r, h*w, D)
            attended, _ = self.attn(query[sel, None], tokens, tokens, need_weights=False)  # (r, 1, D)
            out = out.index_copy(0, sel, attended[:, 0].to(out.dtype))
        return out
