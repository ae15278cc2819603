"""Units of the hybrid region extractor: deformable sampling, geometry, crops, the SAM encoder at crop size."""

from __future__ import annotations

import math

import torch

from fclm_train.model import FCLMConfig, build_fclm
from fclm_train.model.attention import DeformableGuidance
from fclm_train.model.region_extractor import mask_grids, region_geometry
from fclm_train.model.vision import crop_regions, mask_boxes


def _identity_deformable(dim: int = 4, heads: int = 2, points: int = 4) -> DeformableGuidance:
    attn = DeformableGuidance(dim, heads, points)
    with torch.no_grad():
        attn.value_proj.weight.copy_(torch.eye(dim))
        attn.output_proj.weight.copy_(torch.eye(dim))
    return attn


def _coordinate_map(h: int, w: int) -> torch.Tensor:
    """(h, w, 4) map whose features are (x, y, x, y) of each cell."""
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return torch.stack([xs, ys, xs, ys], -1)


def test_deformable_init_is_a_circle_with_uniform_weights():
    attn = DeformableGuidance(dim=8, num_heads=4, num_points=3)
    bias = attn.sampling_offsets.bias.view(4, 3, 2)
    for h in range(4):
        angle = 2 * math.pi * h / 4
        direction = torch.tensor([math.cos(angle), math.sin(angle)])
        direction = direction / direction.abs().max()
        for p in range(3):
            torch.testing.assert_close(bias[h, p], direction * (p + 1), atol=1e-6, rtol=0)
    assert attn.sampling_offsets.weight.abs().sum() == 0 and attn.attention_weights.weight.abs().sum() == 0


def test_deformable_samples_bilinearly_around_the_reference():
    attn = _identity_deformable()
    maps = [_coordinate_map(5, 6)]
    reference = torch.tensor([[(2 + 0.5) / 6, (3 + 0.5) / 5]])  # centre of cell x=2, y=3
    query, index = torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()  # every point on the reference
        torch.testing.assert_close(attn(query, reference, maps, index), torch.tensor([[2.0, 3.0, 2.0, 3.0]]))
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0]).repeat(8))  # one cell to the right
        torch.testing.assert_close(attn(query, reference, maps, index), torch.tensor([[3.0, 3.0, 3.0, 3.0]]))
        attn.sampling_offsets.bias.copy_(torch.tensor([0.5, 0.0]).repeat(8))  # half a cell: bilinear
        torch.testing.assert_close(attn(query, reference, maps, index), torch.tensor([[2.5, 3.0, 2.5, 3.0]]))


def test_deformable_groups_regions_by_image():
    attn = _identity_deformable()
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
    maps = [_coordinate_map(4, 4), _coordinate_map(4, 4) + 10.0]
    reference = torch.tensor([[0.125, 0.125], [0.125, 0.125], [0.875, 0.875]])
    out = attn(torch.zeros(3, 4), reference, maps, torch.tensor([1, 0, 1]))
    torch.testing.assert_close(out[:, 0], torch.tensor([10.0, 0.0, 13.0]))


def test_region_geometry_of_a_box():
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 2:6, 4:12] = True  # rows 2..5, cols 4..11 inside a 10 x 16 (h x w) image
    geometry = region_geometry(masks, torch.tensor([[10, 16]]))[0]
    # centroid (x, y), box size (w, h), corners, area; x normalised by w = 16, y by h = 10
    expected = [8 / 16, 4 / 10, 8 / 16, 4 / 10, 4 / 16, 2 / 10, 12 / 16, 6 / 10, 32 / 160]
    torch.testing.assert_close(geometry, torch.tensor(expected))


def test_mask_grids_measure_occupancy_inside_the_image_only():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :2] = True  # the left half of a 4 x 4 image at the top-left of the frame
    grid = mask_grids(masks, torch.tensor([[4, 4]]), 2).view(2, 2)
    torch.testing.assert_close(grid, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_crop_regions_zoom_into_the_box_with_context():
    images = torch.zeros(1, 3, 64, 64)
    images[0, 0, 20:30, 30:40] = 1.0  # a red square
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 20:30, 30:40] = True
    assert mask_boxes(masks).tolist() == [[30.0, 20.0, 40.0, 30.0]]
    crops, crop_masks = crop_regions(images, torch.tensor([[64, 48]]), masks, torch.tensor([0]), crop_size=32,
                                     expand=1.0, min_size=0)  # fmt: skip
    assert crops.shape == (1, 3, 32, 32) and crop_masks.shape == (1, 32, 32)
    # 3x the box (30 x 30 px) fills the 32 px crop; the square is the middle third
    assert crop_masks[0, 16, 16] == 1 and crop_masks[0, 2, 2] == 0
    assert 0.08 < crop_masks.mean() < 0.14
    torch.testing.assert_close(crops[0, 0] > 0.5, crop_masks[0] > 0.5)


def test_sam_encoder_runs_crops_at_other_sizes(tokenizer):
    cfg = FCLMConfig.preset("tiny")
    model = build_fclm(cfg, tokenizer=tokenizer)
    out = model.sam_encoder(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, cfg.sam.prompt_dim, 2, 2)
    assert model.sam_encoder(torch.randn(1, 3, 64, 64)).shape == (1, cfg.sam.prompt_dim, 4, 4)
