"""Shards from anywhere: the same build read from local disk, a real HTTP server, a real S3-compatible server (moto's
server mode) and ``pipe:`` commands gives the same sets, the same batches and the same training losses."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from fclm_train.config import TrainConfig
from fclm_train.data.loader import LoaderConfig, ShardLoader
from fclm_train.data.shards import (
    MissingShardError,
    ShardError,
    expand_pattern,
    resolve_shard_set,
    scheme,
)
from fclm_train.metrics import read_metrics
from fclm_train.train import Trainer

BUCKET = "fclm-shards"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(command: list[str], url: str, env: dict | None = None) -> subprocess.Popen:
    """Start a server process and wait until ``url`` answers (any HTTP status)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}") from None
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{command} did not answer on {url}")


@pytest.fixture(scope="module")
def http_root(mixed_build: Path, stage2_build: Path, tmp_path_factory):
    """``http://127.0.0.1:PORT`` serving a directory that holds both builds (python's http.server process)."""
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(mixed_build, root / "mixed")
    shutil.copytree(stage2_build, root / "stage2")
    port = _free_port()
    server = _serve([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
                    f"http://127.0.0.1:{port}/")  # fmt: skip
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def s3_env(mixed_build: Path, stage2_build: Path):
    """A moto S3 server process on 127.0.0.1 holding both builds under ``s3://fclm-shards/``; yields its env."""
    port = _free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    server = _serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    f"http://127.0.0.1:{port}/moto-api/", env={**os.environ, **env})  # fmt: skip
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    for name, build in (("mixed", mixed_build), ("stage2", stage2_build)):
        for path in build.iterdir():
            if path.is_file():
                client.upload_file(str(path), BUCKET, f"{name}/{path.name}")
    yield env
    server.terminate()
    server.wait(10)


@pytest.fixture
def s3(s3_env, monkeypatch):
    """The credentials and endpoint as a user sets them: plain environment variables."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    import fsspec

    fsspec.AbstractFileSystem.clear_instance_cache()  # a cached client would keep an earlier test's endpoint
    yield f"s3://{BUCKET}"
    fsspec.AbstractFileSystem.clear_instance_cache()


def _names(shard_set) -> list[str]:
    return [url.rsplit("/", 1)[-1] for url in shard_set.urls]


def _batches(spec: str, tokenizer, encoder_config, n: int = 6, workers: int = 1):
    config = LoaderConfig(micro_batch_size=2, num_workers=workers, shuffle_buffer=8, seed=3)
    loader = ShardLoader([resolve_shard_set(spec)], tokenizer, encoder_config, config)
    return list(itertools.islice(loader, n))


def _assert_same_batches(a, b) -> None:
    assert [x.keys for x in a] == [y.keys for y in b]
    for x, y in zip(a, b):
        for name, value in vars(x.inputs).items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, getattr(y.inputs, name)), name


def test_http_and_s3_directories_resolve_like_the_local_build(mixed_build, http_root, s3):
    local = resolve_shard_set(str(mixed_build))
    for spec in (f"{http_root}/mixed", f"{http_root}/mixed/", f"{s3}/mixed",
                 f"{http_root}/mixed/shard-{{000000..000005}}.tar", f"{s3}/mixed/shard-{{000000..000005}}.tar"):  # fmt: skip
        remote = resolve_shard_set(spec)
        assert _names(remote) == _names(local) and remote.counts == local.counts, spec  # from the remote manifest


def test_remote_shards_give_the_same_batches_as_local_disk(mixed_build, http_root, s3, tiny_tokenizer, encoder_config):
    local = _batches(str(mixed_build), tiny_tokenizer, encoder_config)
    _assert_same_batches(_batches(f"{http_root}/mixed", tiny_tokenizer, encoder_config), local)
    _assert_same_batches(_batches(f"{s3}/mixed", tiny_tokenizer, encoder_config), local)


def test_pipe_commands_are_counted_by_running_them_and_read_like_files(mixed_build, tiny_tokenizer, encoder_config):
    spec = f"pipe:cat {mixed_build}/shard-{{000000..000005}}.tar"
    piped, local = resolve_shard_set(spec), resolve_shard_set(str(mixed_build))
    assert piped.counts == local.counts  # no manifest beside a command: a header scan through the pipe
    assert all(url.startswith("pipe:cat ") for url in piped.urls)
    _assert_same_batches(_batches(spec, tiny_tokenizer, encoder_config, workers=0),
                         _batches(str(mixed_build), tiny_tokenizer, encoder_config, workers=0))  # fmt: skip


def test_missing_remote_shards_fail_before_reading_with_the_url(http_root, s3):
    with pytest.raises(MissingShardError, match=r"2 of 9 shards do not exist.*shard-000006\.tar"):
        resolve_shard_set(f"{http_root}/mixed/shard-{{000000..000007}}.tar::{http_root}/stage2/shard-000000.tar")
    with pytest.raises(MissingShardError, match=r"4 of 10 shards do not exist.*s3://fclm-shards/mixed/shard-000006\.tar"):
        resolve_shard_set(f"{s3}/mixed/shard-{{000000..000009}}.tar")
    with pytest.raises(MissingShardError, match="holds no shards"):
        resolve_shard_set(f"{s3}/nothing-here")
    with pytest.raises(ShardError, match=r"pipe:cat /nonexistent\.tar: cannot read: the command exited with status 1"):
        resolve_shard_set("pipe:cat /nonexistent.tar")


def test_gs_urls_parse_and_name_the_package_they_need():
    assert scheme("gs://bucket/stage2") == "gs" and scheme("pipe:gsutil cat x") == "pipe" and scheme("a/b.tar") == ""
    assert scheme("file:///data/a.tar") == ""
    assert expand_pattern("gs://bucket/s/shard-{000..002}.tar") == [f"gs://bucket/s/shard-00{i}.tar" for i in range(3)]
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(ShardError, match="gcsfs"):
            resolve_shard_set("gs://bucket/stage2")
    with pytest.raises(ShardError, match="Protocol not known"):
        resolve_shard_set("nosuchproto://host/a.tar")


def _train(out: Path, shards: list[str]) -> list[dict]:
    cfg = TrainConfig.from_dict({
        "model": "tiny", "stage": 2, "out_dir": str(out), "max_steps": 2, "global_batch_size": 2,
        "gradient_checkpointing": False, "save_every": 100, "tensorboard": False,
        "optim": {"lr": 1e-3}, "data": {"shards": shards, "micro_batch_size": 1, "num_workers": 1, "shuffle_buffer": 8},
    })  # fmt: skip
    return read_metrics(Trainer(cfg).run())


def test_training_from_s3_and_http_gives_the_losses_of_local_disk(tmp_path, stage2_build, mixed_build, http_root, s3):
    local = _train(tmp_path / "local", [f"{stage2_build}:2", str(mixed_build)])
    remote = _train(tmp_path / "remote", [f"{s3}/stage2:2", f"{http_root}/mixed"])
    assert [r["step"] for r in remote] == [1, 2]
    for a, b in zip(local, remote):
        for key in ("loss", "lm_loss", "mask_loss", "latent_loss", "samples"):
            assert a[key] == b[key], key
