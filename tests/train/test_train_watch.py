"""Watching a run: TensorBoard, W&B (offline), the end-of-run summary, `fclm-train plot`, validation during training."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image
from typer.testing import CliRunner

from fclm_train.cli import app
from fclm_train.config import TrainConfig
from fclm_train.metrics import VAL_FILE, format_summary, plot_run, read_metrics
from fclm_train.train import Trainer

STEPS = 2


@pytest.fixture(scope="module")
def watched(tmp_path_factory, mixed_build):
    """Two steps on the mixed build with TensorBoard + W&B (offline) and validation on held-out shards each step."""
    out = tmp_path_factory.mktemp("watched") / "run"
    cfg = TrainConfig.from_dict({
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": STEPS, "global_batch_size": 2,
        "gradient_checkpointing": False, "save_every": STEPS, "report_to": "tensorboard,wandb",
        "optim": {"lr": 1e-3}, "data": {"shards": [str(mixed_build)], "micro_batch_size": 1, "num_workers": 0,
                                        "shuffle_buffer": 8},
        "val": {"shards": [str(mixed_build)], "every": 1, "max_samples": 6, "micro_batch_size": 2},
    })  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        trainer = Trainer(cfg)
        trainer.run()
    return out, trainer


def test_tensorboard_and_wandb_receive_every_step(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = watched
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [s.step for s in events.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert [s.step for s in events.Scalars("val/lm_loss")] == list(range(1, STEPS + 1))
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((out / "wandb").rglob("*"))
    blob = runs[0].read_bytes()
    assert b"train/loss" in blob and b"val/lm_loss" in blob and b"train/lr" in blob
    assert (out / "wandb_id").read_text().strip() in runs[0].name  # a resume continues this run id


def test_summary_on_screen_and_on_disk(watched):
    out, trainer = watched
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == STEPS and summary["samples"] == 2 * STEPS
    assert summary["checkpoint"] == str(out / f"step-{STEPS:06d}") and summary["skipped_samples"] == {}
    assert summary["val"]["step"] == STEPS and summary["last_losses"]["loss"] == read_metrics(out)[-1]["loss"]
    screen = format_summary(summary)
    assert len(screen.splitlines()) <= 12 and "checkpoint   " + summary["checkpoint"] in screen
    assert "skipped      samples: none; non-finite steps: 0" in screen


def test_validation_is_a_fixed_set_scored_with_the_eval_metrics(watched, mixed_build):
    out, trainer = watched
    records = read_metrics(out, VAL_FILE)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # every step; the end adds no duplicate
    last = records[-1]
    assert last["samples"] == 6 and last["lm_loss"] > 0 and last["mask_loss"] > 0 and last["expressions"] > 0
    assert 0 <= last["ciou"] <= 1 and 0 <= last["giou"] <= 1
    assert records[0]["lm_loss"] != last["lm_loss"]  # the weights changed between the evaluations
    # the same weights on the same held-out set give the same numbers (the set is fixed)
    trainer.logger.enabled = False  # the run is over: nothing more is written
    again = trainer.validate()
    assert {k: again[k] for k in last} == pytest.approx(last)


def test_plot_draws_loss_parts_lr_and_throughput(watched, tmp_path):
    out, _ = watched
    result = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path / "curves.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["png"] == str(tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size == (800, 900)
    figure, path = plot_run(out)
    assert path == out / "curves.png" and path.exists()
    losses, lr, speed = figure.axes
    metrics = read_metrics(out)
    lines = {line.get_label(): list(line.get_ydata()) for line in losses.get_lines()}
    assert lines["loss"] == [r["loss"] for r in metrics] and lines["lm_loss"] == [r["lm_loss"] for r in metrics]
    assert "val lm_loss" in lines
    assert list(lr.get_lines()[0].get_ydata()) == [r["lr"] for r in metrics]
    assert all(math.isfinite(v) and v > 0 for v in speed.get_lines()[0].get_ydata())
    missing = CliRunner().invoke(app, ["plot", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no metrics" in missing.output
