"""The FCLM model. :func:`build_fclm` is the one place that turns an :class:`FCLMConfig` into modules.

    cfg = FCLMConfig.preset("3b")
    model = build_fclm(cfg, llm_path="/ckpt/Qwen2.5-VL-3B-Instruct", sam_path="/ckpt/sam_vit_h_4b8939.pth")
    model.set_stage(1)                      # requires_grad per paper stage
    out = model(inputs)                     # inputs: FCLMInputs; out.loss, out.lm_loss, out.mask_loss, ...
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .config import (
    FCLMConfig,
    LLMConfig,
    LossConfig,
    MaskDecoderConfig,
    RegionExtractorConfig,
    SamConfig,
)  # fmt: skip
from .fclm import FCLMModel, FCLMOutput
from .inputs import FCLMInputs
from .llm import FCLM_TOKENS, TokenIds, add_fclm_tokens, build_qwen, init_new_token_rows, load_qwen, qwen_config
from .mask_decoder import FCLMMaskDecoder, build_sam_prompt_modules
from .region_extractor import HybridRegionExtractor
from .vision import SamImageEncoder, build_sam_image_encoder
from .weights import load_sam_checkpoint

__all__ = [
    "FCLMConfig", "LLMConfig", "SamConfig", "RegionExtractorConfig", "MaskDecoderConfig", "LossConfig",
    "FCLMModel", "FCLMOutput", "FCLMInputs", "TokenIds", "FCLM_TOKENS",
    "build_fclm", "load_tokenizer", "add_fclm_tokens",
]  # fmt: skip


def load_tokenizer(llm_path: str | Path):
    """The tokenizer of a local Qwen2.5-VL directory with ``<mask>``, ``<pos>``, ``[SEG]`` added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llm_path), local_files_only=True)
    add_fclm_tokens(tokenizer)
    return tokenizer


def build_fclm(
    cfg: FCLMConfig, llm_path: str | Path | None = None, sam_path: str | Path | None = None, tokenizer=None,
    dtype: torch.dtype = torch.float32,
) -> FCLMModel:  # fmt: skip
    """Build FCLM from a config; random weights unless local checkpoints are given.

    Args:
        cfg: a preset or a config loaded from a recipe.
        llm_path: a local Qwen2.5-VL-3B/7B-Instruct directory (``from_pretrained``, offline). Its config must
            match ``cfg.llm`` in the widths the extractor depends on.
        sam_path: ``sam_vit_h_4b8939.pth`` (or any SAM checkpoint matching ``cfg.sam``), loaded strictly.
        tokenizer: the tokenizer the collate uses; FCLM tokens are added to it and their ids override
            ``cfg.llm``'s. Loaded from ``llm_path`` when omitted there.
        dtype: parameter dtype of the whole model (keep float32 and train under bf16 autocast / FSDP mixed
            precision; bfloat16 for inference).

    Returns:
        ``FCLMModel`` with ``requires_grad`` set for stage 1.
    """
    if tokenizer is None and llm_path is not None:
        tokenizer = load_tokenizer(llm_path)
    llm = _with_tokenizer_ids(cfg.llm, tokenizer)
    qwen = _build_llm(llm, llm_path, dtype)
    init_new_token_rows(qwen, [llm.mask_token_id, llm.pos_token_id, llm.seg_token_id])
    if llm.gradient_checkpointing:
        qwen.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    rx, md, loss = cfg.region_extractor, cfg.mask_decoder, cfg.loss
    sam_encoder, mask_decoder = _build_sam_parts(cfg, llm.hidden_size)
    model = FCLMModel(
        qwen=qwen, sam_encoder=sam_encoder, region_extractor=_build_extractor(cfg, llm.hidden_size),
        mask_decoder=mask_decoder,
        token_ids=TokenIds(image=llm.image_token_id, mask=llm.mask_token_id, pos=llm.pos_token_id,
                           seg=llm.seg_token_id),
        frame_side=cfg.image_long_side, local_features=rx.local_features, crop_size=rx.crop_size,
        crop_expand=rx.crop_expand, crop_min_size=rx.crop_min_size, hidden_source=md.hidden_source,
        max_objects_per_sample=md.max_objects_per_sample, object_seed=md.object_seed,
        weights=loss,
        dice_eps=loss.dice_eps, latent_kind=loss.latent_kind, latent_space=loss.latent_space,
        latent_pos_source=loss.latent_pos_source, latent_detach_pos=loss.latent_detach_pos,
        self_recon_source=dict(loss.self_recon_source), consistency_token=loss.consistency_token,
        stage_groups=dict(cfg.stage_groups), skip_constant_terms=loss.skip_constant_terms,
        uniform_graph=cfg.uniform_graph,
    )  # fmt: skip
    model.to(dtype)
    if sam_path is not None:
        load_sam_checkpoint(model, sam_path)
    model.set_stage(1)
    return model


def _build_sam_parts(cfg: FCLMConfig, hidden_size: int) -> tuple[SamImageEncoder, FCLMMaskDecoder]:
    sam = cfg.sam
    encoder = build_sam_image_encoder(
        image_size=sam.image_size, patch_size=sam.patch_size, embed_dim=sam.encoder_embed_dim,
        depth=sam.encoder_depth, num_heads=sam.encoder_num_heads, mlp_ratio=sam.encoder_mlp_ratio,
        window_size=sam.encoder_window_size, global_attn_indexes=sam.encoder_global_attn_indexes,
        out_chans=sam.prompt_dim,
    )  # fmt: skip
    prompt_encoder, decoder = build_sam_prompt_modules(
        prompt_dim=sam.prompt_dim, frame_side=cfg.image_long_side, patch_size=sam.patch_size,
        mask_in_chans=sam.mask_in_chans, decoder_depth=sam.decoder_depth, decoder_mlp_dim=sam.decoder_mlp_dim,
        decoder_num_heads=sam.decoder_num_heads, iou_head_hidden_dim=sam.iou_head_hidden_dim,
    )  # fmt: skip
    return SamImageEncoder(encoder), FCLMMaskDecoder(hidden_size, prompt_encoder, decoder)


def _build_extractor(cfg: FCLMConfig, hidden_size: int) -> HybridRegionExtractor:
    rx = cfg.region_extractor
    return HybridRegionExtractor(
        dim=hidden_size, pixel_dim=cfg.sam.prompt_dim, use_mask_token=rx.tokens in ("both", "mask"),
        use_pos_token=rx.tokens in ("both", "pos"), local_aggregation=rx.local_aggregation,
        pixel_enhancement=rx.pixel_enhancement, semantic_guidance=rx.semantic_guidance,
        guidance_attention=rx.guidance_attention, num_points=rx.num_points, num_heads=rx.num_heads,
        pos_mask_size=rx.pos_mask_size, pos_hidden_size=rx.pos_hidden_size, gate_init=rx.gate_init,
    )  # fmt: skip


def _with_tokenizer_ids(llm: LLMConfig, tokenizer) -> LLMConfig:
    if tokenizer is None:
        return llm
    ids = add_fclm_tokens(tokenizer)
    specials = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}  # fmt: skip
    return dataclasses.replace(
        llm, mask_token_id=ids["<mask>"], pos_token_id=ids["<pos>"], seg_token_id=ids["[SEG]"], **specials
    )


def _build_llm(llm: LLMConfig, llm_path: str | Path | None, dtype: torch.dtype):
    if llm_path is None:
        fields = {f.name for f in dataclasses.fields(LLMConfig)} - {
            "mask_token_id", "pos_token_id", "seg_token_id", "attn_implementation", "gradient_checkpointing"}
        hf_config = qwen_config(**{name: getattr(llm, name) for name in fields})
        return build_qwen(hf_config, llm.attn_implementation)
    qwen = load_qwen(str(llm_path), llm.attn_implementation, dtype)
    text = qwen.config.get_text_config()
    found = {"hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers,
             "image_token_id": qwen.config.image_token_id}  # fmt: skip
    wrong = {k: (v, getattr(llm, k)) for k, v in found.items() if v != getattr(llm, k)}
    if wrong:
        raise ValueError(f"{llm_path} does not match the config (checkpoint, config): {wrong}")
    return qwen
