"""The loop: schedule, exact resume, the non-finite guard, checkpoint round trip (tiny model, CPU, in process)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fclm_train.checkpoint import load_model, resolve_checkpoint
from fclm_train.config import TrainConfig
from fclm_train.metrics import read_metrics
from fclm_train.train import Trainer, WarmupCosine, param_groups


def tiny_config(out: Path, shards: list[str], **overrides) -> TrainConfig:
    body = {
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": 4, "global_batch_size": 2,
        "gradient_checkpointing": False, "save_every": 2, "tensorboard": False, "keep_last": None,
        "optim": {"lr": 1e-3}, "data": {"shards": shards, "micro_batch_size": 1, "num_workers": 2, "shuffle_buffer": 8},
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict):
            body[key] = {**body.get(key, {}), **value}
        else:
            body[key] = value
    return TrainConfig.from_dict(body)


def test_stage_defaults_and_accumulation():
    stage1, stage2 = TrainConfig(stage=1), TrainConfig(stage=2)
    assert (stage1.global_batch_size, stage1.optim.lr) == (32, 2e-5)  # paper §S1.1
    assert (stage2.global_batch_size, stage2.optim.lr) == (16, 1e-5)
    assert stage1.accumulation(world_size=8) == 2 and stage2.accumulation(world_size=8) == 1
    with pytest.raises(ValueError, match="not a multiple"):
        TrainConfig(stage=2, global_batch_size=16).accumulation(world_size=3)


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(warmup=3, total=13, min_ratio=0.1)
    values = [schedule(s) for s in range(14)]
    assert values[:3] == [0.25, 0.5, 0.75] and values[3] == 1.0
    assert all(a >= b for a, b in zip(values[3:], values[4:]))  # monotone decay after warmup
    assert math.isclose(values[13], 0.1) and math.isclose(schedule(8), 0.55)


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = torch.nn.Sequential(torch.nn.Embedding(4, 3), torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [(3, 3)] and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, stage2_build, mixed_build):
    """Stage 2 on paired + mixed shards, 2 loader workers: interrupted at step 2 and resumed == uninterrupted."""
    shards = [f"{stage2_build}:2", str(mixed_build)]
    full = Trainer(tiny_config(tmp_path / "full", shards, stage=2)).run()
    resumed_out = tmp_path / "resumed"
    Trainer(tiny_config(resumed_out, shards, stage=2), resume=full / "step-000002").run()
    reference = {r["step"]: r for r in read_metrics(full)}
    resumed = read_metrics(resumed_out)
    assert [r["step"] for r in resumed] == [3, 4]
    for record in resumed:
        for key in ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss", "lr", "grad_norm", "samples"):
            assert record[key] == reference[record["step"]][key], key
    assert reference[4]["latent_loss"] > 0  # paired samples reached the consistency loss
    a, b = (load_file(run / "step-000004" / "model.safetensors") for run in (full, resumed_out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, mixed_build, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, [str(mixed_build)], max_steps=3, save_every=100))
    trainer.setup()
    forward = trainer.model.forward
    calls = {"n": 0}
    snapshots = []

    def poisoned(inputs):
        calls["n"] += 1
        if calls["n"] == 3:  # step 2's first micro-batch
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        out = forward(inputs)
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    try:
        trainer.train()
    finally:
        trainer.cleanup()
    metrics = read_metrics(tmp_path)
    assert [r["finite"] for r in metrics] == [True, False, True]
    assert [r["skipped_steps"] for r in metrics] == [0, 1, 1] and trainer.skipped_steps == 1
    state = load_file(tmp_path / "step-000003" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in state.values())  # the NaN step never reached the weights
    assert any(not torch.equal(state[n], p) for n, p in snapshots[0].items() if n in state)  # step 3 trained


def test_a_skipped_step_leaves_the_parameters_unchanged(tmp_path, mixed_build):
    trainer = Trainer(tiny_config(tmp_path, [str(mixed_build)], max_steps=2))
    trainer.setup()
    try:
        batches = iter(trainer.loader)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        forward = trainer.model.forward

        def nan_loss(inputs):
            out = forward(inputs)
            out.loss = out.loss + float("inf")
            return out

        trainer.model.forward = nan_loss
        result = trainer.train_step(batches)
        assert not result.finite and result.losses["loss"] == float("inf")
        assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
        assert all(p.grad is None for p in trainer.model.parameters())
        del trainer.model.forward
        result = trainer.train_step(batches)
        assert result.finite
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    finally:
        trainer.cleanup()


def test_checkpoint_layout_and_round_trip(tmp_path, mixed_build):
    trainer = Trainer(tiny_config(tmp_path, [str(mixed_build)], max_steps=3, keep_last=2, save_every=1))
    trainer.run()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002", "step-000003"]  # keep_last
    assert not list(tmp_path.glob(".tmp-*")) and (tmp_path / "latest").read_text().strip() == "step-000003"
    step_dir = resolve_checkpoint(tmp_path)
    assert step_dir.name == "step-000003"
    names = {p.name for p in step_dir.iterdir()}
    assert {"model.safetensors", "config.json", "train_config.json", "optimizer.pt", "scheduler.pt",
            "loader.json", "rng.pt", "trainer_state.json"} <= names  # fmt: skip
    state = json.loads((step_dir / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["samples"] == 6 and state["tokenizer"] == "tiny"
    model, tokenizer = load_model(tmp_path)
    expected = trainer.model.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k].cpu()) for k in expected)
    # tied embeddings are stored once and restored as one tensor
    assert "qwen.lm_head.weight" not in load_file(step_dir / "model.safetensors")
    assert model.qwen.lm_head.weight.data_ptr() == model.qwen.get_input_embeddings().weight.data_ptr()
    # the optimizer state comes back exactly
    resumed = Trainer(tiny_config(tmp_path / "again", [str(mixed_build)], max_steps=3), resume=tmp_path)
    resumed.setup()
    try:
        a, b = trainer.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
        assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
        assert resumed.step == 3 and resumed.loader.state.batches == 6
    finally:
        resumed.cleanup()


def test_init_from_takes_the_weights_only(tmp_path, mixed_build, stage2_build):
    stage1 = Trainer(tiny_config(tmp_path / "stage1", [str(mixed_build)], max_steps=2)).run()
    weights = load_file(stage1 / "step-000002" / "model.safetensors")
    stage2 = Trainer(tiny_config(tmp_path / "stage2", [str(stage2_build)], stage=2, init_from=str(stage1)))
    stage2.setup()
    try:
        state = stage2.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in weights.items())
        assert stage2.step == 0 and stage2.loader.state.batches == 0 and not stage2.optimizer.state
        trainable = {n.split(".")[0] for n, p in stage2.model.named_parameters() if p.requires_grad}
        assert trainable == {"qwen"}  # stage 2: the LLM only
        assert not any(p.requires_grad for p in stage2.model.qwen.model.visual.parameters())
    finally:
        stage2.cleanup()


def test_inexact_resume_is_refused_before_building_then_accepted_when_asked(tmp_path, mixed_build, monkeypatch):
    from fclm_train import train as train_module
    from fclm_train.config import ResumeError

    first = Trainer(tiny_config(tmp_path / "a", [str(mixed_build)], max_steps=2)).run()
    changed = tiny_config(tmp_path / "b", [str(mixed_build)], max_steps=3, data={"num_workers": 1})
    built = []
    monkeypatch.setattr(train_module.Trainer, "_setup_model", lambda self: built.append(1))
    with pytest.raises(ResumeError, match="data.num_workers 2 -> 1 changes the batches"):
        Trainer(changed, resume=first).run()
    assert not built  # refused before any model was built
    monkeypatch.undo()
    trainer = Trainer(changed, resume=first, allow_inexact_resume=True)
    with pytest.warns(UserWarning, match=r"inexact resume \(data.num_workers changed\)"):
        trainer.run()
    assert trainer.status == "completed" and [r["step"] for r in read_metrics(tmp_path / "b")] == [3]
    assert trainer.loader.state.batches == 2 and trainer.loader.state.num_workers == 1  # reseeded streams
