"""The streaming loader: shard specs, the per-stream shard deal, weighted mixing, equal batches, exact resume."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from fclm_train.data import encode as encode_module
from fclm_train.data.loader import LoaderConfig, ShardLoader
from fclm_train.data.shards import ShardSet, count_tar_samples, epoch_items, resolve_shard_set, split_weight
from fclm_train.data.stages import mix, read_items, set_stream


def keys_of(shard_set: ShardSet) -> set[str]:
    return {s["__key__"] for s in read_items(epoch_items(shard_set, 1, 0, 0, 0)[0])}


def test_shard_specs(mixed_build: Path):
    assert split_weight("a/shard-{000000..000009}.tar:2.5") == ("a/shard-{000000..000009}.tar", 2.5)
    assert split_weight("pipe:curl -s http://host/a.tar") == ("pipe:curl -s http://host/a.tar", 1.0)
    by_dir = resolve_shard_set(f"{mixed_build}:3")
    by_braces = resolve_shard_set(str(mixed_build / "shard-{000000..000005}.tar"))
    assert by_dir.urls == by_braces.urls and by_dir.weight == 3 and by_braces.weight == 1
    assert by_dir.counts == by_braces.counts == (4, 4, 4, 4, 4, 2)  # from the build's manifest
    assert tuple(count_tar_samples(url) for url in by_dir.urls) == by_dir.counts  # the fallback: a header scan
    with pytest.raises(FileNotFoundError):
        resolve_shard_set(str(mixed_build / "shard-{000000..000009}.tar"))


@pytest.mark.parametrize("streams", [1, 4, 6, 11])
def test_each_epoch_reads_every_sample_once_over_the_streams(mixed_build: Path, streams: int):
    shard_set = resolve_shard_set(str(mixed_build))
    everything = keys_of(shard_set)
    for epoch in (0, 1):
        dealt = epoch_items(shard_set, streams, seed=5, set_index=0, epoch=epoch)
        keys = [s["__key__"] for items in dealt for s in read_items(items)]
        assert len(keys) == len(everything) == sum(shard_set.counts) and set(keys) == everything
    assert epoch_items(shard_set, streams, 5, 0, 0) == epoch_items(shard_set, streams, 5, 0, 0)  # seeded
    orders = {tuple(i.url for items in epoch_items(shard_set, 1, 5, 0, e) for i in items) for e in range(4)}
    assert len(orders) > 1  # reshuffled per epoch


def test_weighted_mixing_follows_the_recipe_weights(mixed_build: Path, stage2_build: Path):
    sets = [resolve_shard_set(f"{mixed_build}:3"), resolve_shard_set(f"{stage2_build}:1")]
    streams = [set_stream(s, 0, 1, 0, i) for i, s in enumerate(sets)]
    drawn = [s["__key__"].startswith("dam_") for s in itertools.islice(mix(streams, [3, 1], random.Random(0)), 800)]
    assert abs(drawn.count(False) / len(drawn) - 0.75) < 0.05


def _loader(sets, tokenizer, encoder_config, rank=0, world=1, workers=0, **config) -> ShardLoader:
    config = LoaderConfig(**{"micro_batch_size": 2, "num_workers": workers, "shuffle_buffer": 8, **config})
    return ShardLoader(sets, tokenizer, encoder_config, config, rank=rank, world_size=world)


def test_every_rank_gets_the_same_number_of_batches(mixed_build, tiny_tokenizer, encoder_config):
    """22 samples in uneven shards over 2 ranks x 2 workers: no rank runs dry, ranks read disjoint samples."""
    sets = [resolve_shard_set(str(mixed_build))]
    n = 14  # more batches than one epoch holds for any rank (22 samples / 2 ranks / 2 per batch = 5.5)
    keys = []
    for rank in range(2):
        batches = list(itertools.islice(_loader(sets, tiny_tokenizer, encoder_config, rank, 2, workers=2), n))
        assert len(batches) == n and all(b.num_samples == 2 for b in batches)
        keys.append([k for b in batches for k in b.keys])
    first_epoch = [set(k[:10]) for k in keys]  # 10 < either rank's share of an epoch
    assert not first_epoch[0] & first_epoch[1]


def test_batches_are_a_function_of_the_seed(mixed_build, stage2_build, tiny_tokenizer, encoder_config):
    sets = [resolve_shard_set(str(mixed_build)), resolve_shard_set(str(stage2_build))]

    def keys(seed):
        return [b.keys for b in itertools.islice(_loader(sets, tiny_tokenizer, encoder_config, seed=seed), 6)]

    assert keys(0) == keys(0) and keys(0) != keys(1)


def test_resume_continues_with_the_same_batches_without_decoding_skipped_samples(
    mixed_build, stage2_build, tiny_tokenizer, encoder_config, monkeypatch
):  # fmt: skip
    sets = [resolve_shard_set(f"{mixed_build}:2"), resolve_shard_set(str(stage2_build))]
    for workers in (0, 2):
        reference = _loader(sets, tiny_tokenizer, encoder_config, workers=workers, micro_batch_size=3)
        expected = [b.keys for b in itertools.islice(reference, 7)]
        interrupted = _loader(sets, tiny_tokenizer, encoder_config, workers=workers, micro_batch_size=3)
        assert [b.keys for b in itertools.islice(interrupted, 4)] == expected[:4]
        state = json.loads(json.dumps(interrupted.state_dict()))  # what loader.json stores
        resumed = _loader(sets, tiny_tokenizer, encoder_config, workers=workers, micro_batch_size=3)
        resumed.load_state_dict(state)
        assert [b.keys for b in itertools.islice(resumed, 3)] == expected[4:]
    # the fast-forward reads past consumed samples without decoding them (main process: countable)
    decoded = Counter()
    original = encode_module.open_image
    monkeypatch.setattr(encode_module, "open_image", lambda *a, **k: decoded.update([1]) or original(*a, **k))
    resumed = _loader(sets, tiny_tokenizer, encoder_config, micro_batch_size=3)
    resumed.load_state_dict(state)
    batch = next(iter(resumed))
    assert decoded[1] == batch.num_samples == 3


def test_another_world_size_resumes_statistically(mixed_build, tiny_tokenizer, encoder_config, caplog):
    sets = [resolve_shard_set(str(mixed_build))]
    loader = _loader(sets, tiny_tokenizer, encoder_config)
    list(itertools.islice(loader, 2))
    state = loader.state_dict()
    other = _loader(sets, tiny_tokenizer, encoder_config, rank=0, world=2)
    other.load_state_dict(state)
    assert "resuming statistically" in caplog.text
    assert other.state.batches == 0 and other.state.seed != state["seed"]
    assert len(list(itertools.islice(other, 2))) == 2
