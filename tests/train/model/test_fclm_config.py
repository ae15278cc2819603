"""Presets carry the released architectures; paper defaults are the config defaults; configs round-trip.

Parameter counts come from meta-device builds (no memory, < 1 s): Qwen2.5-VL-3B-Instruct has 3,754,622,976
parameters including its ViT (model card: 3.75B), 7B has 8,292,166,656 (8.29B), SAM ViT-H's image encoder
637,026,048.
"""

from __future__ import annotations

import pytest
import torch

from fclm_train.model import FCLMConfig, build_fclm


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_3b_preset_is_qwen2_5_vl_3b_instruct_and_sam_vit_h():
    cfg = FCLMConfig.preset("3b")
    llm = cfg.llm
    assert (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers) == (2048, 11008, 36)
    assert (llm.num_attention_heads, llm.num_key_value_heads, llm.vocab_size) == (16, 2, 151936)
    assert llm.tie_word_embeddings and llm.mrope_section == (16, 24, 24) and llm.rope_theta == 1e6
    assert (llm.vision_depth, llm.vision_hidden_size, llm.vision_intermediate_size, llm.vision_num_heads) == (
        32, 1280, 3420, 16)  # fmt: skip
    assert llm.vision_fullatt_block_indexes == (7, 15, 23, 31) and llm.vision_window_size == 112
    assert (llm.patch_size, llm.spatial_merge_size, llm.temporal_patch_size) == (14, 2, 2)
    assert (llm.image_token_id, llm.vision_start_token_id, llm.vision_end_token_id) == (151655, 151652, 151653)
    sam = cfg.sam
    assert (sam.encoder_embed_dim, sam.encoder_depth, sam.encoder_num_heads) == (1280, 32, 16)
    assert sam.encoder_global_attn_indexes == (7, 15, 23, 31) and sam.encoder_window_size == 14
    assert (sam.image_size, sam.prompt_dim, sam.decoder_mlp_dim, sam.iou_head_hidden_dim) == (1024, 256, 2048, 256)


def test_7b_preset_is_qwen2_5_vl_7b_instruct():
    llm = FCLMConfig.preset("7b").llm
    assert (llm.hidden_size, llm.intermediate_size, llm.num_hidden_layers) == (3584, 18944, 28)
    assert (llm.num_attention_heads, llm.num_key_value_heads, llm.vocab_size) == (28, 4, 152064)
    assert not llm.tie_word_embeddings and llm.vision_hidden_size == 1280


def test_paper_defaults():
    cfg = FCLMConfig.preset("3b")
    assert cfg.image_long_side == 1024 and cfg.sam.prompt_dim == 256
    assert cfg.mask_decoder.max_objects_per_sample == 5
    rx = cfg.region_extractor
    assert rx.tokens == "both" and rx.guidance_attention == "deformable" and rx.num_points == 4
    assert rx.local_aggregation and rx.pixel_enhancement and rx.semantic_guidance
    loss = cfg.loss
    assert (loss.ce_weight, loss.bce_weight, loss.dice_weight) == (1.0, 2.0, 0.5)  # LISA code
    assert loss.latent_kind == "cosine" and loss.consistency_token == "pos"
    assert cfg.stage_groups == {1: ("vision_tower", "llm", "region_extractor", "mask_decoder"), 2: ("llm",)}


@pytest.mark.parametrize("name, qwen_params", [("3b", 3_754_622_976), ("7b", 8_292_166_656)])
def test_meta_build_has_the_released_parameter_counts(name, qwen_params):
    with torch.device("meta"):
        model = build_fclm(FCLMConfig.preset(name))
    assert _count(model.qwen) == qwen_params
    assert _count(model.sam_encoder) == 637_026_048  # SAM ViT-H image encoder
    sam_decoder = _count(model.mask_decoder.decoder) + _count(model.mask_decoder.prompt_encoder)
    assert sam_decoder == 4_064_560  # SAM ViT-H prompt encoder + mask decoder
    assert len(model.set_stage(2)["llm"]) > 0


def test_config_round_trips_through_plain_dicts():
    cfg = FCLMConfig.preset("7b", loss={"latent_kind": "kl"}, region_extractor={"num_points": 8})
    again = FCLMConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.loss.latent_kind == "kl" and again.region_extractor.num_points == 8
    assert isinstance(again.llm.mrope_section, tuple)
    with pytest.raises(TypeError):
        FCLMConfig.from_dict({"nonsense": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        FCLMConfig.preset("13b")


def test_region_token_text_follows_the_token_switch():
    assert FCLMConfig.preset("tiny").region_token_text == "<mask><pos>"
    pos_only = FCLMConfig.preset("tiny", region_extractor={"tokens": "pos"})
    assert pos_only.region_token_text == "<pos>"


def test_tiny_preset_token_ids_match_the_tiny_tokenizer(tokenizer):
    llm = FCLMConfig.preset("tiny").llm
    ids = tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>",
                                           "<mask>", "<pos>", "[SEG]"])  # fmt: skip
    assert ids == [llm.image_token_id, llm.vision_start_token_id, llm.vision_end_token_id, llm.eos_token_id,
                   llm.mask_token_id, llm.pos_token_id, llm.seg_token_id]  # fmt: skip
