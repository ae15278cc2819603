"""``FCLMInputs``: the one batch type the model consumes (the trainer's collate produces exactly this).

Conventions
-----------
* One image per batch row (the schema puts ``<image>`` once per conversation). Row ``b`` uses image ``b``.
* **SAM frame.** Images and masks travel at ``S = cfg.image_long_side`` (1024): resized so the long side is
  ``S`` (aspect kept), placed top-left in an ``S x S`` canvas and zero-padded bottom / right, exactly what
  SAM's ``preprocess`` produces. ``sam_input_sizes[b]`` is the pre-pad ``(h, w)``; ``original_sizes[b]`` the
  image's ``(H, W)`` for mapping predictions back at evaluation time.
* **Occurrence order.** ``<region>`` / ``[SEG]`` occurrences are numbered row-major over the batch (row 0's in
  reading order, then row 1's ...). ``region_masks[i]`` belongs to the i-th ``<region>`` (whose tokens are
  ``<mask><pos>``, ``<mask>`` or ``<pos>`` per ``cfg.region_token_text``) and ``seg_masks[k]`` to the k-th
  ``[SEG]``. Pairing rows use these indexes.
* ``labels`` are -100 on prompt, padding, image and ``<mask>`` / ``<pos>`` tokens (the model enforces the last
  two again). Padding is on the right.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

#: the label of positions without LM loss (torch's cross-entropy default); the data side writes it, the loss skips it
IGNORE_INDEX = -100


@dataclass
class FCLMInputs:
    input_ids: torch.Tensor  #: (B, T) long
    attention_mask: torch.Tensor  #: (B, T) long, 1 for tokens, 0 for right padding
    labels: torch.Tensor  #: (B, T) long, -100 where no LM loss
    pixel_values: torch.Tensor  #: (sum_b t*h*w, 3 * temporal_patch * patch^2) float, Qwen2.5-VL patches
    image_grid_thw: torch.Tensor  #: (B, 3) long, patch grid (t, h, w) per row's image
    mm_token_type_ids: torch.Tensor  #: (B, T) int, 1 on <|image_pad|>, else 0 (enables 3-D M-RoPE)
    sam_images: torch.Tensor  #: (B, 3, S, S) float, SAM-normalised (pixel mean/std), zero-padded
    sam_input_sizes: torch.Tensor  #: (B, 2) long, (h, w) inside the SAM frame before padding
    original_sizes: torch.Tensor  #: (B, 2) long, (H, W) of the original image
    region_masks: torch.Tensor  #: (R, S, S) bool, per <region> occurrence, SAM frame
    region_batch_index: torch.Tensor  #: (R,) long, batch row of each region
    seg_masks: torch.Tensor  #: (K, S, S) bool, ground truth per [SEG] occurrence, SAM frame
    seg_batch_index: torch.Tensor  #: (K,) long, batch row of each [SEG]
    #: (P, 2) long: [region occurrence index (its <pos>), [SEG] occurrence index] of the same region, linking a
    #: DLC view (one row) to its DL-RES view (another row) for the latent loss. (0, 2) when unpaired.
    consistency_pairs: torch.Tensor
    seg_ignore: torch.Tensor | None = None  #: (K, S, S) bool, True = pixel excluded from the mask loss
    seed: int = 0  #: per-batch seed for the <= 5 objects subsampling (the trainer passes e.g. the step)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> FCLMInputs:
        """Move every tensor (non-blocking where pinned)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return FCLMInputs(**moved)

    def validate(self, image_token_id: int, region_token_ids: tuple[int, ...], seg_token_id: int) -> None:
        """Raise ``ValueError`` naming the first broken invariant (cheap; runs every forward)."""
        B, T = self.input_ids.shape
        for name in ("attention_mask", "labels", "mm_token_type_ids"):
            if tuple(getattr(self, name).shape) != (B, T):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {(B, T)}")
        if tuple(self.image_grid_thw.shape) != (B, 3):
            raise ValueError(f"image_grid_thw must be (B, 3) = ({B}, 3): one image per row")
        image_tokens = self.input_ids == image_token_id
        if not torch.equal(image_tokens.int(), self.mm_token_type_ids.int()):
            raise ValueError("mm_token_type_ids must be 1 exactly on <|image_pad|> tokens")
        for token_id in region_token_ids:
            _check_occurrences(self.input_ids == token_id, self.region_batch_index, "region", token_id)
        _check_occurrences(self.input_ids == seg_token_id, self.seg_batch_index, "[SEG]", seg_token_id)
        if self.region_masks.shape[0] and not self.region_masks.flatten(1).any(1).all():
            raise ValueError("every region mask needs at least one foreground pixel")
        S = self.sam_images.shape[-1]
        for name in ("region_masks", "seg_masks"):
            if getattr(self, name).shape[1:] != (S, S):
                raise ValueError(f"{name} must be (N, {S}, {S}) in the SAM frame")
        pairs = self.consistency_pairs
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError("consistency_pairs must be (P, 2)")
        if pairs.numel() and (pairs[:, 0].max() >= len(self.region_batch_index) or
                              pairs[:, 1].max() >= len(self.seg_batch_index)):  # fmt: skip
            raise ValueError("consistency_pairs index a region / [SEG] occurrence that does not exist")


def _check_occurrences(is_token: torch.Tensor, batch_index: torch.Tensor, what: str, token_id: int) -> None:
    """The token's occurrences per row must match the batch index vector, in row-major order."""
    rows = is_token.nonzero()[:, 0]  # (N,) row-major order of nonzero()
    if rows.shape != batch_index.shape or not torch.equal(rows.cpu(), batch_index.cpu()):
        raise ValueError(
            f"{what} token {token_id}: rows of its occurrences {rows.tolist()} != batch index {batch_index.tolist()}"
        )
