"""Forward / backward of the tiny FCLM: every loss part, gradient reach, M-RoPE, the token splice."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fclm_train.model import FCLMConfig

LOSS_FIELDS = ("loss", "lm_loss", "mask_bce", "mask_dice", "mask_loss", "recon_bce", "recon_dice", "recon_loss",
               "latent_loss")  # fmt: skip


def _open_gates(model, value: float = 0.5) -> None:
    """Zero-initialised gates block gradient to their branches at step 0; open them to test the branches."""
    with torch.no_grad():
        for name, param in model.region_extractor.named_parameters():
            if name.split(".")[-1].startswith("gate"):
                param.fill_(value)


def test_forward_returns_every_loss_part_finite_and_positive(cfg, build, make_batch):
    model = build(cfg)
    out = model(make_batch(cfg))
    for name in LOSS_FIELDS:
        value = getattr(out, name)
        assert value.ndim == 0 and torch.isfinite(value), name
        assert value.item() > 0, name
    w = model.weights
    expected = (w.ce_weight * out.lm_loss + out.mask_loss + w.self_recon_weight * out.recon_loss
                + w.latent_weight * out.latent_loss)
    torch.testing.assert_close(out.loss, expected)
    assert out.seg_logits.shape[0] == 3 and out.recon_logits.shape[0] == 3  # all objects (<= 5 per row)


def test_gradients_reach_every_trainable_parameter(cfg, build, make_batch):
    """From the default init, every trainable parameter gets a non-zero gradient within three steps.

    Zero gates (DAM) and Deformable DETR's zero offset / weight projections make the chain gate -> projection
    weights -> query LayerNorm open one link per step; everything else gets gradient at step 0.
    """
    model = build(cfg)
    inputs = make_batch(cfg)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    reached: dict[str, int] = {}
    for step in range(3):
        optimizer.zero_grad()
        model(inputs).loss.backward()
        for name, param in model.named_parameters():
            if param.grad is not None and param.grad.abs().sum() > 0:
                reached.setdefault(name, step)
        optimizer.step()
    groups = model.parameter_groups(1)
    assert set(groups) == {"vision_tower", "llm", "region_extractor", "mask_decoder"}
    for group, named in groups.items():
        missing = [n for n, _ in named if n not in reached]
        assert not missing, f"{group}: no gradient for {missing}"
    late = {n for n, step in reached.items() if step > 0}
    assert late and all(n.startswith("region_extractor.") for n in late), late
    frozen = [*model.sam_encoder.parameters(), *model.mask_decoder.prompt_encoder.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in frozen)


def test_zero_gates_still_receive_gradient(cfg, build, make_batch):
    model = build(cfg)  # default gate_init = 0: branches are identity at step 0
    model(make_batch(cfg)).loss.backward()
    gates = {n: p for n, p in model.region_extractor.named_parameters() if n.split(".")[-1].startswith("gate")}
    assert len(gates) == 3  # pixel enhancement, semantic guidance attention + MLP
    for name, gate in gates.items():
        assert gate.grad is not None and gate.grad.abs() > 0, name


def test_llm_receives_3d_mrope_positions(cfg, build, make_batch):
    """Fails if the LLM gets 1-D positions (transformers 5.x silently does so without mm_token_type_ids)."""
    model = build(cfg)
    inputs = make_batch(cfg)
    seen = {}

    def capture(module, args, kwargs):
        seen["position_ids"] = kwargs["position_ids"]

    handle = model.qwen.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    model(inputs)
    handle.remove()
    positions = seen["position_ids"]
    assert positions is not None and positions.shape == (3, *inputs.input_ids.shape)
    expected, _ = model.qwen.model.get_rope_index(inputs.input_ids, inputs.mm_token_type_ids, inputs.image_grid_thw,
                                                  attention_mask=inputs.attention_mask)  # fmt: skip
    torch.testing.assert_close(positions, expected)
    image = inputs.mm_token_type_ids.bool()
    t, h, w = positions[0][image], positions[1][image], positions[2][image]
    assert not torch.equal(h, w) and not torch.equal(t, h)  # a 1-D fallback has t == h == w everywhere
    text_after = positions[:, 0, -1]
    assert text_after[0] == text_after[1] == text_after[2]


def test_mrope_positions_change_the_output(cfg, build, make_batch):
    """1-D positions (what transformers falls back to) give a different loss than the 3-D ones we pass."""
    model = build(cfg)
    with torch.no_grad():  # random init attends almost uniformly; sharpen it so positions matter
        for layer in model.qwen.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(30.0)
            layer.self_attn.k_proj.weight.mul_(30.0)
    inputs = make_batch(cfg)
    three_d = model(inputs).lm_loss
    original = model.qwen.model.get_rope_index

    def one_d(input_ids, mm_token_type_ids, **kwargs):
        return original(input_ids, mm_token_type_ids=torch.zeros_like(mm_token_type_ids), **kwargs)

    model.qwen.model.get_rope_index = one_d
    try:
        assert abs(three_d.item() - model(inputs).lm_loss.item()) > 1e-3
    finally:
        del model.qwen.model.get_rope_index


def test_region_tokens_are_spliced_into_llm_inputs(cfg, build, make_batch):
    model = build(cfg)
    inputs = make_batch(cfg)
    seen = {}
    model.qwen.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.update(embeds=kw["inputs_embeds"]), with_kwargs=True
    )
    model.region_extractor.register_forward_hook(lambda m, a, out: seen.update(tokens=out))
    model(inputs)
    embeds, tokens = seen["embeds"], seen["tokens"]
    ids = model.token_ids
    torch.testing.assert_close(embeds[inputs.input_ids == ids.mask], tokens.mask)
    torch.testing.assert_close(embeds[inputs.input_ids == ids.pos], tokens.pos)
    assert tokens.mask.shape == (3, cfg.llm.hidden_size)


def test_no_lm_loss_on_region_tokens(cfg, build, make_batch):
    model = build(cfg)
    inputs = make_batch(cfg)
    base = model(inputs).lm_loss
    polluted = inputs.labels.clone()
    ids = model.token_ids
    is_region = (inputs.input_ids == ids.mask) | (inputs.input_ids == ids.pos)
    polluted[is_region] = 5  # a collate bug: labels on <mask>/<pos>; the model must ignore them
    torch.testing.assert_close(model(dataclasses.replace(inputs, labels=polluted)).lm_loss, base)


def test_hidden_source_switch_changes_the_mask_query(cfg, build, make_batch):
    seg = build(cfg)
    before = build(FCLMConfig.preset("tiny", mask_decoder={"hidden_source": "before_seg"}))
    inputs = make_batch(cfg)
    assert not torch.allclose(seg(inputs).seg_logits, before(inputs).seg_logits)


def test_object_cap_is_seeded_and_at_most_five_per_row(cfg, build, make_batch):
    from fclm_train.model.testing import ToySample, box_mask, random_image

    masks = [box_mask((48, 64), (i * 8, 0, i * 8 + 8, 48)) for i in range(7)]
    answer = " ".join(["[SEG]"] * 7)
    sample = ToySample([("user", "<image>\nSegment all."), ("assistant", answer)], random_image(48, 64), seg_masks=masks)
    model = build(cfg)
    chosen = [tuple(model(make_batch(cfg, [sample], pairs=(), seed=s)).seg_index.tolist()) for s in (0, 0, 1, 2)]
    assert all(len(c) == 5 and len(set(c)) == 5 for c in chosen)
    assert chosen[0] == chosen[1]
    assert len(set(chosen)) > 1  # other seeds pick other subsets


def test_uniform_graph_keeps_every_part_in_the_graph(cfg, build, make_batch):
    """A text-only batch (no region, no [SEG]) still touches extractor and decoder, with zero gradient."""
    from fclm_train.model.testing import ToySample, random_image

    sample = ToySample([("user", "<image>\nWhat is this?"), ("assistant", "A dog.")], random_image(48, 64))
    uniform = build(FCLMConfig.preset("tiny", uniform_graph=True))
    _open_gates(uniform)
    out = uniform(make_batch(cfg, [sample], pairs=()))
    out.loss.backward()
    for group, named in uniform.parameter_groups(1).items():
        assert all(p.grad is not None for _, p in named), group
    assert all(p.grad.abs().sum() == 0 for _, p in uniform.parameter_groups(1)["mask_decoder"])
    plain = build(cfg)
    plain(make_batch(cfg, [sample], pairs=())).loss.backward()
    assert all(p.grad is None for p in plain.region_extractor.parameters())


@pytest.mark.parametrize("local_features", ["crop", "image"])
def test_local_feature_sources(local_features, build, make_batch):
    cfg = FCLMConfig.preset("tiny", region_extractor={"local_features": local_features})
    model = build(cfg)
    calls = []
    model.sam_encoder.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    model(make_batch(cfg))
    # crop: one pass over 3 region crops + one over the 3 full images; image: only the full images
    assert sorted(calls) == ([3, 3] if local_features == "crop" else [3])


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(cfg, build, make_batch):
    inputs = make_batch(cfg)
    plain = build(cfg)
    checkpointed = build(FCLMConfig.preset("tiny", llm={"gradient_checkpointing": True}))
    results = []
    for model in (plain, checkpointed):
        model.train()
        out = model(inputs)
        out.loss.backward()
        results.append((out.loss.detach(), model.qwen.model.language_model.layers[0].mlp.up_proj.weight.grad))
    assert checkpointed.qwen.model.language_model.gradient_checkpointing
    torch.testing.assert_close(results[0], results[1])
