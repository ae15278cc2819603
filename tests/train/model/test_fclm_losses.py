"""Loss functions in isolation, and the mask / self-reconstruction losses falling when overfitting one batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fclm_train.model import FCLMConfig
from fclm_train.model.losses import language_model_loss, latent_loss, mask_bce_dice, valid_pixels


@pytest.mark.parametrize("kind", ["cosine", "mse", "kl"])
def test_latent_loss_zero_for_identical_and_positive_otherwise(kind):
    torch.manual_seed(0)
    a, b = torch.randn(4, 32), torch.randn(4, 32)
    same = latent_loss(a, a.clone(), kind)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    if kind != "cosine":
        assert same.item() == 0.0  # exact for MSE / KL
    assert latent_loss(a, b, kind).item() > 1e-3


def test_cosine_latent_matches_equation_5_and_ignores_scale():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 2.0]])  # orthogonal (loss 1), parallel (loss 0)
    assert latent_loss(a, b, "cosine").item() == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError):
        latent_loss(a, b, "l1")


def test_mask_bce_dice_perfect_prediction_and_ignored_pixels():
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    weight = torch.ones_like(target)
    perfect = torch.where(target, 20.0, -20.0)
    bce, dice = mask_bce_dice(perfect, target, weight, eps=1.0)
    assert bce.item() < 1e-6 and dice.item() < 1e-3
    wrong = perfect.clone()
    wrong[0, 0, 0] = 20.0  # a false positive ...
    ignore = torch.zeros_like(target)
    ignore[0, 0, 0] = True  # ... on an ignored pixel does not count
    bce_i, dice_i = mask_bce_dice(wrong, target, weight & ~ignore, eps=1.0)
    torch.testing.assert_close((bce_i, dice_i), (bce, dice))
    bce_w, dice_w = mask_bce_dice(wrong, target, weight, eps=1.0)
    assert bce_w > bce and dice_w > dice


def test_valid_pixels_follow_pre_pad_sizes():
    valid = valid_pixels(torch.tensor([[3, 5], [8, 2]]), 8)
    assert valid[0].sum() == 15 and valid[0, 2, 4] and not valid[0, 3, 0]
    assert valid[1].sum() == 16 and not valid[1, 0, 2]


def test_language_model_loss_counts_only_supervised_next_tokens():
    torch.manual_seed(0)
    head = nn.Linear(8, 11, bias=False)
    hidden = torch.randn(2, 5, 8)
    labels = torch.full((2, 5), -100)
    labels[0, 3], labels[1, 4] = 7, 2
    loss, count = language_model_loss(hidden, labels, head)
    logits = head(torch.stack([hidden[0, 2], hidden[1, 3]]))  # position t predicts token t + 1
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, torch.tensor([7, 2])))
    assert count == 2
    empty, zero = language_model_loss(hidden, torch.full((2, 5), -100), head)
    assert zero == 0 and empty.item() == 0.0


def test_mask_and_self_reconstruction_losses_fall_when_overfitting(build, make_batch):
    cfg = FCLMConfig.preset("tiny")
    model = build(cfg)
    inputs = make_batch(cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(36):
        out = model(inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append((out.mask_loss.item(), out.recon_loss.item(), out.lm_loss.item()))
    first = history[0]
    best_late = [min(step[i] for step in history[-5:]) for i in range(3)]
    assert best_late[0] < 0.5 * first[0], history  # [SEG] mask loss (BCE + Dice)
    assert best_late[1] < 0.5 * first[1], history  # self-reconstruction of the region from <pos>
    assert best_late[2] < 0.5 * first[2], history  # LM cross-entropy


def test_latent_loss_is_pulled_to_zero_and_only_moves_t_seg(build, make_batch):
    cfg = FCLMConfig.preset("tiny", loss={"ce_weight": 0.0, "bce_weight": 0.0, "dice_weight": 0.0,
                                          "self_recon_weight": 0.0})  # fmt: skip
    model = build(cfg)
    inputs = make_batch(cfg)
    model.set_stage(2)  # LLM only: the extractor's <pos> is a fixed pseudo-label
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.latent_loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is None for p in model.region_extractor.parameters())
