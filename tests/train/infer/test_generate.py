"""Generation: the KV-cached path equals the uncached training forward; batching; [SEG] queries; mask decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fclm_train.infer import GenerationConfig, collate_requests, forced_seg_hidden, generate
from fclm_train.infer.requests import Request
from fclm_train.model.llm import llm_hidden_states
from fclm_train.model.testing import ToySample, box_mask, make_inputs, random_image


def encode(predictor, queries, answers=None) -> tuple[list[Request], object]:
    requests = [predictor.builder.build(q) for q in queries]
    for request, answer in zip(requests, answers or [None] * len(requests)):
        if answer is not None:
            request.answer_ids = list(answer)
    inputs = collate_requests(requests, predictor.pad_id, predictor.image_id, predictor.builder.seg_token_id,
                              predictor.config).prepare()
    return requests, inputs


def full_forward_logits(model, inputs, positions: bool = True) -> torch.Tensor:
    """Last-position logits of one uncached forward (the training path: 3-D M-RoPE from get_rope_index)."""
    with torch.no_grad():
        embeds, features = model.prompt_embeddings(inputs)
        if positions:
            hidden = llm_hidden_states(model.qwen, inputs.input_ids, embeds, inputs.attention_mask,
                                       inputs.image_grid_thw, inputs.mm_token_type_ids, features)  # fmt: skip
        else:  # what transformers does when it is not told the modality: 1-D positions
            hidden = model.qwen.model(input_ids=inputs.input_ids, inputs_embeds=embeds, use_cache=False,
                                      attention_mask=inputs.attention_mask,
                                      mm_encoder_outputs={"image": features}).last_hidden_state  # fmt: skip
        return model.qwen.lm_head(hidden[0, -1]).float()


def test_cached_generation_equals_the_uncached_forward(predictor, model, image):
    query = predictor.query(image, predictor.templates.describe(), [[10, 8, 60, 40]])
    _, inputs = encode(predictor, [query])
    config = GenerationConfig(max_new_tokens=4, keep_scores=True)
    row = generate(model, inputs, config, predictor.stop_id, predictor.pad_id)[0]
    assert len(row.token_ids) == 4 and len(set(row.token_ids)) > 1  # a real, varied continuation
    for n in range(4):  # step n's logits == a full forward over prompt + the first n generated tokens
        _, full = encode(predictor, [query], [row.token_ids[:n]])
        expected = full_forward_logits(model, full)
        torch.testing.assert_close(row.scores[n], expected, rtol=0, atol=1e-4)
    assert int(row.scores[1].argmax()) == row.token_ids[1]
    # the comparison can fail: 1-D positions (no M-RoPE) move the logits by O(1)
    _, full = encode(predictor, [query], [row.token_ids[:1]])
    assert (full_forward_logits(model, full, positions=False) - row.scores[1]).abs().max() > 0.1


def test_a_left_padded_batch_generates_what_each_row_generates_alone(predictor, model, image):
    other = np.random.default_rng(1).integers(0, 256, (64, 40, 3), dtype=np.uint8)
    queries = [predictor.query(image, predictor.templates.describe(), [(20, 20)]),
               predictor.query(other, predictor.templates.segment("the tall narrow thing on the right side"))]
    config = GenerationConfig(max_new_tokens=5, keep_scores=True)
    _, batch = encode(predictor, queries)
    assert batch.attention_mask[:, 0].tolist().count(0) == 1  # one row is left-padded
    together = generate(model, batch, config, predictor.stop_id, predictor.pad_id)
    for query, row in zip(queries, together):
        _, alone_inputs = encode(predictor, [query])
        alone = generate(model, alone_inputs, config, predictor.stop_id, predictor.pad_id)[0]
        assert row.token_ids == alone.token_ids
        torch.testing.assert_close(torch.stack(row.scores), torch.stack(alone.scores), rtol=0, atol=1e-4)


@pytest.mark.parametrize("offset", [0, -1])
def test_a_generated_seg_query_is_the_teacher_forced_one(predictor, model, image, script, offset):
    """hidden_source seg (0): the state at [SEG]; before_seg (-1): the state that chose [SEG]."""
    model.seg_offset = offset
    query = predictor.query(image, predictor.templates.segment("the thing"))
    ids = script("Sure, [SEG].")
    _, inputs = encode(predictor, [query])
    row = generate(model, inputs, GenerationConfig(max_new_tokens=20), predictor.stop_id, predictor.pad_id)[0]
    assert row.token_ids == ids[:-1] and row.stopped and len(row.seg_hidden) == 1
    _, forced = encode(predictor, [query], [ids])
    torch.testing.assert_close(row.seg_hidden[0], forced_seg_hidden(model, forced)[0], rtol=0, atol=1e-4)


def test_seg_as_the_last_allowed_token_still_gets_its_query(predictor, model, image, script):
    query = predictor.query(image, predictor.templates.segment("the thing"))
    script("[SEG]")
    _, inputs = encode(predictor, [query])
    row = generate(model, inputs, GenerationConfig(max_new_tokens=1), predictor.stop_id, predictor.pad_id)[0]
    assert row.token_ids == [predictor.builder.seg_token_id] and not row.stopped and len(row.seg_hidden) == 1


def test_mask_decoding_equals_the_training_forward(model, tokenizer):
    """Teacher-forced [SEG] queries -> decode_masks == the forward's own [SEG] logits (same hidden, same decoder)."""
    cfg_side = model.frame_side
    h, w = 40, 56
    dog, ball = box_mask((h, w), (5, 5, 30, 30)), box_mask((h, w), (30, 8, 50, 30))
    samples = [ToySample([("user", "<image>\nWhere are the dog and the ball?"), ("assistant", "[SEG] and [SEG].")],
                         random_image(h, w, seed=3), seg_masks=[dog, ball]),
               ToySample([("user", "<image>\nThe dog."), ("assistant", "It is [SEG].")], random_image(h, w, seed=4),
                         seg_masks=[dog])]  # fmt: skip
    from fclm_train.model import FCLMConfig

    inputs = make_inputs(samples, tokenizer, FCLMConfig.preset("tiny"))
    assert inputs.sam_images.shape[-1] == cfg_side
    with torch.no_grad():
        out = model(inputs)
        queries = forced_seg_hidden(model, inputs)
        logits = model.decode_masks(queries, inputs.seg_batch_index, inputs.sam_images)
    assert out.seg_index.tolist() == [0, 1, 2]
    torch.testing.assert_close(logits, out.seg_logits, rtol=0, atol=1e-4)
