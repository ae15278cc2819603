"""Two processes on CPU (gloo) under torchrun: DDP ranks agree; FSDP2 (fully_shard) trains to the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fclm_train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def torchrun(out: Path, shards: list[str], distributed: str) -> Path:
    config = {
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": 3, "global_batch_size": 4, "seed": 1,
        "gradient_checkpointing": False, "save_every": 3, "tensorboard": False, "distributed": distributed,
        "optim": {"lr": 1e-3}, "data": {"shards": shards, "micro_batch_size": 1, "num_workers": 1, "shuffle_buffer": 8},
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("dist_worker.py")), json.dumps(config)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, mixed_build, stage2_build) -> Path:
    return torchrun(tmp_path_factory.mktemp("ddp"), [str(mixed_build), str(stage2_build)], "ddp")


def test_ddp_ranks_agree(ddp_run):
    ranks = json.loads((ddp_run / "ranks.json").read_text())
    assert len(ranks) == 2 and ranks[0] == ranks[1]  # identical parameters, identical batch counts
    assert ranks[0]["batches"] == 3 * 2  # 3 steps x accumulation 2 (global 4 = 1 sample x 2 ranks x 2)
    metrics = read_metrics(ddp_run)
    assert [r["step"] for r in metrics] == [1, 2, 3] and all(r["finite"] for r in metrics)
    assert metrics[-1]["samples"] == 12
    loader = json.loads((ddp_run / "step-000003" / "loader.json").read_text())["ranks"]
    assert [r["batches"] for r in loader] == [6, 6]


def test_fsdp2_trains_like_ddp(ddp_run, tmp_path, mixed_build, stage2_build):
    """FSDP2 on gloo: constructed, three steps run, same losses and final weights as DDP (fp32 on CPU)."""
    fsdp = torchrun(tmp_path, [str(mixed_build), str(stage2_build)], "fsdp")
    ranks = json.loads((fsdp / "ranks.json").read_text())
    assert ranks[0]["digest"] != ranks[1]["digest"]  # each rank holds its own shards
    for a, b in zip(read_metrics(ddp_run), read_metrics(fsdp)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    ddp_weights = load_file(ddp_run / "step-000003" / "model.safetensors")
    fsdp_weights = load_file(fsdp / "step-000003" / "model.safetensors")
    assert ddp_weights.keys() == fsdp_weights.keys()
    for name in ddp_weights:
        torch.testing.assert_close(fsdp_weights[name], ddp_weights[name], atol=1e-5, rtol=1e-4, msg=name)
