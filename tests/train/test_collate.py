"""Encoder + collate on real shards: a valid FCLMInputs with the documented text, image and mask conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from webdataset.tariterators import tarfile_samples

from fclm_data.masks import decode_rle
from fclm_train.data.collate import collate
from fclm_train.data.encode import IGNORE_INDEX, Encoder, EncoderConfig
from fclm_train.data.vision import frame_scale
from fclm_train.model.vision import mask_to_sam_frame


def raw_samples(build_dir: Path) -> list[dict]:
    return [s for shard in sorted(build_dir.glob("shard-*.tar")) for s in tarfile_samples([{"url": str(shard)}])]


def batches_of(samples: list, size: int) -> list[list]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


@pytest.fixture(scope="module")
def encoded(stage2_build, mixed_build, tiny_tokenizer, encoder_config):
    """(raw, encoded) for every sample of both builds."""
    encoder = Encoder(tiny_tokenizer, encoder_config)
    raws = raw_samples(stage2_build)[:12] + raw_samples(mixed_build)
    pairs = [(raw, encoder(raw)) for raw in raws]
    assert all(sample is not None for _, sample in pairs) and not encoder.skipped
    return pairs


@pytest.fixture(scope="module")
def collated(encoded, tiny_tokenizer, encoder_config):
    samples = [sample for _, sample in encoded]
    return [(group, collate(group, tiny_tokenizer.pad_token_id, 261, seed=3, config=encoder_config).prepare())
            for group in batches_of(samples, 3)]  # fmt: skip


def prepared(sample, tokenizer, config):
    """One sample's batch on the CPU (the device step's output)."""
    return collate([sample], tokenizer.pad_token_id, 261, config=config).prepare()


def row_masks(inputs, name: str, row: int) -> list[torch.Tensor]:
    masks, index = getattr(inputs, f"{name}_masks"), getattr(inputs, f"{name}_batch_index")
    return list(masks[index == row])


def test_batches_validate(collated, tiny_cfg):
    llm = tiny_cfg.llm
    for _, inputs in collated:
        inputs.validate(llm.image_token_id, (llm.mask_token_id, llm.pos_token_id), llm.seg_token_id)
        assert inputs.seed == 3 and inputs.sam_images.shape[-1] == tiny_cfg.image_long_side


def test_labels_cover_exactly_the_assistant_turns(collated, tiny_tokenizer):
    im_start, im_end = (tiny_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    assistant_head = tiny_tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    for _, inputs in collated:
        for ids, labels, attention in zip(inputs.input_ids.tolist(), inputs.labels.tolist(), inputs.attention_mask):
            expected, inside = [], False
            for t, token in enumerate(ids[: int(attention.sum())]):
                if token == im_start:
                    inside = ids[t : t + len(assistant_head)] == assistant_head
                    start = t + len(assistant_head)
                expected.append(inside and t >= start)
                if token == im_end:
                    inside = False
            supervised = [label != IGNORE_INDEX for label in labels[: len(expected)]]
            assert supervised == expected and any(supervised)
            assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))
            assert all(label == IGNORE_INDEX for label in labels[len(expected) :])  # right padding


def test_image_tokens_match_the_grid(collated, tiny_cfg):
    for _, inputs in collated:
        pads = (inputs.input_ids == tiny_cfg.llm.image_token_id).sum(1)
        assert pads.tolist() == (inputs.image_grid_thw.prod(1) // 4).tolist()
        assert torch.equal(inputs.mm_token_type_ids, (inputs.input_ids == tiny_cfg.llm.image_token_id).int())
        assert inputs.pixel_values.shape[0] == int(inputs.image_grid_thw.prod(1).sum())


def test_paired_rows_are_adjacent_and_linked(collated, tiny_tokenizer):
    seen = 0
    for group, inputs in collated:
        row = 0
        for sample in group:
            if sample.pairs:
                dlc, dlres = row, row + 1
                for region, seg in inputs.consistency_pairs.tolist():
                    if inputs.region_batch_index[region] == dlc:
                        assert inputs.seg_batch_index[seg] == dlres
                        assert torch.equal(inputs.region_masks[region], inputs.seg_masks[seg])  # the same region
                        assert torch.equal(inputs.sam_images[dlc], inputs.sam_images[dlres])
                        seen += 1
            row += len(sample.rows)
        assert inputs.consistency_pairs.shape[0] == sum(len(s.pairs) for s in group)
    assert seen == 12  # every stage-2 sample pairs its region with its [SEG]


def test_masks_are_the_decoded_rle_on_the_sam_frame(encoded, tiny_cfg, tiny_tokenizer, encoder_config):
    side = tiny_cfg.image_long_side
    checked = 0
    for raw, sample in encoded:
        meta = json.loads(raw["json"])
        views = [meta] + ([meta["pair"]] if meta["pair"] else [])
        inputs = prepared(sample, tiny_tokenizer, encoder_config)
        for row, view in enumerate(views):
            for index, mask in zip(view["seg_targets"], row_masks(inputs, "seg", row), strict=True):
                assert torch.equal(mask, mask_to_sam_frame(decode_rle(meta["regions"][index]["mask"]), side))
                checked += 1
            for index, mask in zip(view["region_inputs"], row_masks(inputs, "region", row), strict=True):
                reference = mask_to_sam_frame(decode_rle(meta["regions"][index]["mask"]), side)
                assert torch.equal(mask, reference) or not reference.any()  # "mask" prompts; empty -> centre pixel
                assert mask.any()
    assert checked > 20


def test_ignore_regions_reach_the_batch(encoded, tiny_tokenizer, tiny_cfg, encoder_config):
    with_ignore = [(raw, s) for raw, s in encoded if any(r["ignore"] for r in json.loads(raw["json"])["regions"])]
    assert with_ignore  # ReasonSeg marks ignore pixels
    raw, sample = with_ignore[0]
    meta = json.loads(raw["json"])
    inputs = prepared(sample, tiny_tokenizer, encoder_config)
    index = meta["seg_targets"][0]
    expected = mask_to_sam_frame(decode_rle(meta["regions"][index]["ignore"]), tiny_cfg.image_long_side)
    assert inputs.seg_ignore is not None and torch.equal(inputs.seg_ignore[0], expected)


def test_over_long_and_malformed_samples_are_skipped_and_counted(
    stage2_build, mixed_build, tiny_tokenizer, encoder_config
):  # fmt: skip
    raw = raw_samples(mixed_build)[0]
    short = Encoder(tiny_tokenizer, EncoderConfig(**{**vars(encoder_config), "max_length": 50}))
    assert short(raw) is None and short.skipped == {"too_long": 1}
    paired = raw_samples(stage2_build)[0]
    meta = json.loads(paired["json"])
    meta["pair"]["conversations"][0]["content"] += " [SEG]"  # a [SEG] in a user turn: counts disagree
    encoder = Encoder(tiny_tokenizer, encoder_config)
    assert encoder({**paired, "json": json.dumps(meta).encode()}) is None
    assert encoder.skipped == {"token_mismatch": 1}


@pytest.mark.parametrize("prompt", ["box", "point", "scribble"])
def test_visual_prompts_derive_the_region_input(prompt, mixed_build, tiny_tokenizer, encoder_config):
    raw = next(r for r in raw_samples(mixed_build) if json.loads(r["json"])["region_inputs"])
    meta = json.loads(raw["json"])
    meta["visual_prompt"] = prompt
    sample = Encoder(tiny_tokenizer, encoder_config)({**raw, "json": json.dumps(meta).encode()})
    side = encoder_config.side
    masks = row_masks(prepared(sample, tiny_tokenizer, encoder_config), "region", 0)
    for index, mask in zip(meta["region_inputs"], masks, strict=True):
        region = mask_to_sam_frame(decode_rle(meta["regions"][index]["mask"]), side)
        assert mask.any()
        if prompt == "box":
            ys, xs = mask.nonzero(as_tuple=True)
            sx, sy = frame_scale(meta["image"]["height"], meta["image"]["width"], side)
            x0, y0, x1, y1 = (v * s for v, s in zip(meta["regions"][index]["bbox"], (sx, sy, sx, sy)))
            assert xs.min() <= x0 + 1 and xs.max() >= x1 - 2 and ys.min() <= y0 + 1 and ys.max() >= y1 - 2
            assert int(mask.sum()) == (int(xs.max()) - int(xs.min()) + 1) * (int(ys.max()) - int(ys.min()) + 1)
        elif prompt == "scribble":
            assert not (mask & ~region).any()  # a scribble stays on the object
        else:
            assert (mask & region).any()  # the disc sits on a foreground pixel
    again = Encoder(tiny_tokenizer, encoder_config)({**raw, "json": json.dumps(meta).encode()})
    again_masks = row_masks(prepared(again, tiny_tokenizer, encoder_config), "region", 0)
    assert all(torch.equal(a, b) for a, b in zip(masks, again_masks, strict=True))


def test_a_batch_leaves_a_worker_with_its_small_tensors_inline(encoded, tiny_tokenizer, encoder_config, monkeypatch):
    """Through torch's multiprocessing pickler (what a DataLoader worker sends): the same batch comes back; small
    tensors ride in the message (no shared-memory segment each), the big pixel buffer stays in shared memory."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's reducers, as a DataLoader does)

    from fclm_train.data import device

    samples = [sample for _, sample in encoded][:3]
    batch = collate(samples, tiny_tokenizer.pad_token_id, 261, config=encoder_config)
    pixels = batch.pixel_data.numel()
    monkeypatch.setattr(device, "INLINE_TENSOR_BYTES", pixels - 1)  # the tiny images stand for 1024-side ones
    shared = torch.empty(0, dtype=torch.uint8).new(torch.UntypedStorage._new_shared(pixels))
    batch.pixel_data = shared.copy_(batch.pixel_data)  # as collate allocates it in a worker
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(batch)
    back = pickle.loads(buffer.getvalue())
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(getattr(back, name), value), name
    assert not back.input_ids.is_shared() and not back.seg_specs.is_shared()  # inline: pickled by value
    assert back.pixel_data.is_shared()  # a shared-memory handle, not a copy in the message
    inline = sum(v.numel() * v.element_size() for n, v in vars(batch).items()
                 if isinstance(v, torch.Tensor) and n != "pixel_data")  # fmt: skip
    assert inline <= len(buffer.getvalue()) < inline + pixels  # the pixels are not in it
    assert torch.equal(back.prepare().input_ids, batch.prepare().input_ids)
