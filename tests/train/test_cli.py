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
    loader = ShardLoader([resolve_shard_set(str(shards))], tokenizer, encoder, LoaderConfig(num_workers=0, micro_batch_size=4))
    with torch.no_grad():
        for batch in itertools.islice(loader, 2):
            assert float(trained_model(batch.inputs).loss) < float(initial(batch.inputs).loss)
