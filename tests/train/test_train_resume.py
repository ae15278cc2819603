"""Resume a user can trust: SIGKILL, resume alone, SIGUSR1 (preemption), resume + extend -- real processes.

The killed / preempted / extended run must match, step for step, an uninterrupted run of 6 steps followed by the
same extension to 8 steps from the same step (the schedule is re-planned there, see ``fclm_train.plan``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from fclm_train.cli import app
from fclm_train.config import PREEMPTED_EXIT_CODE, TrainConfig
from fclm_train.metrics import LOSS_PARTS, read_metrics
from fclm_train.plan import WarmupCosine
from fclm_train.rundir import resolve_checkpoint
from fclm_train.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
LR = 1e-3


def config(shards: str, out: Path, **top) -> dict:
    return {
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": 6, "global_batch_size": 2, "seed": 0,
        "gradient_checkpointing": False, "save_every": 1, "keep_last": None, "report_to": "tensorboard",
        "optim": {"lr": LR}, "data": {"shards": [shards], "micro_batch_size": 1, "num_workers": 1, "shuffle_buffer": 8},
        **top,
    }  # fmt: skip


def launch(log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fclm_train.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), env=env, cwd=ROOT)  # fmt: skip


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float = 900) -> None:
    """Until the process has printed ``text`` (its step line) on stderr."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout}s"
        time.sleep(0.05)


def checkpoint_step(run: Path) -> int:
    return json.loads((resolve_checkpoint(run) / "trainer_state.json").read_text())["step"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, mixed_build):
    """SIGKILL during the first run, resume alone (preempted by SIGUSR1), resume with --max-steps 8."""
    tmp = tmp_path_factory.mktemp("resume")
    run = tmp / "run"
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config(str(mixed_build), run)))
    procs: list[subprocess.Popen] = []
    try:
        first = launch(tmp / "1.log", "--recipe", str(recipe))
        procs.append(first)
        wait_for_line(first, tmp / "1.log", "step 2/6 |")
        first.send_signal(signal.SIGKILL)
        assert first.wait(60) == -signal.SIGKILL
        killed_at = checkpoint_step(run)
        second = launch(tmp / "2.log", "--resume", str(run))  # alone: the saved config
        procs.append(second)
        wait_for_line(second, tmp / "2.log", f"step {killed_at + 1}/6 |")
        second.send_signal(signal.SIGUSR1)
        assert second.wait(900) == PREEMPTED_EXIT_CODE, (tmp / "2.log").read_text()[-3000:]
        preempted_at = checkpoint_step(run)
        third = launch(tmp / "3.log", "--resume", str(run), "--max-steps", "8")
        procs.append(third)
        assert third.wait(900) == 0, (tmp / "3.log").read_text()[-3000:]
    finally:
        for proc in procs:  # a failed wait leaves no process behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = [(tmp / f"{i}.log").read_text() for i in (1, 2, 3)]
    return run, killed_at, preempted_at, logs


@pytest.fixture(scope="module")
def reference(interrupted, mixed_build, tmp_path_factory):
    """Uninterrupted: 6 steps, then the same extension to 8 from the step the preempted run stopped at."""
    _, _, preempted_at, _ = interrupted
    tmp = tmp_path_factory.mktemp("reference")
    full = Trainer(TrainConfig.from_dict(config(str(mixed_build), tmp / "full", report_to="none"))).run()
    extended_cfg = TrainConfig.from_dict(config(str(mixed_build), tmp / "extended", report_to="none", max_steps=8))
    extended = Trainer(extended_cfg, resume=full / f"step-{preempted_at:06d}").run()
    return full, extended


def test_each_interruption_happened(interrupted):
    run, killed_at, preempted_at, logs = interrupted
    assert 1 <= killed_at < preempted_at < 6
    assert "got SIGUSR1" in logs[1] and f"preempted: checkpoint at step {preempted_at}" in logs[1]
    assert "re-planned: 6 -> 8 steps" in logs[2]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["step"], summary["steps_this_run"]) == ("completed", 8, 8 - preempted_at)
    assert summary["checkpoint"] == str(run / "step-000008")


def test_per_step_losses_lr_and_weights_match_the_uninterrupted_run(interrupted, reference):
    run, _, preempted_at, _ = interrupted
    full, extended = (read_metrics(r) for r in reference)
    metrics = read_metrics(run)
    assert [r["step"] for r in metrics] == list(range(1, 9))  # each step once, after every resume
    expected = {r["step"]: r for r in full if r["step"] <= preempted_at} | {r["step"]: r for r in extended}
    for record in metrics:
        for key in (*LOSS_PARTS, "lr", "grad_norm", "samples", "skipped_steps"):
            assert record[key] == expected[record["step"]][key], (record["step"], key)
    # the extension re-plans the cosine over 8 steps: never lr 0, and what a run planned for 8 uses there
    schedule = WarmupCosine(warmup=1, total=8, min_ratio=0.0)
    for record in metrics[preempted_at:]:
        assert record["lr"] > 0 and math.isclose(record["lr"], LR * schedule(record["step"] - 1))
    a = load_file(run / "step-000008" / "model.safetensors")
    b = load_file(reference[1] / "step-000008" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tensorboard_holds_each_step_once(interrupted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = interrupted[0]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [s.step for s in scalars] == list(range(1, 9))
    for scalar, record in zip(scalars, read_metrics(run)):
        assert math.isclose(scalar.value, record["loss"], rel_tol=1e-6)
    assert len(list((run / "tensorboard").glob("events.*"))) == 3  # one file per process


runner = CliRunner()


def test_resume_refuses_exactness_breaking_changes(interrupted, stage2_build):
    run = interrupted[0]
    for args, what in ((["--num-workers", "2"], "data.num_workers 1 -> 2"),
                       (["--shards", str(stage2_build)], "data.shards"),
                       (["--seed", "3"], "seed 0 -> 3"),
                       (["--micro-batch-size", "2"], "data.micro_batch_size 1 -> 2")):  # fmt: skip
        result = runner.invoke(app, ["--resume", str(run), *args, "--dry-run"])
        assert result.exit_code == 2, (args, result.output)
        assert what in result.output and "--allow-inexact-resume" in result.output
    result = runner.invoke(app, ["--resume", str(run), "--model", "3b", "--dry-run"])
    assert result.exit_code == 2 and "model was 'tiny', now '3b'" in result.output
    accepted = runner.invoke(app, ["--resume", str(run), "--num-workers", "2", "--allow-inexact-resume", "--dry-run"])
    assert accepted.exit_code == 0, accepted.output


def test_resume_alone_uses_the_saved_config_and_flags_override_only_what_they_name(interrupted):
    run = interrupted[0]
    saved = json.loads((resolve_checkpoint(run) / "train_config.json").read_text())
    alone = runner.invoke(app, ["--resume", str(run), "--print-config"])
    assert alone.exit_code == 0, alone.output
    assert yaml.safe_load(alone.output) == {**saved, "out_dir": str(run)}
    changed = yaml.safe_load(runner.invoke(app, ["--resume", str(run), "--lr", "5e-4", "--print-config"]).output)
    assert changed["optim"] == {**saved["optim"], "lr": 5e-4}
    assert {k: v for k, v in changed.items() if k != "optim"} == {
        k: v for k, v in yaml.safe_load(alone.output).items() if k != "optim"
    }
