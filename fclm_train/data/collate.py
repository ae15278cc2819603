"""Encoded samples -> :class:`~fclm_train.model.FCLMInputs`, the model's one batch type.

Rows keep the order of the samples (a paired sample's DLC row directly before its DL-RES row); text is padded on
the right to the longest row; every per-row image tensor is repeated for each row of its sample (the contract is
one image per row). ``<region>`` / ``[SEG]`` occurrences are numbered row-major over the batch, which is the
order in which rows list them, so ``consistency_pairs`` are the per-sample pairs shifted by the occurrences of
the rows before.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import get_worker_info

from fclm_train.model.inputs import FCLMInputs

from .encode import IGNORE_INDEX, EncodedSample


def collate(samples: list[EncodedSample], pad_token_id: int, image_token_id: int, seed: int = 0) -> FCLMInputs:
    """Build one batch; ``seed`` seeds the model's <= 5 objects subsampling (the trainer sets it per step)."""
    rows = [(sample, row) for sample in samples for row in sample.rows]
    B, T = len(rows), max(len(row.input_ids) for _, row in rows)
    side = samples[0].sam_image.shape[-1]
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    for b, (_, row) in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        attention_mask[b, :n] = 1
    seg_ignore = [m for _, row in rows for m in row.seg_ignore]
    return FCLMInputs(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels,
        pixel_values=_cat([sample.pixel_values for sample, _ in rows]),
        image_grid_thw=torch.tensor([sample.grid for sample, _ in rows], dtype=torch.long),
        mm_token_type_ids=(input_ids == image_token_id).int(),
        sam_images=_cat([sample.sam_image[None] for sample, _ in rows]),
        sam_input_sizes=torch.tensor([sample.sam_size for sample, _ in rows], dtype=torch.long),
        original_sizes=torch.tensor([sample.original_size for sample, _ in rows], dtype=torch.long),
        region_masks=_stack([m for _, row in rows for m in row.region_masks], side),
        region_batch_index=_row_index([len(row.region_masks) for _, row in rows]),
        seg_masks=_stack([m for _, row in rows for m in row.seg_masks], side),
        seg_batch_index=_row_index([len(row.seg_masks) for _, row in rows]),
        consistency_pairs=_consistency_pairs(samples),
        seg_ignore=_ignore(seg_ignore, side) if any(m is not None for m in seg_ignore) else None,
        seed=seed,
    )  # fmt: skip


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat`` along dim 0, written straight into shared memory inside a loader worker.

    Like torch's ``default_collate``: the batch is then handed to the main process without another copy
    (tens of MB per batch at a long side of 1024).
    """
    if get_worker_info() is None:
        return torch.cat(parts)
    first = parts[0]
    shape = (sum(p.shape[0] for p in parts), *first.shape[1:])
    storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
    return torch.cat(parts, out=first.new(storage).view(shape))


def _stack(masks: list[torch.Tensor], side: int) -> torch.Tensor:
    """(N, S, S) bool; (0, S, S) when there is none."""
    return _cat([m[None] for m in masks]) if masks else torch.zeros(0, side, side, dtype=torch.bool)


def _ignore(masks: list[torch.Tensor | None], side: int) -> torch.Tensor:
    """(K, S, S) bool with all-False planes for [SEG]s that have no ignore region."""
    empty = torch.zeros(1, side, side, dtype=torch.bool)
    return _cat([empty if m is None else m[None] for m in masks])


def _row_index(counts: list[int]) -> torch.Tensor:
    """(N,) long: the row of each occurrence, row-major ([2, 0, 1] -> [0, 0, 2])."""
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))


def _consistency_pairs(samples: list[EncodedSample]) -> torch.Tensor:
    """(P, 2) long [region occurrence, [SEG] occurrence] in batch numbering."""
    pairs: list[tuple[int, int]] = []
    regions_before = segs_before = 0
    for sample in samples:
        if sample.pairs:  # rows[0] holds the regions, rows[1] the [SEG]s
            seg_offset = segs_before + len(sample.rows[0].seg_masks)
            pairs += [(regions_before + r, seg_offset + k) for r, k in sample.pairs]
        regions_before += sum(len(row.region_masks) for row in sample.rows)
        segs_before += sum(len(row.seg_masks) for row in sample.rows)
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2)
