"""``FCLMInputs`` conventions and validation, using the ``testing.make_inputs`` helper on realistic rows."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fclm_train.model import FCLMConfig


def test_labels_cover_assistant_turns_only(cfg, tokenizer, make_batch):
    inputs = make_batch(cfg)
    supervised = inputs.labels[1][inputs.labels[1] != -100].tolist()
    region = "<mask><pos>"
    assert tokenizer.decode(supervised) == "It is [SEG].<|im_end|>"
    assert region not in tokenizer.decode(inputs.input_ids[1].tolist())
    assert region + " in detail" in tokenizer.decode(inputs.input_ids[0].tolist())
    assert ((inputs.labels != -100) <= inputs.attention_mask.bool()).all()


def test_image_tokens_match_grid_and_mm_token_types(cfg, make_batch):
    inputs = make_batch(cfg)
    merge = cfg.llm.spatial_merge_size
    per_row = (inputs.input_ids == cfg.llm.image_token_id).sum(1)
    torch.testing.assert_close(per_row, inputs.image_grid_thw.prod(1) // merge**2)
    torch.testing.assert_close(inputs.mm_token_type_ids, (inputs.input_ids == cfg.llm.image_token_id).int())
    assert inputs.pixel_values.shape[0] == int(inputs.image_grid_thw.prod(1).sum())


def test_masks_live_in_the_sam_frame(cfg, make_batch):
    inputs = make_batch(cfg)
    side = cfg.image_long_side
    assert inputs.sam_images.shape == (3, 3, side, side)
    assert inputs.sam_input_sizes.tolist() == [[48, 64]] * 3  # 48 x 64 images: long side already 64
    assert inputs.region_masks.shape == (3, side, side) and inputs.seg_masks.shape == (3, side, side)
    assert not inputs.region_masks[:, 48:].any()  # padding rows are empty
    assert inputs.sam_images[:, :, 48:].abs().sum() == 0  # zero padding after normalisation
    assert inputs.region_batch_index.tolist() == [0, 2, 2] and inputs.seg_batch_index.tolist() == [1, 2, 2]


def test_large_images_are_resized_to_the_long_side(tokenizer):
    from fclm_train.model.testing import ToySample, box_mask, make_inputs, random_image

    cfg = FCLMConfig.preset("tiny")
    sample = ToySample([("user", "<image>\n<region>?"), ("assistant", "Yes.")], random_image(96, 128),
                       region_masks=[box_mask((96, 128), (0, 0, 64, 96))])  # fmt: skip
    inputs = make_inputs([sample], tokenizer, cfg)
    assert inputs.sam_input_sizes.tolist() == [[48, 64]] and inputs.original_sizes.tolist() == [[96, 128]]
    assert inputs.region_masks[0, :48, :32].all() and not inputs.region_masks[0, :, 32:].any()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda i: {"region_batch_index": torch.tensor([0, 2])}, "region token"),
        (lambda i: {"seg_batch_index": torch.tensor([1, 1, 2])}, r"\[SEG\] token"),
        (lambda i: {"mm_token_type_ids": torch.zeros_like(i.mm_token_type_ids)}, "mm_token_type_ids"),
        (lambda i: {"region_masks": torch.zeros_like(i.region_masks)}, "foreground"),
        (lambda i: {"consistency_pairs": torch.tensor([[5, 0]])}, "consistency_pairs"),
        (lambda i: {"image_grid_thw": i.image_grid_thw[:2]}, "one image per row"),
    ],
)
def test_validate_names_the_broken_invariant(corrupt, message, cfg, build, make_batch):
    model = build(cfg)
    inputs = make_batch(cfg)
    broken = dataclasses.replace(inputs, **corrupt(inputs))
    with pytest.raises(ValueError, match=message):
        model(broken)


def test_to_moves_tensors_and_keeps_plain_fields(cfg, make_batch):
    inputs = make_batch(cfg, seed=7)
    moved = inputs.to("cpu")
    assert moved.seed == 7 and moved.seg_ignore is None
    assert torch.equal(moved.input_ids, inputs.input_ids)


def test_postprocess_maps_frame_logits_back_to_the_original_image():
    from fclm_train.model.mask_decoder import postprocess_masks

    side, low = 64, 16  # SAM frame 64, decoder output 16 x 16 (4 px per low-res cell)
    logits = torch.full((1, low, low), -10.0)
    logits[0, :6, :8] = 10.0  # top-left quadrant of the 48 x 64 image in the 64 x 64 frame (4 px per cell)
    mask = postprocess_masks(logits, side, input_size=(48, 64), original_size=(96, 128))[0] > 0
    assert mask.shape == (96, 128)
    assert mask[:40, :60].all() and not mask[56:].any() and not mask[:, 72:].any()
