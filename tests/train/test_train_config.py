"""One source of truth: defaults in the dataclasses, the CLI generated from them, --set, --print-config, --dry-run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fclm_train.cli import app
from fclm_train.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    TrainConfig,
    ValConfig,
    deep_merge,
    leaf_fields,
    set_override,
)  # fmt: skip

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"model": "13b"}, "model: '13b' is not one of tiny | 3b | 7b"),
        ({"data": {"micro_batch_szie": 1}}, "data.micro_batch_szie: no such field (did you mean 'data.micro_batch_size'?)"),
        ({"max_steps": 0}, "max_steps: must be > 0, got 0"),
        ({"data": {"num_workers": -1}}, "data.num_workers: must be >= 0, got -1"),
        ({"optim": {"warmup_ratio": 2}}, "optim.warmup_ratio: must be in [0, 1], got 2.0"),
        ({"report_to": "tensorboard,mlflow"}, "report_to: unknown reporter 'mlflow'"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing: expected true or false, got 'yes'"),
        ({"data": {"shards": [{"path": "x"}]}}, "data.shards: a shard set is 'PATTERN[:WEIGHT]'"),
        ({"stage": 3}, "stage: must be one of [1, 2], got 3"),
    ],
)  # fmt: skip
def test_a_wrong_value_is_one_line_naming_the_field(body, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(body)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_types_are_coerced_where_unambiguous():
    cfg = TrainConfig.from_dict({"optim": {"lr": 1, "betas": [0.9, 0.95]}, "keep_last": 0, "tensorboard": False})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.betas == (0.9, 0.95)
    assert cfg.keep_last is None  # 0 means keep all
    assert cfg.report_to == "none" and cfg.reporters == []  # the older `tensorboard: false`


def test_every_field_is_documented_and_every_settable_one_is_an_option():
    fields = leaf_fields()
    undocumented = [f.path for f in fields if not f.doc]
    assert not undocumented, undocumented
    text = invoke("--help").output
    for flag in ("--shards", "--stage", "--model", "--llm", "--sam", "--out", "--resume", "--distributed", "--lr",
                 "--warmup-ratio", "--num-workers", "--max-length", "--val-shards", "--val-every", "--report-to",
                 "--set", "--print-config", "--dry-run", "--allow-inexact-resume"):  # fmt: skip
        assert flag in text, flag
    # --help shows the dataclass defaults, the stage-dependent ones per stage
    assert "2e-05 (stage 1) / 1e-05 (stage 2)" in text and "32 (stage 1) / 16 (stage 2)" in text
    assert "default: (4096)" in text and "default: (0.03)" in text and "default: (runs/fclm)" in text


def test_defaults_live_once():
    from fclm_train.data.encode import IGNORE_INDEX as encode_ignore
    from fclm_train.data.encode import EncoderConfig
    from fclm_train.model import config as model_config
    from fclm_train.model import losses
    from fclm_train.model.inputs import IGNORE_INDEX

    assert encode_ignore is IGNORE_INDEX and losses.IGNORE_INDEX is IGNORE_INDEX
    assert not hasattr(losses, "LossWeights") and not hasattr(model_config, "_deep_merge")
    encoder = EncoderConfig()
    data = DataConfig()
    assert (encoder.max_length, encoder.system_prompt, encoder.draft) == (data.max_length, data.system_prompt,
                                                                           data.draft)  # fmt: skip
    literal = '"You are a helpful assistant."'
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "fclm_train").rglob("*.py") if literal in p.read_text()]
    assert sources == ["fclm_train/config.py"]  # the system prompt is the DataConfig default, nowhere else
    from fclm_train.data.loader import LoaderConfig

    loader = LoaderConfig()
    shared = [f.name for f in dataclasses.fields(LoaderConfig) if hasattr(data, f.name)]
    assert "mvplm_word_budget" in shared and "micro_batch_size" in shared
    assert all(getattr(loader, name) == getattr(data, name) for name in shared)
    budget = [p.relative_to(ROOT).as_posix() for p in (ROOT / "fclm_train").rglob("*.py")
              if "budget: int = 80" in p.read_text() or "BUDGET = 80" in p.read_text()]  # fmt: skip
    assert budget == ["fclm_train/config.py"]  # the MVP-LM word budget's one default


def test_the_mvplm_word_budget_reaches_the_loader_from_options_and_set():
    from fclm_train.data.loader import LoaderConfig

    result = invoke("--mvplm-word-budget", "12", "--print-config")
    assert result.exit_code == 0, result.output
    assert TrainConfig.from_dict(yaml.safe_load(result.output)).data.mvplm_word_budget == 12
    result = invoke("--mvplm-word-budget", "12", "--set", "data.mvplm_word_budget=30", "--print-config")
    cfg = TrainConfig.from_dict(yaml.safe_load(result.output))
    assert LoaderConfig.from_data(cfg.data, seed=cfg.seed).mvplm_word_budget == 30  # --set wins
    assert "--mvplm-word-budget" in invoke("--help").output


def test_set_reaches_every_field_and_wins():
    body = set_override({}, "optim.lr=1e-5")
    body = set_override(body, "model_overrides.loss.dice_weight=1")
    body = set_override(body, "data.shards=[a:2, b]")
    body = set_override(body, "llm_path=null")
    cfg = TrainConfig.from_dict(body)
    assert cfg.optim.lr == 1e-5 and cfg.model_overrides == {"loss": {"dice_weight": 1}}
    assert [(s.pattern, s.weight) for s in cfg.data.shards] == [("a", 2.0), ("b", 1.0)]
    with pytest.raises(ConfigError, match="expected section.field=value"):
        set_override({}, "optim.lr")
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_print_config_resolves_defaults_recipe_options_and_set():
    result = invoke("--recipe", str(ROOT / "recipes/train/stage2.yaml"), "--lr", "3e-6", "--set", "optim.lr=4e-6",
                    "--set", "data.max_length=2048", "--val-every", "5", "--print-config")  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = TrainConfig.from_dict(yaml.safe_load(result.output))
    assert cfg.optim.lr == 4e-6  # --set after options
    assert cfg.data.max_length == 2048 and cfg.val.every == 5 and cfg.global_batch_size == 16  # recipe
    assert cfg.optim.warmup_ratio == OptimConfig().warmup_ratio and cfg.val.max_samples == ValConfig().max_samples
    assert dataclasses.asdict(TrainConfig.from_dict(cfg.to_dict())) == dataclasses.asdict(cfg)  # round trip


def test_dry_run_prints_the_plan(mixed_build, tmp_path):
    result = invoke("--shards", f"{mixed_build}:1", "--model", "tiny", "--global-batch-size", "4",
                    "--micro-batch-size", "2", "--num-workers", "2", "--epochs", "2", "--out", str(tmp_path / "run"),
                    "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    config_text, plan = result.output.split("---\n")
    assert TrainConfig.from_dict(yaml.safe_load(config_text)).global_batch_size == 4
    shards = len(list(Path(mixed_build).glob("shard-*.tar")))
    from fclm_train.data.shards import resolve_shard_set

    total = resolve_shard_set(str(mixed_build)).num_samples
    steps_per_epoch = -(-total // 4)
    assert f"plan: {2 * steps_per_epoch} steps" in plan and f"{2 * steps_per_epoch * 4} samples" in plan
    assert "micro batch 2 x 1 rank(s) x accumulation 2" in plan
    assert f"{shards} shards, {total} samples" in plan
    lo, hi = shards // 2, -(-shards // 2)  # two workers share the shards
    assert f"per worker {lo if lo == hi else f'{lo}-{hi}'}" in plan and f"shard reads per rank {shards}" in plan
    assert not (tmp_path / "run").exists()  # nothing was written
