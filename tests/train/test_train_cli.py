"""End to end through both CLIs: ``fclm-data build`` a generated root, ``fclm-train --model tiny``, load it back."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from fclm_data.cli import app as data_app
from fclm_train.checkpoint import load_model
from fclm_train.cli import app as train_app
from fclm_train.data.encode import EncoderConfig
from fclm_train.data.loader import LoaderConfig, ShardLoader
from fclm_train.data.shards import resolve_shard_set
from fclm_train.metrics import read_metrics
from fclm_train.model import FCLMConfig, build_fclm

runner = CliRunner()


def test_help_lists_the_options():
    result = runner.invoke(train_app, ["--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    for option in ("--shards", "--stage", "--model", "--llm", "--sam", "--out", "--resume", "--distributed"):
        assert option in result.output


def test_build_then_train_then_load(data_root: Path, tmp_path: Path, tiny_tokenizer):
    shards, out = tmp_path / "shards", tmp_path / "run"
    built = runner.invoke(data_app, ["build", "--source", "refcoco", "--source", "dam_sam", "--data-root",
                                     str(data_root), "--out", str(shards), "--shard-size", "4"])  # fmt: skip
    assert built.exit_code == 0, built.output
    assert len(list(shards.glob("shard-*.tar"))) > 2
    trained = runner.invoke(train_app, [
        "--shards", f"{shards}:1", "--model", "tiny", "--stage", "1", "--out", str(out), "--max-steps", "12",
        "--global-batch-size", "2", "--micro-batch-size", "2", "--lr", "3e-3", "--num-workers", "1",
        "--no-gradient-checkpointing", "--save-every", "6", "--shuffle-buffer", "16",
    ])  # fmt: skip
    assert trained.exit_code == 0, trained.output + repr(trained.exception)
    metrics = read_metrics(out)
    assert [r["step"] for r in metrics] == list(range(1, 13))
    first, last = (sum(r["loss"] for r in part) / 3 for part in (metrics[:3], metrics[-3:]))
    assert last < first, (first, last)
    assert list((out / "tensorboard").glob("events.*"))
    assert json.loads((out / "step-000012" / "trainer_state.json").read_text())["step"] == 12

    # the checkpoint loads back without --llm / --sam, and fits the training data better than the initial weights
    trained_model, tokenizer = load_model(out)
    cfg = FCLMConfig.preset("tiny")
    torch.manual_seed(0)  # the trainer's seed: the same initial weights
    initial = build_fclm(cfg, tokenizer=tiny_tokenizer).eval()
    encoder = EncoderConfig(side=cfg.image_long_side, region_text=cfg.region_token_text)
    config = LoaderConfig(num_workers=0, micro_batch_size=4)
    loader = ShardLoader([resolve_shard_set(str(shards))], tokenizer, encoder, config)
    with torch.no_grad():
        for batch in itertools.islice(loader, 2):
            inputs = batch.inputs.prepare()
            assert float(trained_model(inputs).loss) < float(initial(inputs).loss)


def test_recipes_parse_and_options_override_them():
    import yaml

    from fclm_train.config import TrainConfig, load_recipe

    root = Path(__file__).resolve().parents[2]
    stage1 = TrainConfig.from_dict(load_recipe(root / "recipes/train/stage1.yaml"))
    stage2 = TrainConfig.from_dict(load_recipe(root / "recipes/train/stage2.yaml"))
    assert (stage1.stage, stage1.global_batch_size, stage1.optim.lr, stage1.accumulation(8)) == (1, 32, 2e-5, 2)
    assert (stage2.stage, stage2.global_batch_size, stage2.optim.lr, stage2.accumulation(8)) == (2, 16, 1e-5, 1)
    result = runner.invoke(train_app, ["--recipe", str(root / "recipes/train/stage2.yaml"), "--lr", "3e-6",
                                       "--shards", "a/shard-{000000..000009}.tar:2", "--shards", "b",
                                       "--num-workers", "0", "--print-config"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = TrainConfig.from_dict(yaml.safe_load(result.output))
    assert cfg.optim.lr == 3e-6 and cfg.global_batch_size == 16 and cfg.data.num_workers == 0  # option > recipe
    assert cfg.data.max_length == 4096 and cfg.stage == 2  # the recipe's, untouched
    assert [(s.pattern, s.weight) for s in cfg.data.shards] == [("a/shard-{000000..000009}.tar", 2.0), ("b", 1.0)]
