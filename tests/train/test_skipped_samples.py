"""Nothing lost silently while training: a truncated tar, a shard short of its manifest, an undecodable sample and
an unreadable shard are counted by reason (through DataLoader workers, into metrics.jsonl and the checkpoint), and
``max_skip_fraction`` stops a run whose data is rotten, with the reason, in one line from the CLI."""

from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fclm_train.config import TrainConfig
from fclm_train.data.loader import LoaderConfig, RottenDataError, ShardLoader, rotten_data
from fclm_train.data.shards import ShardReadError, epoch_items, iter_shard, resolve_shard_set
from fclm_train.data.stages import ReadLedger, read_items
from fclm_train.metrics import read_metrics
from fclm_train.train import Trainer


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar if m.isreg()]


def _write(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def rotten_build(mixed_build: Path, tmp_path_factory) -> Path:
    """A copy of ``mixed_build`` (6 shards: 4, 4, 4, 4, 4, 2 samples), its manifest unchanged, with

    * shard-000001.tar cut in the middle of its third sample's image: 2 complete samples, 2 lost;
    * shard-000003.tar's second image replaced by bytes that are no image: 1 undecodable sample;
    * shard-000005.tar rewritten without its last sample: 1 sample short of the manifest.
    """
    out = tmp_path_factory.mktemp("rotten")
    shutil.copytree(mixed_build, out, dirs_exist_ok=True)
    truncated = out / "shard-000001.tar"
    with tarfile.open(truncated) as tar:
        images = [m for m in tar if m.name.endswith((".jpg", ".png"))]
    cut = images[2].offset_data + images[2].size // 2
    truncated.write_bytes(truncated.read_bytes()[:cut])
    members = _members(out / "shard-000003.tar")
    image_index = [i for i, (m, _) in enumerate(members) if m.name.endswith((".jpg", ".png"))][1]
    members[image_index] = (members[image_index][0], b"this is not a JPEG" * 50)
    _write(out / "shard-000003.tar", members)
    members = _members(out / "shard-000005.tar")
    last_key = members[-1][0].name.split(".", 1)[0]
    _write(out / "shard-000005.tar", [(m, d) for m, d in members if not m.name.startswith(last_key + ".")])
    return out


def test_the_reader_counts_lost_samples_against_the_manifest(rotten_build: Path):
    shard_set = resolve_shard_set(str(rotten_build))
    assert shard_set.counts == (4, 4, 4, 4, 4, 2)  # the manifest's word, checked while reading
    ledger = ReadLedger()
    keys = [s["__key__"] for s in read_items(epoch_items(shard_set, 1, 0, 0, 0)[0], ledger)]
    assert len(keys) == len(set(keys)) == ledger.read == 22 - 3
    assert dict(ledger.lost) == {"truncated_shard": 2, "missing_samples": 1}
    with pytest.raises(ShardReadError, match=r"shard-000001\.tar: truncated shard"):
        list(iter_shard(str(rotten_build / "shard-000001.tar")))  # strict reading (fclm-eval) names the shard
    assert len(list(itertools.islice(iter_shard(str(rotten_build / "shard-000003.tar")), 10))) == 4


def test_an_unreadable_shard_is_counted_and_an_all_unreadable_stream_stops(rotten_build: Path, tmp_path: Path):
    shard_set = resolve_shard_set(str(rotten_build))
    broken = tmp_path / "gone"
    shutil.copytree(rotten_build, broken)
    (broken / "shard-000000.tar").unlink()  # vanished after the run started (e.g. a bucket lifecycle rule)
    moved = type(shard_set)(shard_set.name, tuple(u.replace(str(rotten_build), str(broken)) for u in shard_set.urls),
                            1.0, shard_set.counts)  # fmt: skip
    ledger = ReadLedger()
    list(read_items(epoch_items(moved, 1, 0, 0, 0)[0], ledger))
    assert ledger.lost["shard_read_error"] == 4 and ledger.read == 22 - 3 - 4
    from fclm_train.data.shards import ShardError
    from fclm_train.data.stages import set_stream

    (broken / "shard-000000.tar").write_bytes(b"")  # every shard unreadable: an endless stream must not spin
    for name in ("shard-000001.tar", "shard-000002.tar", "shard-000003.tar", "shard-000004.tar", "shard-000005.tar"):
        (broken / name).unlink()
    with pytest.raises(ShardError, match="shards in a row gave no sample"):
        next(set_stream(moved, 0, 1, 0, 0, ReadLedger()))


def test_counts_by_reason_survive_dataloader_workers(rotten_build, tiny_tokenizer, encoder_config):
    config = LoaderConfig(micro_batch_size=2, num_workers=2, shuffle_buffer=4, seed=0)
    loader = ShardLoader([resolve_shard_set(str(rotten_build))], tiny_tokenizer, encoder_config, config)
    batches = list(itertools.islice(loader, 24))  # ~2 epochs of the 19 readable samples
    stats = loader.data_stats()
    assert set(stats["skipped"]) == {"truncated_shard", "missing_samples", "decode_error"}
    assert stats["skipped"]["truncated_shard"] % 2 == 0  # each pass over the cut shard loses 2
    assert stats["read"] >= sum(b.num_samples for b in batches)
    state = ShardLoader([resolve_shard_set(str(rotten_build))], tiny_tokenizer, encoder_config, config)
    state.load_state_dict(json.loads(json.dumps(loader.state_dict())))
    assert state.data_stats() == stats  # checkpointed with the loader state


def test_rotten_data_rule():
    assert rotten_data(10, {"decode_error": 1}, 0.01) is None  # too few samples to judge 1%
    assert rotten_data(10, {"decode_error": 1}, 0.01, final=True).startswith("1 of 10 samples (10.0%)")
    assert rotten_data(200, {"decode_error": 1, "extra_samples": 50}, 0.01) is None  # extra samples are no loss
    reason = rotten_data(97, {"truncated_shard": 3, "too_long": 1}, 0.01)
    assert reason.startswith("4 of 100 samples (4.0%)") and "truncated_shard 3" in reason
    assert rotten_data(10, {"decode_error": 9}, 1.0, final=True) is None  # 1.0 never stops


def _config(out: Path, shards: list[str], max_skip_fraction: float, steps: int = 3) -> TrainConfig:
    return TrainConfig.from_dict({
        "model": "tiny", "stage": 1, "out_dir": str(out), "max_steps": steps, "global_batch_size": 2,
        "gradient_checkpointing": False, "save_every": 100, "tensorboard": False, "optim": {"lr": 1e-3},
        "data": {"shards": shards, "micro_batch_size": 1, "num_workers": 2, "shuffle_buffer": 4,
                 "max_skip_fraction": max_skip_fraction},
    })  # fmt: skip


def test_skips_reach_metrics_and_the_checkpoint(tmp_path, rotten_build):
    out = Trainer(_config(tmp_path, [str(rotten_build)], 1.0, steps=8)).run()
    records = read_metrics(out)
    last = records[-1]
    assert set(last["skipped_samples"]) <= {"truncated_shard", "missing_samples", "decode_error"}
    assert last["skipped_samples"] and last["read_samples"] >= last["samples"]
    assert all(r["read_samples"] <= s["read_samples"] for r, s in zip(records, records[1:]))  # cumulative
    state = json.loads((out / "step-000008" / "trainer_state.json").read_text())
    assert state["skipped_samples"] == last["skipped_samples"]


def test_rotten_data_stops_the_run_with_the_reason(tmp_path, rotten_build):
    with pytest.raises(RottenDataError, match=r"samples \(\d+\.\d%\) were skipped, more than max_skip_fraction 0.05"):
        Trainer(_config(tmp_path / "a", [str(rotten_build)], 0.05, steps=8)).run()
    command = [sys.executable, "-m", "fclm_train.cli", "--shards", str(rotten_build), "--model", "tiny",
               "--max-steps", "4", "--global-batch-size", "2", "--micro-batch-size", "1", "--num-workers", "0",
               "--shuffle-buffer", "4", "--report-to", "none", "--no-gradient-checkpointing",
               "--max-skip-fraction", "0.05", "--out", str(tmp_path / "b")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("fclm-train: error:")]
    assert len(error) == 1 and "more than max_skip_fraction 0.05" in error[0] and "truncated_shard" in error[0], result.stderr[-1500:]
