"""REF-VLM / MVP-LM batches from the loader: the same ChatML, the formats' tokens whole, word token spans exact
(Qwen's real BPE), boxes / classes / masks per target, FCLM batches unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import torch
from helpers import build
from test_tokenizer import QWEN_CHAT_TEMPLATE, _hf_messages
from webdataset.tariterators import tarfile_samples

from fclm_data.formats import parse, render
from fclm_data.recipes import single_source_recipe
from fclm_train.data.collate import collate
from fclm_train.data.encode import IGNORE_INDEX, Encoder, EncoderConfig
from fclm_train.data.format_rows import NO_CLASS, UNIT_BOX, UNIT_MASK
from fclm_train.data.loader import LoaderConfig, ShardLoader
from fclm_train.data.shards import resolve_shard_set
from fclm_train.data.stages import MvplmWordLists, mvplm_vocabulary
from fclm_train.data.tokenizer import add_format_tokens, offline_qwen_tokenizer

MVPLM_SOURCES = ["flickr30k_gcg", "paco_lvis", "refcoco"]
REFVLM_SOURCES = ["refcoco", "osprey_short_form", "vg_grit", "dam_cocostuff"]
SIDE = 112  #: a small frame: the masks are compared, not the model


def _build(data_root: Path, out: Path, sources: list[str], name: str) -> Path:
    recipe = single_source_recipe(sources, 0, 1000)
    recipe.format = name
    build(recipe, data_root, out)
    return out


@pytest.fixture(scope="module")
def builds(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("formats")
    return {"mvplm": _build(data_root, tmp / "mvplm", MVPLM_SOURCES, "mvplm"),
            "refvlm": _build(data_root, tmp / "refvlm", REFVLM_SOURCES, "refvlm"),
            "fclm": _build(data_root, tmp / "fclm", REFVLM_SOURCES, "fclm")}  # fmt: skip


@pytest.fixture(scope="module")
def qwen():
    """Qwen2.5-VL's real BPE with both formats' tokens (a fresh one: the ids of other tests' tokenizers stay)."""
    tokenizer = offline_qwen_tokenizer()
    add_format_tokens(tokenizer, "refvlm")
    add_format_tokens(tokenizer, "mvplm")
    return tokenizer


def raws(build_dir: Path) -> list[dict]:
    return [s for shard in sorted(build_dir.glob("shard-*.tar")) for s in tarfile_samples([{"url": str(shard)}])]


def encode_all(tokenizer, samples: list[dict], name: str) -> list:
    encoder = Encoder(tokenizer, EncoderConfig(side=SIDE, format=name))
    encoded = [encoder(raw) for raw in samples]
    assert all(e is not None for e in encoded) and not encoder.skipped, encoder.skipped
    return encoded


def batch_of(tokenizer, encoded: list):
    return collate(encoded, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                   config=EncoderConfig(side=SIDE))  # fmt: skip


def names_per_output(meta: dict) -> list[list[str]]:
    """Per MVP-LM turn (= per <PER>): the names its spans must cover, in list order (sentence: the expression)."""
    return [turn["words"] for turn in meta["format_fields"]["turns"]]


def span_names(tokenizer, batch) -> list[tuple[int, int, str]]:
    """(row, output, decoded text) per word span."""
    return [(row, output, tokenizer.decode(batch.input_ids[row, start:end].tolist()))
            for row, output, start, end in batch.targets.word_spans.tolist()]  # fmt: skip


def expected_names(metas: list[dict]) -> list[tuple[int, int, str]]:
    out, before = [], 0
    for row, meta in enumerate(metas):
        lists = names_per_output(meta)
        out += [(row, before + o, name) for o, names in enumerate(lists) for name in names]
        before += len(lists)
    return out


def test_mvplm_word_spans_decode_to_exactly_each_name_with_qwen_bpe(builds, qwen):
    samples = raws(builds["mvplm"])
    metas = [json.loads(raw["json"]) for raw in samples]
    batch = batch_of(qwen, encode_all(qwen, samples, "mvplm"))
    assert span_names(qwen, batch) == expected_names(metas)  # no leading space, no trailing comma, every name
    word = [n for meta in metas for turn in meta["format_fields"]["turns"] if turn["mode"] == "word" for n in turn["words"]]
    # the data holds the hard case: a name whose end is no token boundary when the whole list is tokenised in one
    # pass (Qwen's pre-tokeniser makes "container)," one piece) -- the piecewise tokenisation is what makes it exact
    hard = [n for n in word if not n[-1].isalnum()]
    assert hard, "the fixture should hold a name ending in punctuation (PACO's 'glass_(drink_container)')"
    text = ", ".join(word) + "."
    ends, pos = set(), 0
    for token in qwen.encode(text):
        pos += len(qwen.decode([token]))
        ends.add(pos)
    assert any(text.index(name + ",") + len(name) not in ends for name in hard if name + "," in text)
    # spans lie in user turns (never supervised); each turn's <PER> is an output occurrence, in order
    per = qwen.convert_tokens_to_ids("<PER>")
    targets = batch.targets
    for row, _, start, end in targets.word_spans.tolist():
        assert (batch.labels[row, start:end] == IGNORE_INDEX).all()
    occurrences = (batch.input_ids == per).nonzero()[:, 0]
    assert torch.equal(occurrences, targets.output_batch_index)
    assert targets.word_based.tolist() == [t["mode"] == "word" for m in metas for t in m["format_fields"]["turns"]]


def test_mean_pooling_over_the_spans_equals_the_mean_over_each_names_own_tokens(builds, qwen):
    samples = raws(builds["mvplm"])
    metas = [json.loads(raw["json"]) for raw in samples]
    batch = batch_of(qwen, encode_all(qwen, samples, "mvplm"))
    table = torch.randn(len(qwen), 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hidden = table[batch.input_ids]  # (B, T, D): a stand-in for the LLM's output embeddings
    spans = batch.targets.word_spans
    rows, starts, ends = spans[:, 0], spans[:, 2], spans[:, 3]
    lengths = ends - starts
    assert (lengths > 0).all()
    # the way a model pools: one gather and a segment mean over all spans at once
    owner = torch.repeat_interleave(torch.arange(len(spans)), lengths)
    offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    positions = torch.repeat_interleave(starts, lengths) + offsets
    summed = torch.zeros(len(spans), 8, dtype=torch.float64).index_add_(0, owner, hidden[rows[owner], positions])
    pooled = summed / lengths[:, None]
    names = [name for _, _, name in expected_names(metas)]
    reference = torch.stack([table[torch.tensor(qwen.encode(name))].mean(0) for name in names])
    torch.testing.assert_close(pooled, reference, rtol=0, atol=1e-12)


def test_spans_and_classes_follow_the_word_list_stage_redraw(builds, qwen):
    directory = builds["mvplm"]
    vocabulary = mvplm_vocabulary([str(directory / "shard-000000.tar")])
    stage = MvplmWordLists(seed=3, stream=0, vocabulary=vocabulary, budget=9)
    before = raws(directory)
    after = [stage(raw, position) for position, raw in enumerate(before)]
    metas = [json.loads(raw["json"]) for raw in after]
    word = [m for m in metas if m["format_fields"]["turns"][0]["mode"] == "word"]
    assert word and all(len(m["format_fields"]["turns"][0]["words"]) >= 9 for m in word)
    changed = [a for a, b in zip(after, before) if a["json"] != b["json"]]
    assert changed  # the lists were redrawn
    batch = batch_of(qwen, encode_all(qwen, after, "mvplm"))
    assert span_names(qwen, batch) == expected_names(metas)
    # a target's class names the same phrase it named before the redraw: parse(before) == classes over spans
    spans_by_output: dict[int, list[str]] = {}
    for _, output, name in span_names(qwen, batch):
        spans_by_output.setdefault(output, []).append(name)
    targets = batch.targets
    phrases = [spans_by_output[o][c] for o, c in zip(targets.outputs.tolist(), targets.classes.tolist())]
    original = [g.phrase for raw in before for g in parse(json.loads(raw["json"])).groups for _ in g.regions]
    assert phrases == original


def test_mvplm_targets_carry_boxes_units_and_masks_at_stored_size(builds, qwen):
    samples = raws(builds["mvplm"])
    metas = [json.loads(raw["json"]) for raw in samples]
    encoded = encode_all(qwen, samples, "mvplm")
    batch = batch_of(qwen, encoded)
    regions = [(m, r) for m in metas for r in m["seg_targets"]]
    boxes = torch.tensor([m["regions"][r]["bbox"] for m, r in regions], dtype=torch.float32)
    assert torch.equal(batch.targets.boxes, boxes) and batch.targets.units.tolist() == [UNIT_MASK] * len(regions)
    assert batch.targets.classes.min() >= 0
    inputs = batch.prepare()  # the same device step as FCLM's: target masks on the frame
    assert inputs.seg_masks.shape == (len(regions), SIDE, SIDE) and inputs.region_masks.shape[0] == 0
    assert inputs.seg_masks.flatten(1).any(1).all()
    rows = [b for b, m in enumerate(metas) for _ in m["seg_targets"]]
    assert inputs.seg_batch_index.tolist() == rows
    moved = batch.targets.to("cpu")
    assert moved.format == "mvplm" and torch.equal(moved.word_spans, batch.targets.word_spans)


def test_refvlm_rows_are_qwen_chat_with_a_system_turn_per_pair_and_masks_as_fclm(builds, qwen):
    samples = raws(builds["refvlm"])
    metas = [json.loads(raw["json"]) for raw in samples]
    encoded = encode_all(qwen, samples, "refvlm")
    template = jinja2.Environment().from_string(QWEN_CHAT_TEMPLATE.read_text())
    n_image = {s.key: s.rows[0].input_ids.count(qwen.convert_tokens_to_ids("<|image_pad|>")) for s in encoded}
    for meta, sample in zip(metas, encoded):
        views = [(meta, meta["format_fields"]["system"])]
        if meta["pair"] is not None:
            views.append((meta["pair"], meta["format_fields"]["pair_system"]))
        assert len(sample.rows) == len(views)
        for row, (view, systems) in zip(sample.rows, views):
            messages, users = [], iter(systems)
            for turn in view["conversations"]:
                if turn["role"] == "user":
                    messages.append({"role": "system", "content": next(users)})
                messages.append(turn)
            text = template.render(messages=_hf_messages(messages), add_generation_prompt=False)
            assert row.input_ids == qwen.encode(text.replace("<|image_pad|>", "<|image_pad|>" * n_image[meta["key"]]))
    for name in ("<Phrase>", "</Phrase>", "<Unit>", "</Unit>", "<REF>", "[VPT]", "<Task>", "</Task>"):
        assert len(qwen.encode(name)) == 1
    batch = batch_of(qwen, encoded)
    targets = batch.targets
    ref = qwen.convert_tokens_to_ids("<REF>")
    assert torch.equal((batch.input_ids == ref).nonzero()[:, 0], targets.output_batch_index)
    assert torch.equal(targets.outputs, torch.arange(len(targets.outputs)))  # one target per <REF>
    assert set(targets.classes.tolist()) <= {NO_CLASS} and targets.word_spans.shape == (0, 4)
    views = [v for m in metas for v in [m] + ([m["pair"]] if m["pair"] else [])]
    assert targets.units.tolist() == [UNIT_MASK] * sum(len(v["seg_targets"]) for v in views)
    boxes = [m["regions"][r]["bbox"] for m in metas for v in [m] + ([m["pair"]] if m["pair"] else [])
             for r in v["seg_targets"]]  # fmt: skip
    assert torch.equal(targets.boxes, torch.tensor(boxes, dtype=torch.float32))
    vpt = qwen.convert_tokens_to_ids("[VPT]")
    assert sum(len(v["region_inputs"]) for v in views) == int((batch.input_ids == vpt).sum()) > 0
    assert batch.consistency_pairs.shape[0] > 0  # Describe-Anything pairs keep their [VPT] <-> <REF> links


def test_refvlm_prompt_and_target_masks_are_the_fclm_builds_masks(builds, qwen, tiny_tokenizer):
    """[VPT] inputs and <REF> targets reach the device step exactly as FCLM's <region> and [SEG] do."""
    refvlm = {s.key: s for s in encode_all(qwen, raws(builds["refvlm"]), "refvlm")}
    fclm = {s.key: s for s in encode_all(tiny_tokenizer, raws(builds["fclm"]), "fclm")}
    assert refvlm.keys() == fclm.keys()
    keys = sorted(refvlm)
    ours = batch_of(qwen, [refvlm[k] for k in keys]).prepare()
    theirs = collate([fclm[k] for k in keys], tiny_tokenizer.pad_token_id, 261, config=EncoderConfig(side=SIDE))
    assert theirs.targets is None  # the FCLM path is unchanged: no format fields
    theirs = theirs.prepare()
    for name in ("region_masks", "region_batch_index", "seg_masks", "seg_batch_index", "consistency_pairs",
                 "sam_images", "pixel_values"):  # fmt: skip
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


def test_the_loader_serves_mvplm_batches_with_the_configured_word_budget(builds):
    from fclm_train.config import TrainConfig
    from fclm_train.data.tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer()  # a fresh one: adding <PER> must not change the session's tiny tokenizer
    add_format_tokens(tokenizer, "mvplm")
    data = TrainConfig.from_dict({"data": {"mvplm_word_budget": 7}}).data
    config = LoaderConfig.from_data(data, seed=0, num_workers=1, micro_batch_size=4, shuffle_buffer=1)
    assert config.mvplm_word_budget == 7
    encoder = EncoderConfig(side=SIDE, format="mvplm")
    loader = ShardLoader([resolve_shard_set(str(builds["mvplm"]))], tokenizer, encoder, config)
    lists = []
    for _, batch in zip(range(3), loader):
        inputs = batch.inputs
        assert inputs.targets is not None and inputs.targets.format == "mvplm"
        spans = inputs.targets.word_spans.tolist()
        word_outputs = inputs.targets.word_based.nonzero()[:, 0].tolist()
        lists += [sum(1 for s in spans if s[1] == o) for o in word_outputs]
        for row, _, start, end in spans:  # byte-level tiny tokenizer: exact too
            assert "," not in tokenizer.decode(inputs.input_ids[row, start:end].tolist())
    assert 7 in lists and all(n >= 7 for n in lists)  # padded with absent categories up to the budget


def test_a_box_only_target_is_a_box_unit_in_text_and_batch(builds, qwen):
    """A region with only a box (GRiT-style; no builder makes one a target today) decodes as REF-VLM's box unit."""
    raw = next(r for r in raws(builds["fclm"]) if json.loads(r["json"])["source"] == "refcoco")
    meta = json.loads(raw["json"])
    meta["regions"][meta["seg_targets"][0]]["box_only"] = True
    rendered = render(meta, "refvlm")
    assert "<Unit>box</Unit>" in rendered["conversations"][1]["content"]
    (sample,) = encode_all(qwen, [{**raw, "json": json.dumps(rendered).encode()}], "refvlm")
    units = batch_of(qwen, [sample]).targets.units.tolist()
    first = meta["seg_targets"][0]
    assert units == [UNIT_BOX if r == first else UNIT_MASK for r in meta["seg_targets"]] and UNIT_BOX in units


def _targets_of(batch) -> dict:
    t = batch.inputs.targets
    return {"ids": batch.inputs.input_ids.tolist(), "spans": t.word_spans.tolist(), "classes": t.classes.tolist(),
            "word": t.word_based.tolist()}


def test_a_resumed_mvplm_loader_yields_the_same_word_lists_spans_and_classes(builds):
    from fclm_train.data.tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    add_format_tokens(tokenizer, "mvplm")
    sets = [resolve_shard_set(str(builds["mvplm"]))]
    config = LoaderConfig(num_workers=0, micro_batch_size=2, shuffle_buffer=4, seed=1, mvplm_word_budget=6)
    encoder = EncoderConfig(side=SIDE, format="mvplm")
    first = ShardLoader(sets, tokenizer, encoder, config)
    expected, state = [], None
    for n, batch in zip(range(4), first):
        expected.append(_targets_of(batch))
        if n == 1:
            state = first.state_dict()
    resumed = ShardLoader(sets, tokenizer, encoder, config)
    resumed.load_state_dict(state)
    assert any(True in e["word"] for e in expected[2:])  # redrawn word lists among the resumed batches
    assert [_targets_of(b) for _, b in zip(range(2), resumed)] == expected[2:]


def test_malformed_format_fields_are_skipped_as_token_mismatch(builds, qwen):
    samples = raws(builds["mvplm"])
    word = next(r for r in samples if b'"mode":"word"' in r["json"])
    meta = json.loads(word["json"])
    shifted = json.loads(word["json"])
    shifted["format_fields"]["turns"][0]["word_spans"][0][0] += 1  # a span that no longer covers its name
    fewer = {**meta, "seg_targets": meta["seg_targets"][:-1]}  # targets that are not the turns' targets
    encoder = Encoder(qwen, EncoderConfig(side=SIDE, format="mvplm"))
    for bad in (shifted, fewer):
        assert encoder({**word, "json": json.dumps(bad).encode()}) is None
    assert encoder.skipped == {"token_mismatch": 2}


def test_a_batch_never_mixes_formats(builds, qwen, tiny_tokenizer):
    mvplm = encode_all(qwen, raws(builds["mvplm"])[:1], "mvplm")
    fclm = encode_all(tiny_tokenizer, raws(builds["fclm"])[:1], "fclm")
    with pytest.raises(ValueError, match=r"a batch mixes sample formats \['fclm', 'mvplm'\]"):
        batch_of(qwen, mvplm + fclm)
