"""Trainable-parameter groups per paper stage and the always-frozen SAM parts."""

from __future__ import annotations

import pytest
import torch

from fclm_train.model.mask_decoder import UNUSED_DECODER_PREFIXES


def _trainable_ids(model) -> set[int]:
    return {id(p) for p in model.parameters() if p.requires_grad}


def test_groups_are_disjoint_and_cover_every_trainable_parameter(cfg, build):
    model = build(cfg)  # build_fclm leaves the model in stage 1
    groups = model.parameter_groups(1)
    ids = [id(p) for named in groups.values() for _, p in named]
    assert len(ids) == len(set(ids))
    assert set(ids) == _trainable_ids(model)
    names = [n for named in groups.values() for n, _ in named]
    assert all(n.startswith(("qwen.", "region_extractor.", "mask_decoder.")) for n in names)


def test_stage_one_freezes_only_the_sam_encoder_prompt_encoder_and_unused_decoder_heads(cfg, build):
    model = build(cfg)
    model.set_stage(1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("sam_encoder.", "mask_decoder.prompt_encoder.", "mask_decoder.decoder.")) for n in frozen)
    assert any(n.startswith("sam_encoder.") for n in frozen)
    decoder_frozen = {n.removeprefix("mask_decoder.decoder.") for n in frozen if n.startswith("mask_decoder.decoder.")}
    assert decoder_frozen and all(n.startswith(UNUSED_DECODER_PREFIXES) for n in decoder_frozen)
    assert model.qwen.lm_head.weight.requires_grad and model.qwen.model.visual.merger.mlp[0].weight.requires_grad


def test_stage_two_trains_the_llm_only(cfg, build, make_batch):
    model = build(cfg)
    groups = model.set_stage(2)
    assert list(groups) == ["llm"]
    llm_ids = {id(p) for _, p in groups["llm"]}
    assert _trainable_ids(model) == llm_ids
    assert not any(p.requires_grad for p in model.region_extractor.parameters())
    assert not any(p.requires_grad for p in model.mask_decoder.parameters())
    assert not any(p.requires_grad for p in model.qwen.model.visual.parameters())
    model(make_batch(cfg)).loss.backward()
    for name, param in model.named_parameters():
        if id(param) in llm_ids:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name


def test_sam_encoder_stays_frozen_and_in_eval_mode(cfg, build):
    model = build(cfg)
    model.train()
    assert not model.sam_encoder.training and not model.sam_encoder.encoder.training
    model.set_stage(1)
    assert not any(p.requires_grad for p in model.sam_encoder.parameters())
    images = torch.randn(2, 3, cfg.image_long_side, cfg.image_long_side, requires_grad=True)
    assert not model.sam_encoder(images).requires_grad  # runs under no_grad


def test_unknown_stage_is_rejected(cfg, build):
    with pytest.raises(ValueError, match="unknown stage"):
        build(cfg).parameter_groups(3)
