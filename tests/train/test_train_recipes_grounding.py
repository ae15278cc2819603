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


def test_paired_grounding_samples_become_consistency_pairs(data_root, tmp_path, tiny_tokenizer, encoder_config):
    """A refcoco / pix2cap / GCG sample built with pair: true gives the trainer its DLC-like row, its [SEG] row and
    one consistency pair per region input, each linking a region to a [SEG] of the same region."""
    from helpers import build
    from webdataset.tariterators import tarfile_samples

    from fclm_data.recipes import parse_recipe
    from fclm_train.data.collate import collate
    from fclm_train.data.encode import Encoder

    entries = [{"source": s, "count": 2, "options": {"pair": True}} for s in ("refcoco", "pix2cap", "grandf")]
    build(parse_recipe({"name": "paired", "seed": 0, "sources": entries}), data_root, tmp_path)
    encoder = Encoder(tiny_tokenizer, encoder_config)
    raws = [s for shard in sorted(tmp_path.glob("shard-*.tar")) for s in tarfile_samples([{"url": str(shard)}])]
    samples = [encoder(raw) for raw in raws]
    assert len(samples) == 6 and all(s is not None for s in samples) and not encoder.skipped
    for sample in samples:
        regions, segs = sample.rows[0].region_ids, sample.rows[1].seg_ids
        assert regions and not sample.rows[0].seg_ids and segs and not sample.rows[1].region_ids
        assert len(sample.pairs) == len(regions)
        assert all(regions[r] == segs[k] for r, k in sample.pairs)
    image_id = tiny_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    batch = collate(samples[:3], tiny_tokenizer.pad_token_id, image_id, seed=0)
    assert batch.consistency_pairs.shape == (sum(len(s.pairs) for s in samples[:3]), 2)
