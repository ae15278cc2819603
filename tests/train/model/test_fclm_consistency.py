"""Every loss term trains something in every stage; a term that could not is skipped, and only such a term.

For every stage and every consistency / ablation switch, each non-zero loss term is backpropagated alone and must
reach at least one trainable parameter. The skip rule is checked both ways: with ``skip_constant_terms`` off,
every term the model would have skipped reaches no trainable parameter (so nothing useful is ever skipped).
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from fclm_train.model import FCLMConfig

TERMS = {"lm": "lm_loss", "mask": "mask_loss", "recon": "recon_loss", "latent": "latent_loss"}
#: stage 2 with the decoder projection and SAM decoder trained as well (the documented alternative)
STAGE2_WITH_DECODER = {1: ["vision_tower", "llm", "region_extractor", "mask_decoder"], 2: ["llm", "mask_decoder"]}

CONSISTENCY = [
    {"self_recon_source": recon, "latent_pos_source": pos, "latent_space": space, "latent_detach_pos": detach}
    for recon, pos, space, detach in itertools.product(
        ("extractor", "llm_hidden", "off"), ("extractor", "llm_hidden"), ("llm", "prompt"), (True, False))
]  # fmt: skip
ABLATIONS = [
    {"region_extractor": {"tokens": "mask"}, "loss": {"consistency_token": "mask"}},
    {"region_extractor": {"tokens": "pos"}},
    {"region_extractor": {"tokens": "both"}, "loss": {"consistency_token": "mask"}},
    {"region_extractor": {"local_aggregation": False}},
    {"region_extractor": {"pixel_enhancement": False}},
    {"region_extractor": {"semantic_guidance": False}},
    {"region_extractor": {"guidance_attention": "cross"}},
    {"region_extractor": {"local_features": "image"}},
    {"stage_groups": STAGE2_WITH_DECODER},
]
CASES = [({"loss": c}, f"consistency-{i}") for i, c in enumerate(CONSISTENCY)] + [
    ({**a, "loss": {**a.get("loss", {}), "self_recon_source": recon}}, f"ablation-{i}-{recon}")
    for i, a in enumerate(ABLATIONS) for recon in ("extractor", "llm_hidden")
]  # fmt: skip


def _reached(term: torch.Tensor, params: list[torch.nn.Parameter]) -> list[int]:
    """Indexes of the trainable parameters that ``term`` alone sends a non-zero gradient to."""
    if not term.requires_grad:
        return []
    grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
    return [i for i, g in enumerate(grads) if g is not None and bool(g.abs().sum() > 0)]


@pytest.mark.parametrize("overrides", [c for c, _ in CASES], ids=[name for _, name in CASES])
@pytest.mark.parametrize("stage", [1, 2])
def test_each_term_alone_reaches_a_trainable_parameter(overrides, stage, build, make_batch):
    cfg = FCLMConfig.preset("tiny", **overrides)
    model = build(cfg)
    model.set_stage(stage)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs = make_batch(cfg)
    out = model(inputs)
    for name, field in TERMS.items():
        term = getattr(out, field)
        if name in out.skipped:
            assert term.item() == 0.0, name
            continue
        assert term.item() != 0.0, f"{name} is computed but 0"
        assert _reached(term, params), f"stage {stage}: {name} reaches no trainable parameter"

    # the skip rule is exact: forced, every skipped term would have reached nothing
    forced_cfg = FCLMConfig.preset("tiny", **{**overrides, "loss": {**overrides["loss"], "skip_constant_terms": False}})
    forced = build(forced_cfg)
    forced.set_stage(stage)
    forced_out = forced(inputs)
    for name in out.skipped:
        if name == "recon" and cfg.loss.self_recon_source[stage] == "off":
            continue  # "off" is a choice, not a skip
        term = getattr(forced_out, TERMS[name])
        assert term.item() != 0.0 and not _reached(term, [p for p in forced.parameters() if p.requires_grad]), name


def test_stage_two_reconstructs_from_the_llm_hidden_state_and_trains_the_llm(cfg, build, make_batch):
    assert cfg.loss.self_recon_source == {1: "extractor", 2: "llm_hidden"}
    model = build(cfg)
    model.set_stage(2)
    out = model(make_batch(cfg))
    assert out.skipped == () and out.recon_loss.item() > 0 and out.recon_index.numel() == 3
    out.recon_loss.backward()
    llm = {id(p) for _, p in model.parameter_groups(2)["llm"]}
    reached = {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached and reached <= llm


def test_stage_two_from_the_frozen_extractor_skips_the_decode(build, make_batch):
    cfg = FCLMConfig.preset("tiny", loss={"self_recon_source": "extractor"})
    model = build(cfg)
    model.set_stage(2)
    calls = []
    model.sam_encoder.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    out = model(make_batch(cfg))
    assert out.skipped == ("recon",) and out.recon_loss.item() == 0.0 and out.recon_index.numel() == 0
    assert out.mask_loss.item() > 0 and out.latent_loss.item() > 0
    # the DLC row (row 0) is not SAM-encoded any more: only rows with a [SEG] (1, 2) plus the region crops (3)
    assert sum(calls) == 2 + 3
    with torch.no_grad():  # evaluation computes every term
        assert model(make_batch(cfg)).recon_loss.item() > 0


def test_stage_one_reconstructs_from_the_extractor_and_trains_the_position_branch(cfg, build, make_batch):
    model = build(cfg)
    model.set_stage(1)
    out = model(make_batch(cfg))
    out.recon_loss.backward()
    assert all(p.grad is not None for p in model.region_extractor.position.parameters())
    llm = [p.grad for _, p in model.parameter_groups(1)["llm"]]
    assert all(g is None or not g.any() for g in llm)  # the extractor's <pos> never passes the LLM


def test_self_recon_source_forms(build):
    single = FCLMConfig.preset("tiny", loss={"self_recon_source": "llm_hidden"})
    assert single.loss.self_recon_source == {1: "llm_hidden", 2: "llm_hidden"}
    merged = FCLMConfig.preset("tiny", loss={"self_recon_source": {2: "off"}})
    assert merged.loss.self_recon_source == {1: "extractor", 2: "off"}
    roundtrip = FCLMConfig.from_dict(json.loads(json.dumps(merged.to_dict())))  # JSON keys are strings
    assert roundtrip.loss.self_recon_source == {1: "extractor", 2: "off"}
    with pytest.raises(ValueError, match="self_recon_source"):
        FCLMConfig.preset("tiny", loss={"self_recon_source": "mask"})
    model = build(merged)
    model.set_stage(2)
    assert model.recon_source == "off" and not model.active_terms()["recon"]
