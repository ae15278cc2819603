"""The ``pair`` option of grounding sources: a region-in / text-out view paired with the [SEG]-out view.

Per source: off by default (the plain build is byte-identical to ``pair: false``); on, every sample validates,
its conversation asks about ``<region>`` inputs and its ``pair`` segments the same regions, so every region
input has a [SEG] of the same region in the pair (what the trainer turns into consistency pairs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import build, read_samples

from fclm_data.recipes import parse_recipe
from fclm_data.schema import REGION_TOKEN, SEG_TOKEN, validate_sample

#: source -> the options of the build (besides pair)
PAIRABLE = {
    "refcoco": {},
    "refcocog": {},
    "pix2cap": {},
    "osprey_detailed_description": {},
    "grandf": {},
    "openpsg_gcg": {},
    "flickr30k_gcg": {},
    "refcocog_gcg": {},
    "paco_lvis": {},
}
#: sources whose own view is [SEG]-out: with pair on it becomes the pair, unchanged
SEG_OUT = ("refcoco", "refcocog", "pix2cap", "grandf", "openpsg_gcg", "flickr30k_gcg", "refcocog_gcg")


def _build(data_root: Path, out: Path, source: str, options: dict) -> dict[str, tuple[dict, bytes, str]]:
    recipe = parse_recipe({"name": f"pair_{source}", "seed": 0, "sources": [{"source": source, "options": options}]})
    build(recipe, data_root, out)
    return read_samples(out)


def _digest(out: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.glob("shard-*.tar")))).hexdigest()


@pytest.fixture(scope="module")
def builds(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """source -> (plain samples, paired samples, plain digest, pair:false digest)."""
    result = {}
    for source, options in PAIRABLE.items():
        root = tmp_path_factory.mktemp(f"pair_{source}")
        plain = _build(data_root, root / "plain", source, options)
        _build(data_root, root / "off", source, {**options, "pair": False})
        paired = _build(data_root, root / "paired", source, {**options, "pair": True})
        result[source] = (plain, paired, _digest(root / "plain"), _digest(root / "off"))
    return result


def user_text(view: dict) -> str:
    return " ".join(t["content"] for t in view["conversations"] if t["role"] == "user")


def assistant_texts(view: dict) -> list[str]:
    return [t["content"] for t in view["conversations"] if t["role"] == "assistant"]


@pytest.mark.parametrize("source", sorted(PAIRABLE))
def test_pair_is_off_by_default_and_false_changes_nothing(source, builds):
    plain, _, plain_digest, off_digest = builds[source]
    assert plain and all(sample["pair"] is None for sample, _, _ in plain.values())
    assert plain_digest == off_digest


@pytest.mark.parametrize("source", sorted(PAIRABLE))
def test_paired_samples_link_every_region_input_to_a_seg_of_the_same_region(source, builds):
    plain, paired, _, _ = builds[source]
    assert paired.keys() == plain.keys()
    n_paired = 0
    for key, (sample, _, _) in paired.items():
        assert validate_sample(sample) == [], key
        pair = sample["pair"]
        if pair is None:  # PACO: no region of the image has a name of its own
            assert source == "paco_lvis" and sample == plain[key][0]
            continue
        n_paired += 1
        assert pair is not None and sample["seg_targets"] == [] and pair["region_inputs"] == []
        assert user_text(sample).count(REGION_TOKEN) == len(sample["region_inputs"]) > 0
        assert SEG_TOKEN not in " ".join(assistant_texts(sample))
        assert " ".join(assistant_texts(pair)).count(SEG_TOKEN) == len(pair["seg_targets"])
        assert set(pair["seg_targets"]) <= set(sample["region_inputs"])
        if source != "paco_lvis":  # PACO pairs only the names unique in the image
            assert set(sample["region_inputs"]) <= set(pair["seg_targets"])
        assert sample["conversations"][0]["content"].startswith("<image>\n")
        assert pair["conversations"][0]["content"].startswith("<image>\n")
        assert sample["regions"] == plain[key][0]["regions"]
        if source in SEG_OUT:  # the [SEG]-out view is the plain sample's own conversation
            before = plain[key][0]
            assert (pair["conversations"], pair["seg_targets"]) == (before["conversations"], before["seg_targets"])
        else:  # the region-in view is the plain sample's own conversation
            before = plain[key][0]
            assert (sample["conversations"], sample["region_inputs"]) == (before["conversations"],
                                                                          before["region_inputs"])
    assert n_paired > 0


def test_refcoco_pair_keeps_the_res_view_and_asks_for_each_expression(builds):
    plain, paired, _, _ = builds["refcoco"]
    for key, (sample, _, _) in paired.items():
        before = plain[key][0]
        # the RES conversation is unchanged, now as the pair
        assert sample["pair"]["conversations"] == before["conversations"]
        assert sample["pair"]["seg_targets"] == before["seg_targets"]
        assert sample["region_inputs"] == before["seg_targets"]  # one REG turn per RES turn, same region
        expressions = [t["content"] for t in before["conversations"] if t["role"] == "user"]
        for expression, answer in zip(expressions, assistant_texts(sample)):
            assert answer.lower() in expression.lower()  # the REG answer is the expression the RES turn asked for
        assert all(t.startswith("reg_question:") for t in sample["templates"][len(before["templates"]):])
        assert sample["templates"][: len(before["templates"])] == before["templates"]


@pytest.mark.parametrize("source", ["pix2cap", "osprey_detailed_description"])
def test_descriptions_pair_through_table_12_both_ways(source, builds):
    from fclm_data.templates import dlres_query, template_text

    _, paired, _, _ = builds[source]
    for key, (sample, _, _) in paired.items():
        dlc = [t for t in sample["templates"] if t.startswith("dlc_question:")]
        dlres = [t for t in sample["templates"] if t.startswith("dlres_question:")]
        assert len(dlc) == len(dlres) == len(sample["region_inputs"]) == len(sample["pair"]["seg_targets"])
        captions = assistant_texts(sample)
        queries = [t["content"].removeprefix("<image>\n") for t in sample["pair"]["conversations"] if t["role"] == "user"]
        for caption, query, tid in zip(captions, queries, dlres):
            assert query == dlres_query(template_text(tid), caption)  # DL-RES query = the DLC answer
        assert sample["region_inputs"] == sample["pair"]["seg_targets"]


@pytest.mark.parametrize("source", ["grandf", "refcocog_gcg"])
def test_gcg_pair_asks_for_each_grounded_phrase(source, builds):
    import re

    _, paired, _, _ = builds[source]
    for key, (sample, _, _) in paired.items():
        gcg_answer = assistant_texts(sample["pair"])[0]
        phrases = re.findall(r"<p> (.*?) </p> \[SEG\]", gcg_answer)
        assert assistant_texts(sample) == [p.strip() for p in phrases]
        assert sample["region_inputs"] == sample["pair"]["seg_targets"]
        assert all(t.startswith("reg_question:") for t in sample["templates"][1:])


def test_paco_pairs_only_names_unique_in_the_image(builds, data_root):
    from fclm_data.sources import get_source
    from fclm_data.sources.paco_lvis import render_label

    units = get_source("paco_lvis", data_root, pair=True).index().units
    unique = {u.payload["image_id"]: set(u.payload["unique_names"]) for u in units}
    _, paired, _, _ = builds["paco_lvis"]
    kinds = set()
    for key, (sample, _, _) in paired.items():
        names = unique[sample["provenance"]["image_id"]]
        targets = set(sample["pair"]["seg_targets"]) if sample["pair"] else set()
        for i in sample["region_inputs"]:
            label = sample["regions"][i]["label"]
            assert (i in targets) == (label in names), (key, label)
            kinds.add(i in targets)
        if sample["pair"]:
            queries = [t["content"] for t in sample["pair"]["conversations"] if t["role"] == "user"]
            labels = [sample["regions"][i]["label"] for i in sample["pair"]["seg_targets"]]
            assert all(render_label(label, "natural") in q for label, q in zip(labels, queries))
    assert kinds == {True, False}  # the demo data has both unique and shared names


def test_a_source_that_cannot_pair_says_so(data_root):
    from fclm_data.sources import get_source

    with pytest.raises(ValueError, match="has no option.*pair"):
        get_source("reasonseg", data_root, pair=True)
