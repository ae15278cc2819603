"""fclm-data build --format: every source in every format from the same samples, and render -> parse round trips.

The same synthetic data root is built three times (fclm, refvlm, mvplm, at most 6 samples per source); per
source, each rendered sample's parser must give back exactly the FCLM sample's regions in their order, with the
phrases recovered from the FCLM conversation; masks, boxes, labels and captions are untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import build, read_rejects, read_samples
from typer.testing import CliRunner

from fclm_data.cli import app
from fclm_data.formats import FormatError, get_format, parse
from fclm_data.formats.common import fclm_targets
from fclm_data.recipes import RecipeError, parse_recipe, single_source_recipe
from fclm_data.schema import SAMPLE_KEYS, validate_sample
from fclm_data.sources import list_sources

SOURCES = [spec.name for spec in list_sources()]
LIMIT = 6


def _build(root: Path, out: Path, fmt: str) -> dict:
    recipe = single_source_recipe(SOURCES, 0, 1000)
    recipe.format = fmt
    return build(recipe, root, out, limit=LIMIT)


@pytest.fixture(scope="module")
def builds(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict]]:
    """format -> (manifest, {key: sample})."""
    out = {}
    for fmt in ("fclm", "refvlm", "mvplm"):
        directory = tmp_path_factory.mktemp(f"fmt_{fmt}")
        manifest = _build(data_root, directory, fmt)
        out[fmt] = (manifest, {k: meta for k, (meta, _, _) in read_samples(directory).items()}, directory)
    return out


def test_fclm_is_the_default_and_writes_no_format_key(builds):
    manifest, samples, _ = builds["fclm"]
    assert "format" not in manifest and "format" not in manifest["options"]
    assert all(tuple(s) == SAMPLE_KEYS for s in samples.values())
    default = single_source_recipe(SOURCES, 0, 1000)
    assert manifest["recipe"]["fingerprint"] == default.fingerprint()  # unchanged by the formats feature


@pytest.mark.parametrize("fmt", ["refvlm", "mvplm"])
def test_format_is_recorded_and_samples_validate(builds, fmt):
    manifest, samples, _ = builds[fmt]
    assert manifest["format"] == fmt and manifest["options"]["format"] == fmt
    assert manifest["recipe"]["fingerprint"] != builds["fclm"][0]["recipe"]["fingerprint"]
    for sample in samples.values():
        assert sample["format"] == fmt and validate_sample(sample) == []


@pytest.mark.parametrize("source", SOURCES)
def test_refvlm_round_trip(builds, source):
    fclm, refvlm = builds["fclm"][1], builds["refvlm"][1]
    keys = [k for k, s in fclm.items() if s["source"] == source]
    assert keys, f"{source}: no sample built"
    assert {k for k, s in refvlm.items() if s["source"] == source} == set(keys)  # every sample renders
    for key in keys:
        original, rendered = fclm[key], refvlm[key]
        assert rendered["regions"] == original["regions"]
        parsed, expected = parse(rendered), fclm_targets(original)
        assert parsed == expected
        assert parsed.regions() == original["seg_targets"] and parsed.inputs == original["region_inputs"]
        text = json.dumps(rendered["conversations"])
        assert "[SEG]" not in text and "<region>" not in text
        assert len(rendered["format_fields"]["system"]) == sum(t["role"] == "assistant"
                                                               for t in rendered["conversations"])


@pytest.mark.parametrize("source", SOURCES)
def test_mvplm_round_trip(builds, source):
    fclm, mvplm = builds["fclm"][1], builds["mvplm"][1]
    _, _, directory = builds["mvplm"]
    keys = [k for k, s in fclm.items() if s["source"] == source]
    rejected = {r["record"]: r for r in read_rejects(directory) if r["code"] == "format_unsupported"}
    for key in keys:
        original = fclm[key]
        if key in rejected:  # said why, never silently
            assert "nothing for MVP-LM to perceive" in rejected[key]["detail"] and not original["seg_targets"]
            continue
        rendered = mvplm[key]
        assert rendered["regions"] == original["regions"]
        parsed = parse(rendered)
        assert parsed == get_format("mvplm").expected(original)
        wanted = original["seg_targets"] or list(dict.fromkeys(original["region_inputs"]))
        assert parsed.regions() == wanted == rendered["seg_targets"]
        for turn in rendered["format_fields"]["turns"]:
            assert len(turn["classes"]) == len(turn["targets"])


def test_refvlm_renders_triplets_and_the_cot_as_the_code_writes_them(builds):
    samples = builds["refvlm"][1]
    gres_multi = next(s for s in samples.values() if s["source"] == "grefcoco" and len(s["seg_targets"]) == 2)
    answer = gres_multi["conversations"][1]["content"]
    phrase = parse(gres_multi).groups[0].phrase
    assert answer == (f"<Task>\nUnit decode (True). Class name, target unit and number:\n- Name: {phrase} Unit: "
                      f"<Unit>mask</Unit> Num: 2\n</Task>\n<Phrase>{phrase}</Phrase>(<Unit>mask</Unit>[0]<REF>[1]<REF>).")
    assert gres_multi["format_fields"]["system"] == [
        "Task Command:\n- task name: grounding_segmentation\n- answer element: phrase, unit\n- unit: <Unit>mask</Unit>\n"]
    no_target = next(s for s in samples.values() if s["source"] == "grefcoco" and not s["seg_targets"])
    assert no_target["conversations"][1]["content"].startswith("<Task>\nUnit decode (False).\n</Task>\n")
    vpt = next(s for s in samples.values() if s["region_inputs"])
    assert sum(t["content"].count("[VPT]") for t in vpt["conversations"]) == len(vpt["region_inputs"])
    box = next(s for s in samples.values() if s["source"] == "vg_grit")
    assert all(r["box_only"] for r in box["regions"])


def test_mvplm_word_list_spans_and_response(builds):
    samples = builds["mvplm"][1]
    gcg = next(s for s in samples.values() if s["source"] == "flickr30k_gcg")
    turn = gcg["format_fields"]["turns"][0]
    user, answer = gcg["conversations"][0]["content"], gcg["conversations"][1]["content"]
    assert turn["mode"] == "word"
    assert user.startswith("<image>\nPlease identify all objects according to the given phrase list. This is all "
                           "the candidate phrases.\n") and user.endswith(".")
    assert [user[a:b] for a, b in turn["word_spans"]] == turn["words"]
    assert answer.endswith(". The perception result is <PER>") and "[SEG]" not in answer and "<p>" not in answer
    refcoco = next(s for s in samples.values() if s["source"] == "refcoco")
    assert refcoco["conversations"][0]["content"].startswith(
        "<image>\nPlease identify the target according to the following instruction.\n")
    assert sum("<image>" in t["content"] for t in refcoco["conversations"]) == 1
    vocabulary = builds["mvplm"][0]["mvplm_vocabulary"]
    assert vocabulary == sorted(vocabulary) and set(turn["words"]) <= set(vocabulary)


def test_parsers_refuse_tampered_text(builds):
    sample = next(s for s in builds["refvlm"][1].values() if s["source"] == "refcoco")
    bad = json.loads(json.dumps(sample))
    bad["conversations"][1]["content"] = bad["conversations"][1]["content"].replace("Num: 1", "Num: 2", 1)
    with pytest.raises(FormatError, match="VD-CoT"):
        parse(bad)
    bad = json.loads(json.dumps(sample))
    bad["conversations"][1]["content"] = bad["conversations"][1]["content"].replace("[0]<REF>", "[1]<REF>")
    with pytest.raises(FormatError, match="restart at 0"):
        parse(bad)
    word = next(s for s in builds["mvplm"][1].values() if s["format_fields"]["turns"][0]["mode"] == "word")
    bad = json.loads(json.dumps(word))
    bad["format_fields"]["turns"][0]["word_spans"][0][0] += 1
    with pytest.raises(FormatError, match="word_spans"):
        parse(bad)


def test_bad_format_names_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(app, ["build", "--source", "refcoco", "--format", "llava", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--format 'llava' is not one of" in result.output
    with pytest.raises(RecipeError, match="format 'llava' is not one of fclm, refvlm, mvplm"):
        parse_recipe({"sources": [{"source": "refcoco"}], "format": "llava"}, "r.yaml")
    assert parse_recipe({"sources": [{"source": "refcoco"}], "format": "refvlm"}).format == "refvlm"


def test_the_seed_papers_strings_are_in_templates():
    from fclm_data import templates as T

    assert set(T.REFVLM_PROMPTS) == {"caption", "gcg_mask", "gcg_box", "rec", "res", "reg", "ig_mask", "fovd", "fovs"}
    assert all(p.count("<image>") == 1 for p in T.REFVLM_PROMPTS.values())
    assert "{expression}" in T.REFVLM_PROMPTS["res"] and "<region>" in T.REFVLM_PROMPTS["ig_mask"]
    assert T.MVPLM_RESPONSE.format(caption="A cat") == "A cat. The perception result is <PER>"
    assert T.TABLES["gres_no_target_answer"] == T.GRES_NO_TARGET_ANSWERS
    assert not any("[SEG]" in a for a in T.GRES_NO_TARGET_ANSWERS)


def test_pix2cap_renders_word_based_by_category_name(builds):
    pix2cap = [s for s in builds["mvplm"][1].values() if s["source"] == "pix2cap"]
    assert pix2cap
    for sample in pix2cap:
        (turn,) = sample["format_fields"]["turns"]
        assert turn["mode"] == "word"
        assert [turn["words"][c] for c in turn["classes"]] == [sample["regions"][i]["label"] for i in turn["targets"]]


@pytest.mark.parametrize("fmt", ["refvlm", "mvplm"])
def test_hf_datasets_load_a_formatted_build(builds, fmt):
    """The dataset card's features carry format / format_fields, so load_dataset(OUT) reads these builds too."""
    datasets = pytest.importorskip("datasets")
    _, samples, directory = builds[fmt]
    if len({s["image"]["file_name"].rsplit(".", 1)[-1] for s in samples.values()}) > 1:
        pytest.skip("mixed image extensions: the card then has no features (as for fclm builds)")
    ds = datasets.load_dataset(str(directory), split="train")
    assert len(ds) == len(samples)
    for row in ds:
        assert row["json"] == samples[row["__key__"]]
