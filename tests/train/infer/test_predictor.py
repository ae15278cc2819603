"""The predictor: inputs built exactly as the trainer builds them, masks at the original size, overlays."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import read_samples
from PIL import Image

from fclm_data.masks import decode_rle
from fclm_data.visual_prompts import interior_point
from fclm_train.data.collate import collate
from fclm_train.data.encode import Encoder
from fclm_train.infer import collate_requests, region_from_input


@pytest.fixture(scope="module")
def dam_sample(stage2_build) -> tuple[dict, bytes]:
    """A paired Describe-Anything sample: its JSON and image bytes."""
    meta, data, _ = next(iter(read_samples(stage2_build).values()))
    return meta, data


def as_prompt(meta: dict, kind: str) -> dict:
    """The sample as ``fclm-data build --visual-prompt KIND`` writes it."""
    meta = copy.deepcopy(meta)
    meta["visual_prompt"] = kind
    if kind == "point":
        region = meta["regions"][0]
        region["points"] = [interior_point(decode_rle(region["mask"]).astype(bool))]
    return meta


@pytest.mark.parametrize("kind", ["mask", "box", "point"])
def test_describe_draws_the_region_and_prompt_the_trainer_draws(predictor, tokenizer, dam_sample, kind):
    meta, data = dam_sample
    meta = as_prompt(meta, kind)
    trained = Encoder(tokenizer, predictor.config)({"json": json.dumps(meta).encode(), "jpg": data})
    region = meta["regions"][0]
    if kind == "mask":
        user = decode_rle(region["mask"]).astype(bool)
    else:
        user = region["bbox"] if kind == "box" else region["points"][0]
    question = meta["conversations"][0]["content"]  # the DLC question the sample was built with
    request = predictor.builder.build(predictor.query(data, question, [user]))
    asked = collate_requests([request], predictor.pad_id, predictor.image_id, predictor.builder.seg_token_id,
                             predictor.config).prepare()  # fmt: skip
    taught = collate([trained], predictor.pad_id, predictor.image_id, config=predictor.config).prepare()
    assert torch.equal(asked.region_masks[0], taught.region_masks[0])
    full_mask = taught.seg_masks[0]  # the DL-RES row's target: the region's own mask
    assert torch.equal(asked.region_masks[0], full_mask) == (kind == "mask")
    # the prompt is the training sequence up to the answer; the pixels are the training pixels
    assert request.prompt_ids == trained.rows[0].input_ids[: len(request.prompt_ids)]
    assert tokenizer.decode(trained.rows[0].input_ids[len(request.prompt_ids):]).startswith(
        meta["conversations"][1]["content"])
    n = int(asked.image_grid_thw[0].prod())
    assert torch.equal(asked.pixel_values, taught.pixel_values[:n]) and torch.equal(asked.sam_images[0],
                                                                                    taught.sam_images[0])


def test_segment_returns_one_mask_per_seg_at_the_original_size(predictor, image, script):
    script("[SEG] and [SEG].")
    masks = predictor.segment(image, "both things")
    assert len(masks) == 2
    assert all(m.shape == image.shape[:2] and m.dtype == bool for m in masks)
    assert masks[0].any() or masks[1].any()  # logits > 0 somewhere: real decoder output, not a placeholder


def test_grounded_caption_pairs_phrases_with_masks(predictor, image, script):
    script("A <p> red box </p> [SEG] near <p> a dot </p> [SEG].")
    caption, phrases, masks = predictor.grounded_caption(image)  # GLaMM keeps the space before "."
    assert caption == "A red box near a dot ." and phrases == ["red box", "a dot"] and len(masks) == 2


def test_classify_and_describe_answer_with_the_generated_text(predictor, image, script):
    script("square")
    assert predictor.classify(image, (10, 10)) == "square"
    script("A plain square.")
    assert predictor.describe(image, np.ones(image.shape[:2], dtype=bool)) == "A plain square."


def test_overlay_png_is_written(predictor, image, script, tmp_path):
    script("It is [SEG].")
    prediction = predictor.predict(image, predictor.templates.describe(), [[5, 5, 40, 30]])
    path = predictor.render(image, prediction, tmp_path / "sub" / "overlay.png")
    rendered = Image.open(path)
    assert rendered.size[1] >= image.shape[0] and rendered.size[0] > image.shape[1]  # image + text panel
    assert len(prediction.region_masks) == 1 and prediction.region_masks[0][5:30, 5:40].all()
    assert len(prediction.masks) == 1 and prediction.masks[0].shape == image.shape[:2]


@pytest.mark.parametrize(("region", "message"), [
    ((95, 10), "outside"), ([60, 10, 60, 30], "empty"), (np.zeros((50, 90), bool), "empty"), ([1, 2, 3], "a region"),
])  # fmt: skip
def test_bad_regions_are_refused(region, message):
    with pytest.raises(ValueError, match=message):
        region_from_input(region, 50, 90)


def test_text_holding_fclm_tokens_is_refused(predictor, image):
    with pytest.raises(ValueError, match="region tokens"):
        predictor.predict(image, "<image>\nWhat is <mask> here?")
