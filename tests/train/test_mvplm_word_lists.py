"""The MVP-LM word-list stage: reshuffled and negative-padded on every read, seeded, resumed exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import build

from fclm_data.formats import parse
from fclm_data.recipes import single_source_recipe
from fclm_train.data.shards import resolve_shard_set
from fclm_train.data.stages import Counted, MvplmWordLists, mix, mvplm_vocabulary, read_items, set_stream, shuffle, skip

SOURCES = ["flickr30k_gcg", "refcocog_gcg", "paco_lvis", "refcoco"]


@pytest.fixture(scope="module")
def mvplm_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mvplm")
    recipe = single_source_recipe(SOURCES, 0, 4)
    recipe.format = "mvplm"
    build(recipe, data_root, out)
    return out


def _raw_samples(build_dir: Path) -> list[dict]:
    from fclm_train.data.shards import StreamItem

    return [s for url in sorted(build_dir.glob("shard-*.tar")) for s in read_items([StreamItem(str(url), 0, 1, 0)])]


def test_word_lists_are_redrawn_padded_and_still_parse(mvplm_build):
    vocabulary = mvplm_vocabulary([str(mvplm_build / "shard-000000.tar")])
    assert vocabulary == json.loads((mvplm_build / "manifest.json").read_text())["mvplm_vocabulary"]
    raws = _raw_samples(mvplm_build)
    word = [r for r in raws if b'"mode":"word"' in r["json"]]
    sentence = [r for r in raws if b'"mode":"word"' not in r["json"]]
    assert word and sentence
    stage = MvplmWordLists(seed=0, stream=0, vocabulary=vocabulary, budget=6)
    for raw in word:
        before = json.loads(raw["json"])
        after_raw = stage(raw, 5)
        after = json.loads(after_raw["json"])
        assert after_raw == stage(raw, 5)  # a function of (seed, stream, position, key)
        b, a = before["format_fields"]["turns"][0], after["format_fields"]["turns"][0]
        assert set(b["words"]) <= set(a["words"]) and len(a["words"]) == max(6, len(b["words"]))
        assert a["negatives"] == len(a["words"]) - len(b["words"])
        assert not (set(a["words"]) - set(b["words"])) & set(b["words"])
        assert [a["words"][c] for c in a["classes"]] == [b["words"][c] for c in b["classes"]]
        assert parse(after).regions() == parse(before).regions()  # same targets, same order
    redraws = {json.loads(stage(word[0], p)["json"])["conversations"][0]["content"] for p in range(12)}
    assert len(redraws) > 1  # every read draws afresh
    assert stage(sentence[0], 3) is sentence[0]  # sentence-based samples pass through


def _stream(shard_set, vocabulary, seed: int, consumed: int, n: int) -> list[bytes]:
    """The loader's raw pipeline for one stream (mix -> shuffle -> count -> skip) then the word-list stage,
    composed as ``StreamDataset.__iter__`` composes it."""
    raw = mix([set_stream(shard_set, 0, 1, seed, 0)], [1.0], random.Random(f"fclm-mix/{seed}/0"))
    raw = Counted(shuffle(raw, 4, random.Random(f"fclm-shuffle/{seed}/0")))
    skip(raw, consumed)
    stage = MvplmWordLists(seed, 0, vocabulary, 5)
    return [stage(next(raw), raw.count)["json"] for _ in range(n)]


def test_resume_redraws_exactly_the_same_word_lists(mvplm_build):
    shard_set = resolve_shard_set(str(mvplm_build))
    vocabulary = mvplm_vocabulary(shard_set.urls)
    epoch = shard_set.num_samples
    expected = _stream(shard_set, vocabulary, 0, 0, 2 * epoch)
    assert _stream(shard_set, vocabulary, 0, 5, 2 * epoch - 5) == expected[5:]  # resumed after 5 samples
    assert _stream(shard_set, vocabulary, 1, 0, 2 * epoch) != expected
    lists = {}
    for body in expected:  # epoch 2 re-reads every sample: its word lists are drawn afresh
        sample = json.loads(body)
        if sample["format_fields"]["turns"][0]["mode"] == "word":
            lists.setdefault(sample["key"], []).append(sample["conversations"][0]["content"])
    assert lists and any(len(set(v)) > 1 for v in lists.values())


def test_the_fclm_encoder_skips_and_counts_other_formats(mvplm_build, tiny_tokenizer, encoder_config):
    from fclm_train.data.encode import Encoder

    raws = _raw_samples(mvplm_build)
    encoder = Encoder(tiny_tokenizer, encoder_config)  # format "fclm": FCLM never trains on MVP-LM text
    assert all(encoder(raw) is None for raw in raws)
    assert encoder.skipped == {"format_mismatch": len(raws)}


def test_a_loader_refuses_a_build_of_another_format(mvplm_build, tiny_tokenizer, encoder_config):
    from dataclasses import replace

    from fclm_train.data.loader import LoaderConfig, ShardLoader
    from fclm_train.data.shards import ShardError
    from fclm_train.data.tokenizer import add_format_tokens
    from fclm_train.data.tokenizer import tiny_tokenizer as fresh_tiny_tokenizer

    shard_set = resolve_shard_set(str(mvplm_build))
    assert shard_set.format == "mvplm"
    with pytest.raises(ShardError, match=r"a mvplm-format build \(its manifest.json\); this loader \(EncoderConfig"
                                         r".format='fclm'\) reads fclm-format shards"):  # fmt: skip
        ShardLoader([shard_set], tiny_tokenizer, encoder_config, LoaderConfig())
    mvplm = replace(encoder_config, format="mvplm")
    with pytest.raises(ValueError, match="splits mvplm's special token.s. <PER> into pieces; add them first"):
        ShardLoader([shard_set], tiny_tokenizer, mvplm, LoaderConfig())
    tokenizer = fresh_tiny_tokenizer()  # never the session's: its ids are the tiny model's
    add_format_tokens(tokenizer, "mvplm")
    assert ShardLoader([shard_set], tokenizer, mvplm, LoaderConfig()).sets == [shard_set]


def test_a_stream_of_only_other_format_samples_stops_with_the_reason(mvplm_build, tiny_tokenizer, encoder_config,
                                                                     tmp_path):  # fmt: skip
    """A shard without its manifest cannot be refused up front: every sample is skipped, then the stream gives up
    (it would otherwise search forever for a first batch)."""
    import shutil

    from fclm_train.data.loader import SKIPS_IN_A_ROW, LoaderConfig, ShardLoader
    from fclm_train.data.shards import ShardError

    shutil.copy(mvplm_build / "shard-000000.tar", tmp_path / "shard-000000.tar")
    shard_set = resolve_shard_set(str(tmp_path / "shard-000000.tar"))
    assert shard_set.format == "fclm"  # no manifest says otherwise
    loader = ShardLoader([shard_set], tiny_tokenizer, encoder_config, LoaderConfig(num_workers=0, shuffle_buffer=1))
    with pytest.raises(ShardError, match=rf"{SKIPS_IN_A_ROW + 1} samples in a row were skipped, none can be trained "
                                         rf"on \(so far: format_mismatch {SKIPS_IN_A_ROW + 1}\)"):  # fmt: skip
        next(iter(loader))
