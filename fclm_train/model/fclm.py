"""``FCLMModel``: Qwen2.5-VL + hybrid region extractor + SAM mask decoder + consistency losses (paper Fig. 2).

``forward(inputs)`` runs, in order:

1. choose the objects whose masks are decoded: at most ``max_objects_per_sample`` [SEG] targets and as many
   regions (self-reconstruction) per row, a seeded choice (``object_seed`` x ``FCLMInputs.seed``);
2. the frozen SAM encoder on the full images that need decoding (and on region crops for local aggregation);
3. the Qwen ViT once; the extractor turns each region into ``<mask>`` / ``<pos>`` tokens;
4. the LLM over the spliced embeddings with 3-D M-RoPE positions; LM cross-entropy;
5. one SAM decoder call per image over its [SEG] prompts and reconstructed ``<pos>`` prompts; BCE + Dice;
6. the latent loss between paired [SEG] / ``<pos>`` vectors; the weighted total.

While training, a term whose gradient can reach no trainable parameter is not computed (``active_terms``):
e.g. in stage 2 (LLM only) self-reconstruction from the frozen extractor's ``<pos>`` through the frozen
decoder would be a constant. Which vector is reconstructed depends on the stage (``self_recon_source``).

Nothing is cached on the module between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration

from .config import LossConfig
from .inputs import FCLMInputs
from .llm import TokenIds, language_parameters, llm_hidden_states, splice_region_tokens
from .losses import language_model_loss, latent_loss, mask_bce_dice, valid_pixels
from .mask_decoder import FCLMMaskDecoder, upsample_to_frame
from .region_extractor import HybridRegionExtractor, RegionTokens
from .vision import SamImageEncoder, crop_regions, qwen_image_features


@dataclass
class FCLMOutput:
    """Every loss part (weighted total in ``loss``) plus what was decoded, for metrics and debugging."""

    loss: torch.Tensor  #: scalar weighted total
    lm_loss: torch.Tensor  #: scalar next-token CE (mean over supervised tokens)
    mask_bce: torch.Tensor  #: scalar, mean over decoded [SEG] objects
    mask_dice: torch.Tensor
    mask_loss: torch.Tensor  #: bce_weight * mask_bce + dice_weight * mask_dice
    recon_bce: torch.Tensor  #: scalar, mean over reconstructed regions (paper Eq. 4)
    recon_dice: torch.Tensor
    recon_loss: torch.Tensor  #: bce_weight * recon_bce + dice_weight * recon_dice (before self_recon weight)
    latent_loss: torch.Tensor  #: scalar, mean over consistency pairs (paper Eq. 5)
    num_lm_tokens: int = 0
    seg_index: torch.Tensor | None = None  #: (K',) [SEG] occurrences that were decoded
    seg_logits: torch.Tensor | None = None  #: (K', 4g, 4g) their low-res mask logits
    recon_index: torch.Tensor | None = None  #: (R',) regions that were reconstructed
    recon_logits: torch.Tensor | None = None  #: (R', 4g, 4g)
    #: terms not computed (they read 0): weight 0, source "off", or constant for the trainable set
    skipped: tuple[str, ...] = ()


class FCLMModel(nn.Module):
    """FCLM: ``forward(FCLMInputs) -> FCLMOutput``; ``parameter_groups`` / ``set_stage`` pick what trains.

    Built by :func:`fclm_train.model.build_fclm` only; the keyword arguments mirror the config fields.
    """

    def __init__(
        self, *, qwen: Qwen2_5_VLForConditionalGeneration, sam_encoder: SamImageEncoder,
        region_extractor: HybridRegionExtractor, mask_decoder: FCLMMaskDecoder, token_ids: TokenIds,
        frame_side: int, local_features: str, crop_size: int, crop_expand: float, crop_min_size: int,
        hidden_source: str, max_objects_per_sample: int, object_seed: int, weights: LossConfig, dice_eps: float,
        latent_kind: str, latent_space: str, latent_pos_source: str, latent_detach_pos: bool,
        self_recon_source: dict[int, str], consistency_token: str, stage_groups: dict[int, tuple[str, ...]],
        skip_constant_terms: bool = True, uniform_graph: bool = False, validate_inputs: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.qwen, self.sam_encoder = qwen, sam_encoder
        self.region_extractor, self.mask_decoder = region_extractor, mask_decoder
        self.token_ids, self.frame_side = token_ids, frame_side
        self.local_features, self.crop_size = local_features, crop_size
        self.crop_expand, self.crop_min_size = crop_expand, crop_min_size
        self.seg_offset = {"seg": 0, "before_seg": -1}[hidden_source]
        self.max_objects, self.object_seed = max_objects_per_sample, object_seed
        self.weights, self.dice_eps = weights, dice_eps
        self.latent_kind, self.latent_space = latent_kind, latent_space
        self.latent_pos_source, self.latent_detach_pos = latent_pos_source, latent_detach_pos
        self.self_recon_source, self.consistency_token = self_recon_source, consistency_token
        self.stage_groups, self.uniform_graph, self.validate_inputs = stage_groups, uniform_graph, validate_inputs
        self.skip_constant_terms = skip_constant_terms
        self.stage = min(stage_groups)  #: set by ``set_stage``; picks the stage's self-reconstruction source

    # ----------------------------------------------------------------------------------------- parameters
    def all_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every trainable-capable group; the SAM image and prompt encoders belong to none (always frozen)."""
        return {
            "vision_tower": list(self.qwen.model.visual.named_parameters(prefix="qwen.model.visual")),
            "llm": [(f"qwen.{n}", p) for n, p in language_parameters(self.qwen)],
            "region_extractor": list(self.region_extractor.named_parameters(prefix="region_extractor")),
            "mask_decoder": [(f"mask_decoder.{n}", p) for n, p in self.mask_decoder.trainable_named_parameters()],
        }

    def parameter_groups(self, stage: int) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """The named groups trained in ``stage`` (paper: 1 -> all but SAM's encoder, 2 -> the LLM only)."""
        if stage not in self.stage_groups:
            raise ValueError(f"unknown stage {stage}; configured stages {sorted(self.stage_groups)}")
        groups = self.all_parameter_groups()
        return {name: groups[name] for name in self.stage_groups[stage]}

    def set_stage(self, stage: int) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Set ``requires_grad`` so that exactly ``parameter_groups(stage)`` trains; returns those groups."""
        groups = self.parameter_groups(stage)
        self.stage = stage
        self.requires_grad_(False)
        for named in groups.values():
            for _, param in named:
                param.requires_grad_(True)
        return groups

    # ----------------------------------------------------------------------------------------- forward
    def forward(self, inputs: FCLMInputs) -> FCLMOutput:
        ids = self.token_ids
        region_ids = self.region_token_ids
        if self.validate_inputs:
            inputs.validate(ids.image, region_ids, ids.seg)
        active = self.active_terms()
        seg_sel, recon_sel = self._choose_objects(inputs, active)
        embeddings = self._sam_embeddings(inputs, seg_sel, recon_sel)
        image_features, maps = qwen_image_features(self.qwen.model, inputs.pixel_values, inputs.image_grid_thw)
        tokens, extractor_dummy = self._region_tokens(inputs, maps, embeddings)

        embeds = self.qwen.get_input_embeddings()(inputs.input_ids)  # (B, T, D)
        embeds = splice_region_tokens(embeds, inputs.input_ids, ids, tokens.mask, tokens.pos)
        hidden = llm_hidden_states(self.qwen, inputs.input_ids, embeds, inputs.attention_mask,
                                   inputs.image_grid_thw, inputs.mm_token_type_ids, image_features)  # fmt: skip
        is_region = torch.isin(inputs.input_ids, torch.tensor(region_ids, device=hidden.device))
        labels = inputs.labels.masked_fill(is_region, -100)  # never an LM target, whatever the collate says
        if active["lm"]:
            lm_loss, n_tokens = language_model_loss(hidden, labels, self.qwen.lm_head)
        else:
            lm_loss, n_tokens = hidden.new_zeros((), dtype=torch.float32), int((labels[:, 1:] != -100).sum())

        seg_hidden = self._token_hidden(hidden, inputs.input_ids, ids.seg, self.seg_offset)  # (K, D)
        mask_parts, recon_parts, decoded, decoder_dummy = self._decode(
            inputs, seg_hidden, tokens, hidden, seg_sel, recon_sel, embeddings
        )
        latent = (self._latent(inputs, seg_hidden, tokens, hidden) if active["latent"]
                  else hidden.new_zeros((), dtype=torch.float32))
        w = self.weights
        total = w.ce_weight * lm_loss + mask_parts[2] + w.self_recon_weight * recon_parts[2] + w.latent_weight * latent
        total = total + extractor_dummy + decoder_dummy
        return FCLMOutput(
            loss=total, lm_loss=lm_loss, mask_bce=mask_parts[0], mask_dice=mask_parts[1], mask_loss=mask_parts[2],
            recon_bce=recon_parts[0], recon_dice=recon_parts[1], recon_loss=recon_parts[2], latent_loss=latent,
            num_lm_tokens=n_tokens, seg_index=seg_sel, seg_logits=decoded[0], recon_index=recon_sel,
            recon_logits=decoded[1], skipped=tuple(name for name, on in active.items() if not on),
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------- loss terms
    @property
    def recon_source(self) -> str:
        """The current stage's self-reconstruction source (extractor, llm_hidden or off)."""
        return self.self_recon_source.get(self.stage, "off")

    def active_terms(self) -> dict[str, bool]:
        """Which loss terms the next forward computes: lm, mask, recon, latent.

        A term is off when its weight is 0 (or its source "off") and, while training with
        ``skip_constant_terms``, when no trainable parameter lies upstream of it. The upstream sets follow the
        forward's data flow: the LLM hidden states depend on the LLM, the Qwen ViT and every extractor
        parameter; the extractor's ``<pos>`` on the position branch; its ``<mask>`` on the semantic branch (and
        the ViT through semantic guidance); decoded masks on the projection and decoder as well.
        """
        w = self.weights
        on = {"lm": True, "mask": bool(w.bce_weight or w.dice_weight), "recon": bool(w.self_recon_weight) and self.recon_source != "off",
              "latent": bool(w.latent_weight)}  # fmt: skip
        if not self.skip_constant_terms or not torch.is_grad_enabled() or not _trains(self.parameters()):
            return on
        hidden, decoder = self._hidden_trainable(), _trains(p for _, p in self.mask_decoder.trainable_named_parameters())
        projection = _trains(self.mask_decoder.projection.parameters())
        recon_vector = hidden if self.recon_source == "llm_hidden" else self._token_trainable(self.consistency_token)
        latent_pos = hidden if self.latent_pos_source == "llm_hidden" else self._token_trainable(self.consistency_token)
        reaches = {
            "lm": hidden,
            "mask": hidden or decoder,
            "recon": recon_vector or decoder,
            "latent": hidden or (self.latent_space == "prompt" and projection)
            or (not self.latent_detach_pos and latent_pos),
        }  # fmt: skip
        return {name: on[name] and reaches[name] for name in on}

    def _hidden_trainable(self) -> bool:
        return _trains(p for _, p in language_parameters(self.qwen)) or _trains(self.qwen.model.visual.parameters()) \
            or _trains(self.region_extractor.parameters())

    def _token_trainable(self, token: str) -> bool:
        """Whether the extractor's ``<pos>`` / ``<mask>`` output depends on a trainable parameter."""
        rx = self.region_extractor
        if token == "pos":
            return rx.position is not None and _trains(rx.position.parameters())
        semantic = (p for n, p in rx.named_parameters() if not n.startswith("position."))
        guided = rx.semantic_guidance is not None and _trains(self.qwen.model.visual.parameters())
        return rx.use_mask_token and (_trains(semantic) or guided)

    # ----------------------------------------------------------------------------------------- inference
    def prompt_embeddings(self, inputs: FCLMInputs):
        """Steps 2-4 of :meth:`forward` before the LLM, for generation (``fclm_train.infer``).

        Returns ``(embeds, image_features)``: the (B, T, D) input embeddings with ``<mask>`` / ``<pos>``
        spliced in, and the Qwen ViT output to hand to the LLM as ``mm_encoder_outputs={"image": ...}``.
        Only what the extractor needs is encoded by SAM here; [SEG] masks come from :meth:`decode_masks`.
        """
        ids = self.token_ids
        if self.validate_inputs:
            inputs.validate(ids.image, self.region_token_ids, ids.seg)
        nothing = torch.zeros(0, dtype=torch.long, device=inputs.input_ids.device)
        embeddings = self._sam_embeddings(inputs, nothing, nothing)
        image_features, maps = qwen_image_features(self.qwen.model, inputs.pixel_values, inputs.image_grid_thw)
        tokens, _ = self._region_tokens(inputs, maps, embeddings)
        embeds = self.qwen.get_input_embeddings()(inputs.input_ids)  # (B, T, D)
        return splice_region_tokens(embeds, inputs.input_ids, ids, tokens.mask, tokens.pos), image_features

    def decode_masks(self, hidden: torch.Tensor, rows: torch.Tensor, sam_images: torch.Tensor) -> torch.Tensor:
        """(K, D) mask-query hidden states, each decoded against its row's image -> (K, 4g, 4g) low-res logits.

        The same projection and SAM decoder call as training's [SEG] path (step 5 of :meth:`forward`).
        """
        unique = sorted(set(rows.tolist()))
        encoded = self.sam_encoder(sam_images[unique]) if unique else None  # (n, C, g, g)
        embeddings = {b: encoded[i] for i, b in enumerate(unique)}
        return self.mask_decoder(self.mask_decoder.project(hidden), rows, embeddings)

    @property
    def region_token_ids(self) -> tuple[int, ...]:
        """The token ids a ``<region>`` becomes (``<mask>``, ``<pos>`` or both, per the extractor)."""
        ids = self.token_ids
        return tuple(t for t, on in ((ids.mask, self.region_extractor.use_mask_token),
                                     (ids.pos, self.region_extractor.use_pos_token)) if on)  # fmt: skip

    def _choose_objects(self, inputs: FCLMInputs, active: dict[str, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded choice of <= max_objects [SEG] targets and regions per row (paper §S1.1: five)."""
        generator = torch.Generator().manual_seed(self.object_seed * 1_000_003 + int(inputs.seed))
        empty = torch.zeros(0, dtype=torch.long)
        seg = _sample_per_row(inputs.seg_batch_index, self.max_objects, generator) if active["mask"] else empty
        recon = _sample_per_row(inputs.region_batch_index, self.max_objects, generator) if active["recon"] else empty
        return seg.to(inputs.input_ids.device), recon.to(inputs.input_ids.device)

    def _sam_embeddings(self, inputs: FCLMInputs, seg_sel: torch.Tensor, recon_sel: torch.Tensor):
        """Frozen SAM embeddings (C, g, g) of the full images that some decoded object (or pooling) needs."""
        rows = set(inputs.seg_batch_index[seg_sel].tolist()) | set(inputs.region_batch_index[recon_sel].tolist())
        if self.local_features == "image" and self.region_extractor.needs_pixel_features:
            rows |= set(inputs.region_batch_index.tolist())
        if self.uniform_graph:
            rows.add(0)
        rows_sorted = sorted(rows)
        if not rows_sorted:
            return {}
        encoded = self.sam_encoder(inputs.sam_images[rows_sorted])  # (n, C, g, g)
        return {b: encoded[i] for i, b in enumerate(rows_sorted)}

    def _region_tokens(self, inputs: FCLMInputs, maps, embeddings) -> tuple[RegionTokens, torch.Tensor]:
        masks, batch_index = inputs.region_masks, inputs.region_batch_index
        zero = inputs.sam_images.new_zeros(())
        if masks.shape[0] == 0:
            if not self.uniform_graph:
                return RegionTokens(None, None), zero
            masks = valid_pixels(inputs.sam_input_sizes[:1], self.frame_side)  # dummy: row 0's whole image
            batch_index = torch.zeros(1, dtype=torch.long, device=masks.device)
        features = foreground = None
        if self.region_extractor.needs_pixel_features:
            features, foreground = self._pixel_features(inputs, masks, batch_index, embeddings)
        tokens = self.region_extractor(masks, inputs.sam_input_sizes[batch_index], batch_index, maps, features,
                                       foreground)  # fmt: skip
        if inputs.region_masks.shape[0] == 0:  # keep the extractor in the graph with zero weight
            dummy = sum(t.sum() for t in (tokens.mask, tokens.pos) if t is not None) * 0.0
            return RegionTokens(None, None), dummy
        return tokens, zero

    def _pixel_features(self, inputs: FCLMInputs, masks, batch_index, embeddings):
        """SAM features (R, C, g, g) for local aggregation / pixel enhancement and the foreground on that grid."""
        if self.local_features == "crop":
            crops, crop_masks = crop_regions(inputs.sam_images, inputs.sam_input_sizes, masks, batch_index,
                                             self.crop_size, self.crop_expand, self.crop_min_size)  # fmt: skip
            features = self.sam_encoder(crops)  # (R, C, g, g)
        else:
            features = torch.stack([embeddings[b] for b in batch_index.tolist()])
            crop_masks = masks.float()
        grid = features.shape[-2:]
        foreground = F.adaptive_avg_pool2d(crop_masks[:, None].float(), grid)[:, 0] > 0  # any overlap counts
        return features, foreground

    @staticmethod
    def _token_hidden(hidden: torch.Tensor, input_ids: torch.Tensor, token_id: int, offset: int) -> torch.Tensor:
        """(N, D) hidden states at each occurrence of ``token_id`` (shifted by ``offset``), row-major order."""
        where = (input_ids == token_id).nonzero()  # (N, 2) [row, position]
        return hidden[where[:, 0], where[:, 1] + offset]

    def _consistency_vectors(self, tokens: RegionTokens, hidden, input_ids, source: str) -> torch.Tensor | None:
        """T_pos for every region: the extractor's token or the LLM hidden state at that token."""
        if source == "llm_hidden":
            token_id = self.token_ids.pos if self.consistency_token == "pos" else self.token_ids.mask
            return self._token_hidden(hidden, input_ids, token_id, 0)
        return tokens.pos if self.consistency_token == "pos" else tokens.mask

    def _decode(self, inputs, seg_hidden, tokens, hidden, seg_sel, recon_sel, embeddings):
        """Decode chosen [SEG] and <pos> prompts per image in one SAM call each; BCE + Dice for both.

        Returns ``(mask_parts, recon_parts, (seg_logits, recon_logits), dummy)``; ``dummy`` is a zero that keeps
        projection and decoder in the graph when ``uniform_graph`` and nothing is decoded.
        """
        source = self.recon_source
        recon_vectors = None if source == "off" else self._consistency_vectors(tokens, hidden, inputs.input_ids, source)
        if recon_vectors is None:
            recon_sel = recon_sel[:0]
        queries = [seg_hidden[seg_sel]] + ([recon_vectors[recon_sel].to(hidden.dtype)] if recon_sel.numel() else [])
        rows = torch.cat([inputs.seg_batch_index[seg_sel], inputs.region_batch_index[recon_sel]])
        nothing = rows.numel() == 0
        if nothing and self.uniform_graph:
            queries, rows = [hidden[:1, 0]], rows.new_zeros(1)
        logits = self.mask_decoder(self.mask_decoder.project(torch.cat(queries)), rows, embeddings)
        dummy = logits.sum() * 0.0 if nothing else logits.new_zeros(())
        n_seg = seg_sel.numel()
        seg_logits, recon_logits = logits[:n_seg], logits[n_seg : n_seg + recon_sel.numel()]
        ignore = inputs.seg_ignore[seg_sel] if inputs.seg_ignore is not None else None
        mask_parts = self._mask_loss(seg_logits, inputs.seg_masks[seg_sel], inputs.seg_batch_index[seg_sel],
                                     inputs, ignore)  # fmt: skip
        recon_parts = self._mask_loss(recon_logits, inputs.region_masks[recon_sel],
                                      inputs.region_batch_index[recon_sel], inputs, None)  # fmt: skip
        return mask_parts, recon_parts, (seg_logits, recon_logits), dummy

    def _mask_loss(self, low_res, targets, batch_index, inputs, ignore):
        """(bce, dice, weighted sum), means over objects; zeros (in the graph) when there is no object."""
        if low_res.shape[0] == 0:
            zero = low_res.sum() * 0.0
            return zero, zero, zero
        logits = upsample_to_frame(low_res, self.frame_side)  # (K, S, S)
        weight = valid_pixels(inputs.sam_input_sizes[batch_index], self.frame_side)
        if ignore is not None:
            weight = weight & ~ignore
        bce, dice = mask_bce_dice(logits, targets, weight, self.dice_eps)
        bce, dice = bce.mean(), dice.mean()
        return bce, dice, self.weights.bce_weight * bce + self.weights.dice_weight * dice

    def _latent(self, inputs: FCLMInputs, seg_hidden, tokens: RegionTokens, hidden) -> torch.Tensor:
        """Paper Eq. 5 over ``consistency_pairs`` (T_seg from the LLM, T_pos from the configured source)."""
        pairs = inputs.consistency_pairs
        pos_vectors = self._consistency_vectors(tokens, hidden, inputs.input_ids, self.latent_pos_source)
        if pairs.shape[0] == 0 or pos_vectors is None or self.weights.latent_weight == 0:
            return hidden.new_zeros((), dtype=torch.float32)
        t_seg, t_pos = seg_hidden[pairs[:, 1]], pos_vectors[pairs[:, 0]]
        if self.latent_space == "prompt":
            t_seg, t_pos = self.mask_decoder.project(t_seg), self.mask_decoder.project(t_pos)
        if self.latent_detach_pos:
            t_pos = t_pos.detach()
        return latent_loss(t_seg, t_pos, self.latent_kind)


def _trains(params) -> bool:
    return any(p.requires_grad for p in params)


def _sample_per_row(batch_index: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indexes of at most ``limit`` occurrences per row, a seeded random subset, ascending."""
    rows = batch_index.cpu()
    keep = []
    for b in rows.unique().tolist():
        idx = (rows == b).nonzero()[:, 0]
        if len(idx) > limit:
            idx = idx[torch.randperm(len(idx), generator=generator)[:limit]].sort().values
        keep.append(idx)
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
