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
}


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
        off = _build(data_root, root / "off", source, {**options, "pair": False})
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
    for key, (sample, _, _) in paired.items():
        assert validate_sample(sample) == [], key
        pair = sample["pair"]
        assert pair is not None and sample["seg_targets"] == [] and pair["region_inputs"] == []
        assert user_text(sample).count(REGION_TOKEN) == len(sample["region_inputs"]) > 0
        assert SEG_TOKEN not in " ".join(assistant_texts(sample))
        assert " ".join(assistant_texts(pair)).count(SEG_TOKEN) == len(pair["seg_targets"])
        assert set(sample["region_inputs"]) <= set(pair["seg_targets"])
        assert sample["conversations"][0]["content"].startswith("<image>\n")
        assert pair["conversations"][0]["content"].startswith("<image>\n")
        assert sample["regions"] == plain[key][0]["regions"]


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
