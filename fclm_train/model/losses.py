"""FCLM losses: language modelling, mask BCE + Dice, self-reconstruction and the latent consistency loss.

Total (paper Eqs. 3-5): ``ce * L_ce + (bce * BCE + dice * Dice)[SEG] + self_recon * (bce * BCE + dice * Dice)<pos>
+ latent * L_latent``. Mask terms are per-object means over the pre-pad SAM frame (long side 1024), averaged over
the objects of the batch (LISA's normalisation). To add a loss: a function here, a weight in
:class:`~fclm_train.model.config.LossConfig` and a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import IGNORE_INDEX  # noqa: F401  (re-exported: the loss's ignore label)


def language_model_loss(
    hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module
) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy, mean over supervised tokens.

    hidden (B, T, D), labels (B, T). The head runs only on supervised positions, so the (T, vocab) logits of
    prompt and image tokens are never materialised. Returns ``(loss, number of supervised tokens)``.
    """
    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    keep = targets != IGNORE_INDEX
    count = int(keep.sum())
    if count == 0:
        return hidden.sum() * 0.0, 0
    logits = lm_head(hidden[:, :-1][keep])  # (N, vocab)
    return F.cross_entropy(logits.float(), targets[keep]), count


def valid_pixels(input_sizes: torch.Tensor, side: int) -> torch.Tensor:
    """(K, 2) pre-pad (h, w) -> (K, side, side) bool, True inside the image."""
    idx = torch.arange(side, device=input_sizes.device)
    rows = idx[None, :] < input_sizes[:, :1]  # (K, side)
    cols = idx[None, :] < input_sizes[:, 1:]
    return rows[:, :, None] & cols[:, None, :]


def mask_bce_dice(
    logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object BCE (mean over counted pixels) and Dice loss.

    logits (K, S, S) float, targets (K, S, S) bool, weight (K, S, S) bool: pixels that count (inside the image and
    not ignored). Returns ``(bce (K,), dice (K,))``.
    """
    w = weight.float()
    t = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    bce = (bce * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)
    p = logits.sigmoid() * w
    t = t * w
    inter = (p * t).flatten(1).sum(1)
    dice = 1.0 - (2.0 * inter + eps) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + eps)
    return bce, dice


def latent_loss(t_seg: torch.Tensor, t_pos: torch.Tensor, kind: str) -> torch.Tensor:
    """Consistency between paired [SEG] and <pos> vectors, (P, C) each -> scalar (mean over pairs).

    cosine: 1 - cos(T_seg, T_pos) (paper Eq. 5); mse: mean squared difference; kl: KL(softmax T_pos ||
    softmax T_seg) over the channel axis. Each is 0 for identical inputs.
    """
    t_seg, t_pos = t_seg.float(), t_pos.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(t_seg, t_pos, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(t_seg, t_pos)
    if kind == "kl":
        log_seg, log_pos = t_seg.log_softmax(-1), t_pos.log_softmax(-1)
        return F.kl_div(log_seg, log_pos, log_target=True, reduction="batchmean")
    raise ValueError(f"unknown latent loss {kind!r}; choose cosine, mse or kl")
