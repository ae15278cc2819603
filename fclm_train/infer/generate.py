"""Generation with a KV cache over FCLM's spliced prompt, and mask decoding for every generated ``[SEG]``.

The prompt goes through the training forward's own steps (:meth:`FCLMModel.prompt_embeddings`: ViT features,
``<mask>`` / ``<pos>`` splice) and one Qwen2.5-VL pass that fills the cache. Positions are explicit 3-D M-RoPE
ids from ``get_rope_index`` for the prompt (as :func:`fclm_train.model.llm.llm_hidden_states` computes them in
training); a generated token's position is the prompt's largest position + 1 + its step on all three axes, which
is what transformers' ``rope_deltas`` produce (``delta = max + 1 - prompt length``, position = index + delta) --
computed here per call, never cached on the module. Left padding is allowed: ``get_rope_index`` skips padded
tokens and every row continues from its own largest position.

The mask query of a ``[SEG]`` is the hidden state ``hidden_source`` names: ``seg`` -- the state at the ``[SEG]``
position, i.e. the output of the step that feeds ``[SEG]`` back in (one extra step when ``[SEG]`` is the last
token allowed); ``before_seg`` -- the state whose logits chose ``[SEG]``. Masks are decoded by
:meth:`FCLMModel.decode_masks` and mapped to the original image size with ``postprocess_masks`` (logits > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache

from fclm_train.model import FCLMInputs, FCLMModel
from fclm_train.model.llm import llm_hidden_states
from fclm_train.model.mask_decoder import postprocess_masks


@dataclass
class GenerationConfig:
    max_new_tokens: int = 512  #: DAM's DLC-Bench setting; generation stops earlier at <|im_end|>
    temperature: float = 0.0  #: 0 = greedy (deterministic); > 0 samples from softmax(logits / T)
    seed: int = 0  #: seeds sampling (temperature > 0)
    keep_scores: bool = False  #: keep each step's logits (tests, debugging)


@dataclass
class GeneratedRow:
    """One row's continuation."""

    token_ids: list[int]  #: generated tokens, the stop token excluded
    stopped: bool  #: True when <|im_end|> ended it (False: max_new_tokens)
    seg_hidden: list[torch.Tensor] = field(default_factory=list)  #: (D,) mask query per [SEG], in order
    scores: list[torch.Tensor] = field(default_factory=list)  #: (V,) float logits per step (keep_scores)


@torch.no_grad()
def generate(
    model: FCLMModel, inputs: FCLMInputs, config: GenerationConfig, stop_token_id: int, pad_token_id: int
) -> list[GeneratedRow]:  # fmt: skip
    """Greedy / sampled continuation of every (left-padded) prompt row of ``inputs``."""
    qwen, seg_id, offset = model.qwen, model.token_ids.seg, model.seg_offset
    embeds, image_features = model.prompt_embeddings(inputs)
    positions = prompt_positions(model, inputs)  # (3, B, T)
    cache = DynamicCache(config=qwen.config.get_text_config())
    hidden = qwen.model(
        input_ids=inputs.input_ids, inputs_embeds=embeds, attention_mask=inputs.attention_mask,
        position_ids=positions, image_grid_thw=inputs.image_grid_thw, mm_token_type_ids=inputs.mm_token_type_ids,
        mm_encoder_outputs={"image": image_features}, past_key_values=cache, use_cache=True,
    ).last_hidden_state[:, -1]  # (B, D): left padding puts every row's last prompt token in the last column
    next_position = positions.amax(dim=(0, 2)) + 1  # (B,)
    attention = inputs.attention_mask
    rows = [GeneratedRow([], False) for _ in range(inputs.batch_size)]
    done = torch.zeros(inputs.batch_size, dtype=torch.bool)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.max_new_tokens):
        logits = qwen.lm_head(hidden).float()  # (B, V)
        tokens = _choose(logits, config.temperature, generator).cpu()
        is_seg = (tokens == seg_id) & ~done
        _record(rows, tokens, done, stop_token_id, logits if config.keep_scores else None)
        if offset == -1:
            _capture(rows, hidden, is_seg)
        done |= tokens == stop_token_id
        last_step = step + 1 == config.max_new_tokens
        if done.all() or (last_step and not (offset == 0 and is_seg.any())):
            break
        fed = torch.where(done, torch.full_like(tokens, pad_token_id), tokens).to(inputs.input_ids.device)
        attention = torch.cat([attention, attention.new_ones(inputs.batch_size, 1)], dim=1)
        position = (next_position + step).view(1, -1, 1).expand(3, -1, 1)  # (3, B, 1)
        hidden = qwen.model.language_model(
            inputs_embeds=qwen.get_input_embeddings()(fed[:, None]), attention_mask=attention,
            position_ids=position, past_key_values=cache, use_cache=True,
        ).last_hidden_state[:, 0]  # fmt: skip
        if offset == 0:
            _capture(rows, hidden, is_seg)
    return rows


def prompt_positions(model: FCLMModel, inputs: FCLMInputs) -> torch.Tensor:
    """(3, B, T) M-RoPE positions of the prompt, computed as the training forward does."""
    positions, _ = model.qwen.model.get_rope_index(
        inputs.input_ids, mm_token_type_ids=inputs.mm_token_type_ids, image_grid_thw=inputs.image_grid_thw,
        attention_mask=inputs.attention_mask,
    )  # fmt: skip
    return positions


def _choose(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _record(rows: list[GeneratedRow], tokens: torch.Tensor, done: torch.Tensor, stop: int, logits) -> None:
    for b, row in enumerate(rows):
        if done[b]:
            continue
        if logits is not None:
            row.scores.append(logits[b].cpu())
        if int(tokens[b]) == stop:
            row.stopped = True
        else:
            row.token_ids.append(int(tokens[b]))


def _capture(rows: list[GeneratedRow], hidden: torch.Tensor, is_seg: torch.Tensor) -> None:
    for b in is_seg.nonzero()[:, 0].tolist():
        rows[b].seg_hidden.append(hidden[b])


@torch.no_grad()
def forced_seg_hidden(model: FCLMModel, inputs: FCLMInputs) -> torch.Tensor:
    """(K, D) mask queries of the [SEG] tokens already in ``inputs`` (a teacher-forced answer, LISA's validate).

    One uncached forward over prompt + answer, exactly the training forward's hidden states.
    """
    embeds, image_features = model.prompt_embeddings(inputs)
    hidden = llm_hidden_states(model.qwen, inputs.input_ids, embeds, inputs.attention_mask, inputs.image_grid_thw,
                               inputs.mm_token_type_ids, image_features)  # fmt: skip
    where = (inputs.input_ids == model.token_ids.seg).nonzero()  # (K, 2) [row, position]
    return hidden[where[:, 0], where[:, 1] + model.seg_offset]


@torch.no_grad()
def decode_masks(model: FCLMModel, inputs: FCLMInputs, queries: list[torch.Tensor], rows: list[int]) -> list[np.ndarray]:
    """Mask queries (D,) of rows ``rows`` -> (H, W) bool masks at each row's original image size."""
    if not queries:
        return []
    row_index = torch.tensor(rows, dtype=torch.long, device=inputs.sam_images.device)
    low_res = model.decode_masks(torch.stack(queries), row_index, inputs.sam_images)  # (K, 4g, 4g)
    masks = []
    for k, b in enumerate(rows):
        size, original = inputs.sam_input_sizes[b].tolist(), inputs.original_sizes[b].tolist()
        logits = postprocess_masks(low_res[k : k + 1].float(), model.frame_side, size, original)  # (1, H, W)
        masks.append((logits[0] > 0).cpu().numpy())
    return masks
