"""Two processes on CPU (gloo) under torchrun: DDP ranks agree; FSDP2 (fully_shard) trains to the same weights;
two torchrun launchers as two "nodes" on 127.0.0.1 agree on the step a SIGTERM stops them at, and the resume
reproduces the uninterrupted DDP run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fclm_train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
STEPS = 4


def config(out: Path, shards: list[str], distributed: str = "ddp") -> dict:
    return {
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": STEPS, "global_batch_size": 4, "seed": 1,
        "gradient_checkpointing": False, "save_every": STEPS, "report_to": "none", "distributed": distributed,
        "optim": {"lr": 1e-3}, "data": {"shards": shards, "micro_batch_size": 1, "num_workers": 1, "shuffle_buffer": 8},
    }  # fmt: skip


def torchrun(out: Path, shards: list[str], distributed: str) -> Path:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(__file__).with_name("dist_worker.py")), json.dumps(config(out, shards, distributed))]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, mixed_build, stage2_build) -> Path:
    return torchrun(tmp_path_factory.mktemp("ddp"), [str(mixed_build), str(stage2_build)], "ddp")


def test_ddp_ranks_agree(ddp_run):
    ranks = json.loads((ddp_run / "ranks.json").read_text())
    assert len(ranks) == 2 and ranks[0] == ranks[1]  # identical parameters, identical batch counts
    assert ranks[0]["batches"] == STEPS * 2  # steps x accumulation 2 (global 4 = 1 sample x 2 ranks x 2)
    metrics = read_metrics(ddp_run)
    assert [r["step"] for r in metrics] == list(range(1, STEPS + 1)) and all(r["finite"] for r in metrics)
    assert metrics[-1]["samples"] == STEPS * 4
    loader = json.loads((ddp_run / f"step-{STEPS:06d}" / "loader.json").read_text())["ranks"]
    assert [r["batches"] for r in loader] == [STEPS * 2, STEPS * 2]


def test_fsdp2_trains_like_ddp(ddp_run, tmp_path, mixed_build, stage2_build):
    """FSDP2 on gloo: constructed, the steps run, same losses and final weights as DDP (fp32 on CPU)."""
    fsdp = torchrun(tmp_path, [str(mixed_build), str(stage2_build)], "fsdp")
    ranks = json.loads((fsdp / "ranks.json").read_text())
    assert ranks[0]["digest"] != ranks[1]["digest"]  # each rank holds its own shards
    for a, b in zip(read_metrics(ddp_run), read_metrics(fsdp)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    ddp_weights = load_file(ddp_run / f"step-{STEPS:06d}" / "model.safetensors")
    fsdp_weights = load_file(fsdp / f"step-{STEPS:06d}" / "model.safetensors")
    assert ddp_weights.keys() == fsdp_weights.keys()
    for name in ddp_weights:
        torch.testing.assert_close(fsdp_weights[name], ddp_weights[name], atol=1e-5, rtol=1e-4, msg=name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_nodes(logs: list[Path], *args: str) -> list[subprocess.Popen]:
    """Two torchrun launchers, one rank each, meeting at a c10d rendezvous on 127.0.0.1 (as on two machines)."""
    port = free_port()
    return [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                          "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                          "--rdzv_id", "fclm-test", "-m", "fclm_train.cli", *args],
                         stdout=subprocess.DEVNULL, stderr=log.open("w"), env=ENV, cwd=ROOT)  # fmt: skip
        for node, log in enumerate(logs)
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill what a failed assertion left running."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_nodes_stop_together_on_sigterm_and_resume_exactly(ddp_run, tmp_path, mixed_build, stage2_build):
    import yaml

    from fclm_train.rundir import resolve_checkpoint

    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config(out, [str(mixed_build), str(stage2_build)])))
    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    nodes = two_nodes(logs, "--recipe", str(recipe))
    try:
        deadline = time.monotonic() + 900
        while not any(f"step 1/{STEPS} |" in log.read_text() for log in logs):
            assert all(n.poll() is None for n in nodes), "".join(log.read_text()[-3000:] for log in logs)
            assert time.monotonic() < deadline
            time.sleep(0.05)
        nodes[1].send_signal(signal.SIGTERM)  # the second machine is preempted (torchrun forwards it to its rank)
        for node in nodes:
            node.wait(900)
    finally:
        stop(nodes)
    text = "".join(log.read_text() for log in logs)
    assert "got SIGTERM" in logs[1].read_text(), text[-6000:]
    step_dir = resolve_checkpoint(out)
    stopped = json.loads((step_dir / "trainer_state.json").read_text())["step"]
    assert 1 <= stopped < STEPS and f"preempted: checkpoint at step {stopped}" in text
    loader = json.loads((step_dir / "loader.json").read_text())["ranks"]
    assert [r["batches"] for r in loader] == [stopped * 2, stopped * 2]  # both ranks stopped after that step
    assert [r["step"] for r in read_metrics(out)] == list(range(1, stopped + 1))

    resumed = two_nodes(logs, "--resume", str(out))
    try:
        assert [n.wait(900) for n in resumed] == [0, 0], "".join(log.read_text()[-3000:] for log in logs)
    finally:
        stop(resumed)
    reference, metrics = read_metrics(ddp_run), read_metrics(out)
    assert [r["step"] for r in metrics] == list(range(1, STEPS + 1))
    for a, b in zip(reference, metrics):
        for key in ("loss", "lm_loss", "mask_loss", "recon_loss", "latent_loss", "lr", "grad_norm", "samples"):
            assert a[key] == b[key], (a["step"], key)
