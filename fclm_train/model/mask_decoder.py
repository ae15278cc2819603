"""Mask decoding: LLM hidden state -> projection -> 256-d prompt -> SAM prompt encoder / mask decoder.

The same projection and decoder serve the ``[SEG]`` tokens (grounding) and the ``<pos>`` tokens
(self-reconstruction, paper Eq. 4). The decoder runs once per image, batched over that image's objects.
SAM's prompt encoder only contributes its ``no_mask_embed`` dense embedding and stays frozen (as in LISA);
the IoU head and the three multimask hypernetworks are frozen too, since single-mask output never uses them
(that keeps DDP free of unused trainable parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

#: Parameters of SAM's MaskDecoder that ``multimask_output=False`` never reaches (frozen, not in any group).
UNUSED_DECODER_PREFIXES = ("iou_prediction_head.", "output_hypernetworks_mlps.1.", "output_hypernetworks_mlps.2.",
                           "output_hypernetworks_mlps.3.")  # fmt: skip


def build_sam_prompt_modules(
    prompt_dim: int, frame_side: int, patch_size: int, mask_in_chans: int, decoder_depth: int,
    decoder_mlp_dim: int, decoder_num_heads: int, iou_head_hidden_dim: int,
) -> tuple[PromptEncoder, MaskDecoder]:  # fmt: skip
    """segment-anything's prompt encoder and mask decoder for a ``frame_side`` square input."""
    grid = frame_side // patch_size
    prompt_encoder = PromptEncoder(
        embed_dim=prompt_dim, image_embedding_size=(grid, grid), input_image_size=(frame_side, frame_side),
        mask_in_chans=mask_in_chans,
    )  # fmt: skip
    transformer = TwoWayTransformer(
        depth=decoder_depth, embedding_dim=prompt_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=prompt_dim, iou_head_depth=3,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )  # fmt: skip
    return prompt_encoder, decoder


class FCLMMaskDecoder(nn.Module):
    """(K, D) hidden states + per-image SAM embeddings -> (K, 4g, 4g) low-resolution mask logits."""

    def __init__(self, hidden_size: int, prompt_encoder: PromptEncoder, decoder: MaskDecoder) -> None:
        super().__init__()
        prompt_dim = prompt_encoder.embed_dim
        # LISA / Sa2VA text_hidden_fcs: Linear(d, d) -> ReLU -> Linear(d, 256)
        self.projection = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, prompt_dim)
        )
        self.prompt_encoder = prompt_encoder
        self.decoder = decoder
        self.prompt_encoder.requires_grad_(False)
        for name, param in self.decoder.named_parameters():
            if name.startswith(UNUSED_DECODER_PREFIXES):
                param.requires_grad_(False)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Projection + the parts of SAM's decoder that single-mask output uses."""
        named = list(self.projection.named_parameters(prefix="projection"))
        named += [
            (f"decoder.{n}", p) for n, p in self.decoder.named_parameters() if not n.startswith(UNUSED_DECODER_PREFIXES)
        ]
        return named

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(K, D) -> (K, prompt_dim)."""
        return self.projection(hidden.to(self.projection[0].weight.dtype))

    def forward(
        self, prompts: torch.Tensor, batch_index: torch.Tensor, image_embeddings: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """Decode K prompts (K, prompt_dim), each against its row's (C, g, g) SAM embedding -> (K, 4g, 4g)."""
        outputs: list[torch.Tensor] = []
        order: list[torch.Tensor] = []
        for b in batch_index.unique().tolist():
            sel = (batch_index == b).nonzero()[:, 0]
            embedding = image_embeddings[b][None]  # (1, C, g, g)
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embedding)
            logits, _ = self.decoder(
                image_embeddings=embedding, image_pe=self.prompt_encoder.get_dense_pe().to(embedding.dtype),
                sparse_prompt_embeddings=prompts[sel, None, :].to(embedding.dtype),
                dense_prompt_embeddings=dense.to(embedding.dtype), multimask_output=False,
            )  # (k, 1, 4g, 4g)  # fmt: skip
            outputs.append(logits[:, 0])
            order.append(sel)
        if not outputs:
            side = 4 * self.prompt_encoder.image_embedding_size[0]
            return prompts.new_zeros(0, side, side)
        logits = torch.cat(outputs)
        return logits[torch.argsort(torch.cat(order))]  # back to the caller's order


def upsample_to_frame(low_res: torch.Tensor, side: int) -> torch.Tensor:
    """(K, h, w) low-res logits -> (K, side, side) logits in the SAM frame (SAM's first postprocess step)."""
    return F.interpolate(low_res[:, None].float(), size=(side, side), mode="bilinear", align_corners=False)[:, 0]


def postprocess_masks(
    low_res: torch.Tensor, side: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """(K, h, w) logits of one image -> (K, H, W) logits at the original image size (evaluation)."""
    frame = upsample_to_frame(low_res, side)[:, : input_size[0], : input_size[1]]
    return F.interpolate(frame[:, None], size=tuple(original_size), mode="bilinear", align_corners=False)[:, 0]
