"""Loading real-format weights: the SAM checkpoint key mapping and a local Qwen2.5-VL directory.

The fake SAM checkpoint is a state dict of segment-anything's own ``Sam`` class (the real key names of
``sam_vit_h_4b8939.pth``) at the tiny preset's shapes, saved with ``torch.save`` like the release.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from fclm_train.model import FCLMConfig, build_fclm
from fclm_train.model.weights import SAM_KEY_MAP, map_sam_keys


def _reference_sam(cfg: FCLMConfig) -> Sam:
    """segment-anything's Sam, assembled like ``build_sam_vit_h`` but at the config's shapes."""
    s, side = cfg.sam, cfg.sam.image_size
    encoder = ImageEncoderViT(
        img_size=side, patch_size=s.patch_size, embed_dim=s.encoder_embed_dim, depth=s.encoder_depth,
        num_heads=s.encoder_num_heads, mlp_ratio=s.encoder_mlp_ratio, out_chans=s.prompt_dim, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=s.encoder_window_size,
        global_attn_indexes=s.encoder_global_attn_indexes,
    )  # fmt: skip
    grid = side // s.patch_size
    prompt = PromptEncoder(embed_dim=s.prompt_dim, image_embedding_size=(grid, grid), input_image_size=(side, side),
                           mask_in_chans=s.mask_in_chans)  # fmt: skip
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer_dim=s.prompt_dim, iou_head_depth=3,
        iou_head_hidden_dim=s.iou_head_hidden_dim,
        transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_dim, mlp_dim=s.decoder_mlp_dim,
                                      num_heads=s.decoder_num_heads),
    )  # fmt: skip
    return Sam(encoder, prompt, decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


@pytest.fixture
def sam_checkpoint(tmp_path, cfg):
    torch.manual_seed(123)
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in _reference_sam(cfg).state_dict().items()}  # fmt: skip
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(state, path)
    return path, state


def test_sam_checkpoint_has_the_release_prefixes(sam_checkpoint):
    _, state = sam_checkpoint
    assert {k.split(".")[0] + "." for k in state} == set(SAM_KEY_MAP)
    mapped, unknown = map_sam_keys(state)
    assert not unknown and len(mapped) == len(state)


def test_sam_checkpoint_loads_into_encoder_prompt_encoder_and_decoder(cfg, tokenizer, sam_checkpoint):
    path, state = sam_checkpoint
    model = build_fclm(cfg, sam_path=path, tokenizer=tokenizer)
    ours = model.state_dict()
    for key, value in state.items():
        prefix = next(p for p in SAM_KEY_MAP if key.startswith(p))
        torch.testing.assert_close(ours[SAM_KEY_MAP[prefix] + key[len(prefix) :]], value, msg=key)
    assert not any(p.requires_grad for p in model.sam_encoder.parameters())  # loading keeps it frozen


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_sam_checkpoint_mismatch_lists_the_keys(damage, cfg, tokenizer, sam_checkpoint, tmp_path):
    _, state = sam_checkpoint
    state = dict(state)
    if damage == "missing":
        del state["mask_decoder.iou_token.weight"]
        expected = "mask_decoder.decoder.iou_token.weight"
    elif damage == "unexpected":
        state["image_encoder.extra.weight"] = torch.zeros(1)
        expected = "sam_encoder.encoder.extra.weight"
    else:
        state["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 7)
        expected = "mask_decoder.prompt_encoder.no_mask_embed.weight"
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=damage if damage != "shape" else "mismatched") as err:
        build_fclm(cfg, sam_path=path, tokenizer=tokenizer)
    assert expected in str(err.value)


def test_local_qwen_directory_loads_with_its_tokenizer(cfg, tokenizer, tmp_path):
    torch.manual_seed(0)
    source = build_fclm(cfg, tokenizer=tokenizer).qwen
    source.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = build_fclm(cfg, llm_path=tmp_path)
    loaded = model.qwen.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert model.token_ids.seg == tokenizer.convert_tokens_to_ids("[SEG]")
    assert model.qwen.lm_head.weight.data_ptr() == model.qwen.get_input_embeddings().weight.data_ptr()


def test_local_qwen_directory_must_match_the_preset(cfg, tokenizer, tmp_path):
    torch.manual_seed(0)
    build_fclm(cfg, tokenizer=tokenizer).qwen.save_pretrained(tmp_path)
    wider = FCLMConfig.preset("tiny", llm={"hidden_size": 128, "num_attention_heads": 8})
    with pytest.raises(ValueError, match="hidden_size"):
        build_fclm(wider, llm_path=tmp_path, tokenizer=tokenizer)


def test_new_token_rows_are_the_mean_of_existing_rows(cfg, tokenizer):
    torch.manual_seed(0)
    model = build_fclm(cfg, tokenizer=tokenizer)
    weight = model.qwen.get_input_embeddings().weight
    ids = model.token_ids
    assert weight.shape[0] == len(tokenizer) == cfg.llm.vocab_size + 3  # resized for <mask>, <pos>, [SEG]
    mean = weight[: min(ids.mask, ids.pos, ids.seg)].mean(0)
    for token in (ids.mask, ids.pos, ids.seg):
        torch.testing.assert_close(weight[token], mean)
    assert model.qwen.get_output_embeddings().weight is weight  # tied, as in Qwen2.5-VL-3B
    untied = build_fclm(FCLMConfig.preset("tiny", llm={"tie_word_embeddings": False}), tokenizer=tokenizer)
    out = untied.qwen.get_output_embeddings().weight
    assert out is not untied.qwen.get_input_embeddings().weight
    torch.testing.assert_close(out[ids.seg], out[: ids.mask].mean(0))
