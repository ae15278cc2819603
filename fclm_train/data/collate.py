"""Encoded samples -> :class:`~fclm_train.data.device.CompactBatch` (``.prepare(device)`` -> ``FCLMInputs``).

Rows keep the order of the samples (a paired sample's DLC row directly before its DL-RES row); text is padded on
the right to the longest row; each sample's image travels once and ``row_image`` repeats it for each of its rows
(the model's contract is one image per row). ``<region>`` / ``[SEG]`` occurrences are numbered row-major over the
batch, which is the order in which rows list them, so ``consistency_pairs`` are the per-sample pairs shifted by
the occurrences of the rows before. Inside a loader worker the flat pixel and mask buffers are written straight
into shared memory, so the batch reaches the main process without another copy.

REF-VLM / MVP-LM samples (``EncoderConfig.format``) add :class:`~fclm_train.data.device.FormatTargets`: their
rows' :class:`~fclm_train.data.format_rows.FormatRow` fields with outputs numbered over the batch and spans
tagged with their row; FCLM batches have ``targets=None`` and are built exactly as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .device import INLINE_TENSOR_BYTES, CompactBatch, FormatTargets, compact_batch
from .encode import IGNORE_INDEX, EncodedSample, EncoderConfig


def collate(samples: list[EncodedSample], pad_token_id: int, image_token_id: int, seed: int = 0,
            config: EncoderConfig | None = None) -> CompactBatch:  # fmt: skip
    """Build one batch; ``seed`` seeds the model's <= 5 objects subsampling (the trainer sets it per step);
    ``config`` gives the image geometry (default: :class:`EncoderConfig`'s, long side 1024)."""
    rows = [(i, row) for i, sample in enumerate(samples) for row in sample.rows]
    B, T = len(rows), max(len(row.input_ids) for _, row in rows)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    ids_view, labels_view = input_ids.numpy(), labels.numpy()  # numpy converts a list ~10x faster than torch
    for b, (_, row) in enumerate(rows):
        n = len(row.input_ids)
        ids_view[b, :n] = np.array(row.input_ids, dtype=np.int64)
        labels_view[b, :n] = np.array(row.labels, dtype=np.int64)
        attention_mask[b, :n] = 1
    return compact_batch(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, image_token_id=image_token_id,
        geometry=(config or EncoderConfig()).geometry, images=[sample.image for sample in samples],
        row_image=[i for i, _ in rows], grids=[samples[i].grid for i, _ in rows],
        region_specs=[row.region_specs for _, row in rows], seg_specs=[row.seg_refs for _, row in rows],
        ignore_specs=[row.ignore_refs for _, row in rows], consistency_pairs=_consistency_pairs(samples),
        seed=seed, allocate=_shared if get_worker_info() is not None else None,
        targets=_format_targets(samples, [row for _, row in rows]),
    )  # fmt: skip


def _format_targets(samples: list[EncodedSample], rows: list) -> FormatTargets | None:
    """The batch's REF-VLM / MVP-LM fields (None for FCLM samples); outputs renumbered row-major over the batch."""
    formats = sorted({sample.format for sample in samples})
    if formats == ["fclm"]:
        return None
    if len(formats) > 1:
        raise ValueError(f"a batch mixes sample formats {formats}; one loader reads one format")
    boxes, outputs, classes, units, spans, word_based, output_rows = [], [], [], [], [], [], []
    for b, row in enumerate(rows):
        t, before = row.targets, len(word_based)
        boxes += t.boxes
        outputs += [before + o for o in t.outputs]
        classes += t.classes
        units += t.units
        spans += [(b, before + o, start, end) for o, start, end in t.word_spans]
        word_based += t.word_based
        output_rows += [b] * len(t.word_based)
    long = torch.long
    return FormatTargets(
        format=formats[0], boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        outputs=torch.tensor(outputs, dtype=long), classes=torch.tensor(classes, dtype=long),
        units=torch.tensor(units, dtype=long), output_batch_index=torch.tensor(output_rows, dtype=long),
        word_based=torch.tensor(word_based, dtype=torch.bool), word_spans=torch.tensor(spans, dtype=long).view(-1, 4),
    )  # fmt: skip


def _shared(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in shared memory (what torch's ``default_collate`` does in a worker: no copy when it is sent);
    a small one in ordinary memory, as it travels inside the pickle (``device.InlineSmallTensors``)."""
    if numel * dtype.itemsize <= INLINE_TENSOR_BYTES:
        return torch.empty(numel, dtype=dtype)
    return torch.empty(0, dtype=dtype).new(torch.UntypedStorage._new_shared(numel * dtype.itemsize)).view(dtype)


def _consistency_pairs(samples: list[EncodedSample]) -> torch.Tensor:
    """(P, 2) long [region occurrence, [SEG] occurrence] in batch numbering."""
    pairs: list[tuple[int, int]] = []
    regions_before = segs_before = 0
    for sample in samples:
        if sample.pairs:  # rows[0] holds the regions, rows[1] the [SEG]s
            seg_offset = segs_before + len(sample.rows[0].seg_refs)
            pairs += [(regions_before + r, seg_offset + k) for r, k in sample.pairs]
        regions_before += sum(len(row.region_specs) for row in sample.rows)
        segs_before += sum(len(row.seg_refs) for row in sample.rows)
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2)
