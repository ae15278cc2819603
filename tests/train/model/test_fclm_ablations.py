"""Each ablation switch of paper Tables 8-10 really removes (or replaces) its part.

The ablated model gets every weight it shares with the full model copied over, so an output difference can
only come from the switched part. Gates start at 0.5 here: with the default 0 the gated branches are identity
at initialisation and removing them would (correctly) change nothing.
"""

from __future__ import annotations

import pytest
import torch

from fclm_train.model import FCLMConfig

GATES = {"gate_init": 0.5}


def _params(model) -> int:
    return sum(p.numel() for p in model.region_extractor.parameters())


def _copy_shared(src, dst) -> None:
    target = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in target and target[k].shape == v.shape}
    dst.load_state_dict(shared, strict=False)


def _region_tokens(model, inputs):
    seen = {}
    handle = model.region_extractor.register_forward_hook(lambda m, a, out: seen.update(tokens=out))
    out = model(inputs)
    handle.remove()
    return seen["tokens"], out


ABLATIONS = {
    "no_local_aggregation": {"local_aggregation": False},
    "no_pixel_enhancement": {"pixel_enhancement": False},
    "no_semantic_guidance": {"semantic_guidance": False},
    "cross_attention": {"guidance_attention": "cross"},
    "deformable_2_points": {"num_points": 2},
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_semantic_switch_changes_params_and_mask_token(name, build, make_batch):
    full_cfg = FCLMConfig.preset("tiny", region_extractor=GATES)
    ablated_cfg = FCLMConfig.preset("tiny", region_extractor={**GATES, **ABLATIONS[name]})
    full, ablated = build(full_cfg), build(ablated_cfg, seed=1)
    _copy_shared(full, ablated)
    assert _params(ablated) != _params(full)
    if name != "cross_attention":  # cross attention replaces deformable attention; the others remove
        assert _params(ablated) < _params(full)
    inputs = make_batch(full_cfg)
    full_tokens, full_out = _region_tokens(full, inputs)
    ablated_tokens, ablated_out = _region_tokens(ablated, inputs)
    torch.testing.assert_close(ablated_tokens.pos, full_tokens.pos)  # the position branch is untouched
    assert not torch.allclose(ablated_tokens.mask, full_tokens.mask)
    assert ablated_out.loss.item() != full_out.loss.item()  # and it reaches the LLM output


def test_sampling_points_scale_the_deformable_attention(build, make_batch):
    counts, tokens = [], []
    cfg = FCLMConfig.preset("tiny", region_extractor=GATES)
    reference = build(cfg)
    for points in (2, 4, 8):
        model = build(FCLMConfig.preset("tiny", region_extractor={**GATES, "num_points": points}))
        _copy_shared(reference, model)
        counts.append(_params(model))
        tokens.append(_region_tokens(model, make_batch(cfg))[0].mask)
    heads = cfg.region_extractor.num_heads
    per_point = heads * 3 * (cfg.llm.hidden_size + 1)  # 2 offsets + 1 weight per head and point
    assert counts[1] - counts[0] == 2 * per_point and counts[2] - counts[1] == 4 * per_point
    assert not torch.allclose(tokens[0], tokens[1]) and not torch.allclose(tokens[1], tokens[2])


@pytest.mark.parametrize("tokens", ["mask", "pos"])
def test_single_token_variants_drop_a_branch(tokens, build, make_batch, tokenizer):
    full_cfg = FCLMConfig.preset("tiny", region_extractor=GATES)
    cfg = FCLMConfig.preset("tiny", region_extractor={**GATES, "tokens": tokens}, loss={"consistency_token": tokens})
    full, single = build(full_cfg), build(cfg, seed=1)
    _copy_shared(full, single)
    assert _params(single) < _params(full)
    inputs = make_batch(cfg)
    ids = single.token_ids
    n_mask, n_pos = int((inputs.input_ids == ids.mask).sum()), int((inputs.input_ids == ids.pos).sum())
    assert (n_mask, n_pos) == ((3, 0) if tokens == "mask" else (0, 3))
    single_tokens, single_out = _region_tokens(single, inputs)
    full_tokens, full_out = _region_tokens(full, make_batch(full_cfg))
    kept, dropped = (single_tokens.mask, single_tokens.pos) if tokens == "mask" else (single_tokens.pos,
                                                                                       single_tokens.mask)  # fmt: skip
    assert dropped is None
    torch.testing.assert_close(kept, getattr(full_tokens, tokens))
    assert single_out.loss.item() != full_out.loss.item()
    assert single_out.recon_loss.item() > 0  # self-reconstruction runs from the kept token


def test_pos_only_model_never_runs_sam_on_crops(build, make_batch):
    cfg = FCLMConfig.preset("tiny", region_extractor={"tokens": "pos"})
    model = build(cfg)
    assert not model.region_extractor.needs_pixel_features
    batch_sizes = []
    model.sam_encoder.register_forward_hook(lambda m, a, out: batch_sizes.append(a[0].shape[0]))
    model(make_batch(cfg))
    assert batch_sizes == [3]  # the full images for mask decoding only


@pytest.mark.parametrize(
    "overrides",
    [
        {"region_extractor": {"local_aggregation": False, "pixel_enhancement": False, "semantic_guidance": False}},
        {"region_extractor": {"tokens": "mask"}},  # consistency_token "pos" needs a <pos> token
        {"region_extractor": {"num_heads": 5}},
        {"stage_groups": {1: ["llm", "sam_encoder"]}},
    ],
)
def test_invalid_switch_combinations_fail_early(overrides):
    with pytest.raises(ValueError):
        FCLMConfig.preset("tiny", **overrides)
