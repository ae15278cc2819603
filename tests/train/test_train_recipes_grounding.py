"""The Table-11 train recipes: stage 2 on paired grounding data, with and without the latent loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from fclm_train.config import TrainConfig, load_recipe
from fclm_train.model import FCLMConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "latent"), [("stage2_grounding", 1.0), ("stage2_grounding_no_latent", 0.0)])
def test_grounding_recipes_differ_only_in_the_latent_weight(name, latent):
    cfg = TrainConfig.from_dict(load_recipe(ROOT / f"recipes/train/{name}.yaml"))
    base = TrainConfig.from_dict(load_recipe(ROOT / "recipes/train/stage2.yaml"))
    assert (cfg.stage, cfg.global_batch_size, cfg.optim.lr) == (base.stage, base.global_batch_size, base.optim.lr)
    assert [s.pattern for s in cfg.data.shards] == ["shards/stage2_grounding"]
    model = FCLMConfig.preset(cfg.model, **cfg.model_overrides)
    assert model.loss.latent_weight == latent and model.loss.self_recon_weight == 1.0
    assert model.loss.self_recon_source[2] == "llm_hidden"  # stage 2 self-reconstruction trains the LLM
