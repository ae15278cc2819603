"""Qwen2.5-VL as FCLM's LLM: construction / loading, the FCLM special tokens, the ``<mask>`` / ``<pos>`` splice
and the hidden-state forward with 3-D M-RoPE positions.

M-RoPE pitfall (transformers 5.x): without ``mm_token_type_ids`` the model silently falls back to 1-D
positions. :func:`llm_hidden_states` therefore computes the 3-D positions itself with ``get_rope_index``
(which needs ``mm_token_type_ids``) and hands them over explicitly; that also keeps the forward independent of
the ``rope_deltas`` that transformers caches on the module for generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

#: Added to the tokenizer in this order (ids follow the tokenizer's last entry).
FCLM_TOKENS = ("<mask>", "<pos>", "[SEG]")


@dataclass(frozen=True)
class TokenIds:
    """Token ids the model looks up in ``input_ids``."""

    image: int  #: <|image_pad|>
    mask: int  #: <mask>, replaced by the extractor's semantic token
    pos: int  #: <pos>, replaced by the extractor's position token
    seg: int  #: [SEG], its hidden state becomes the SAM prompt


def qwen_config(
    *, vocab_size: int, hidden_size: int, intermediate_size: int, num_hidden_layers: int, num_attention_heads: int,
    num_key_value_heads: int, tie_word_embeddings: bool, max_position_embeddings: int, rope_theta: float,
    mrope_section: tuple[int, int, int], rms_norm_eps: float, vision_depth: int, vision_hidden_size: int,
    vision_intermediate_size: int, vision_num_heads: int, vision_window_size: int,
    vision_fullatt_block_indexes: tuple[int, ...], patch_size: int, spatial_merge_size: int,
    temporal_patch_size: int, tokens_per_second: int, bos_token_id: int, eos_token_id: int, pad_token_id: int,
    image_token_id: int, video_token_id: int, vision_start_token_id: int, vision_end_token_id: int,
) -> Qwen2_5_VLConfig:  # fmt: skip
    """The transformers config of a Qwen2.5-VL with the given (flat) hyper-parameters."""
    text = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
        rms_norm_eps=rms_norm_eps, tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, hidden_act="silu",
        rope_parameters={"rope_type": "default", "mrope_section": list(mrope_section), "rope_theta": rope_theta},
    )  # fmt: skip
    vision = dict(
        depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=vision_intermediate_size,
        num_heads=vision_num_heads, out_hidden_size=hidden_size, patch_size=patch_size,
        spatial_merge_size=spatial_merge_size, temporal_patch_size=temporal_patch_size,
        window_size=vision_window_size, fullatt_block_indexes=list(vision_fullatt_block_indexes),
        tokens_per_second=tokens_per_second, hidden_act="silu", in_channels=3,
    )  # fmt: skip
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=image_token_id, video_token_id=video_token_id,
        vision_start_token_id=vision_start_token_id, vision_end_token_id=vision_end_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )  # fmt: skip


def build_qwen(config: Qwen2_5_VLConfig, attn_implementation: str) -> Qwen2_5_VLForConditionalGeneration:
    """Randomly initialised Qwen2.5-VL (tests, benchmarks; use a ``torch.device('meta')`` context to count)."""
    return Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)


def load_qwen(path: str, attn_implementation: str, dtype: torch.dtype) -> Qwen2_5_VLForConditionalGeneration:
    """A local Qwen2.5-VL-*-Instruct directory (``config.json`` + safetensors); never downloads."""
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, attn_implementation=attn_implementation, dtype=dtype, local_files_only=True
    )


def add_fclm_tokens(tokenizer) -> dict[str, int]:
    """Add ``<mask>``, ``<pos>``, ``[SEG]`` as special tokens (idempotent) and return their ids."""
    tokenizer.add_tokens(list(FCLM_TOKENS), special_tokens=True)
    return {token: tokenizer.convert_tokens_to_ids(token) for token in FCLM_TOKENS}


def init_new_token_rows(qwen: Qwen2_5_VLForConditionalGeneration, new_ids: list[int]) -> None:
    """Give the new tokens embedding rows equal to the mean of the existing rows (input and output side).

    Qwen checkpoints carry padding rows beyond the tokenizer (151,936 rows for 151,665 tokens in 3B), so the
    new ids usually fit and no resize happens; the "existing" rows are those below the first new id.
    """
    first, last = min(new_ids), max(new_ids)
    if last >= qwen.get_input_embeddings().num_embeddings:
        qwen.resize_token_embeddings(last + 1, mean_resizing=False)
    ids = torch.tensor(sorted(new_ids))
    with torch.no_grad():
        layers = [qwen.get_input_embeddings(), qwen.get_output_embeddings()]
        for weight in {id(layer.weight): layer.weight for layer in layers}.values():  # tied -> once
            weight[ids.to(weight.device)] = weight[:first].mean(0, keepdim=True)


def splice_region_tokens(
    embeds: torch.Tensor, input_ids: torch.Tensor, token_ids: TokenIds,
    mask_tokens: torch.Tensor | None, pos_tokens: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """Replace the ``<mask>`` / ``<pos>`` input embeddings by the extractor's tokens, in occurrence order.

    embeds (B, T, D); mask_tokens / pos_tokens (R, D) -> (B, T, D). ``masked_scatter`` fills positions in
    row-major order, which is the occurrence order of ``FCLMInputs``.
    """
    for token_id, tokens in ((token_ids.mask, mask_tokens), (token_ids.pos, pos_tokens)):
        where = input_ids == token_id  # (B, T)
        count = int(where.sum())
        if tokens is None:
            if count:
                raise ValueError(f"input has {count} tokens {token_id} but the extractor does not make them")
            continue
        if count != tokens.shape[0]:
            raise ValueError(f"{count} occurrences of token {token_id} for {tokens.shape[0]} region tokens")
        embeds = embeds.masked_scatter(where[..., None], tokens.to(embeds.dtype))
    return embeds


def llm_hidden_states(
    qwen: Qwen2_5_VLForConditionalGeneration, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor, image_grid_thw: torch.Tensor, mm_token_type_ids: torch.Tensor,
    image_features,
) -> torch.Tensor:  # fmt: skip
    """Final-norm hidden states (B, T, D) of the Qwen decoder with 3-D M-RoPE positions.

    ``image_features`` is the output of :func:`vision.qwen_image_features`; passing it as
    ``mm_encoder_outputs`` scatters the image tokens without running the ViT a second time.
    """
    position_ids, _ = qwen.model.get_rope_index(
        input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw, attention_mask=attention_mask
    )  # (3, B, T)
    output = qwen.model(
        input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
        image_grid_thw=image_grid_thw, mm_token_type_ids=mm_token_type_ids,
        mm_encoder_outputs={"image": image_features}, use_cache=False,
    )  # fmt: skip
    return output.last_hidden_state


def language_parameters(qwen: Qwen2_5_VLForConditionalGeneration) -> list[tuple[str, nn.Parameter]]:
    """Decoder, embeddings and lm_head (tied weights appear once)."""
    named = list(qwen.model.language_model.named_parameters(prefix="model.language_model"))
    seen = {id(p) for _, p in named}
    named += [(n, p) for n, p in qwen.lm_head.named_parameters(prefix="lm_head") if id(p) not in seen]
    return named
