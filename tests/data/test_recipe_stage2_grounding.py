"""``recipes/stage2_grounding.yaml``: Table 7's stage 2 plus paired grounding data (Table 11)."""

from __future__ import annotations

from pathlib import Path

from helpers import build, read_samples

from fclm_data.recipes import load_recipe, parse_recipe

STAGE2 = {"dam_cocostuff": 28365, "dam_mapillary": 17762, "dam_openimages": 64874, "dam_sam": 592822}


def test_recipe_is_stage_two_plus_paired_grounding():
    recipe = load_recipe("stage2_grounding")
    counts = {e.source: e.count for e in recipe.entries}
    assert {k: counts[k] for k in STAGE2} == STAGE2  # Table 7's stage 2 unchanged
    grounding = [e for e in recipe.entries if e.source not in STAGE2]
    assert {e.source for e in grounding} == {"refcoco", "refcoco_plus", "refcocog", "pix2cap"}
    assert all(e.options.get("pair") is True for e in grounding)
    assert sum(e.count for e in grounding) == 16994 + 16992 + 21899 + 18212  # their Table-7 stage-1 counts


def test_every_sample_of_a_small_build_is_paired(data_root: Path, tmp_path: Path):
    recipe = load_recipe("stage2_grounding")
    entries = [{"source": e.source, "count": 3, "options": dict(e.options)} for e in recipe.entries
               if e.source in ("dam_sam", "refcoco", "refcocog", "pix2cap")]  # fmt: skip
    build(parse_recipe({"name": "small", "seed": 0, "sources": entries}), data_root, tmp_path)
    samples = read_samples(tmp_path)
    assert {s["source"] for s, _, _ in samples.values()} == {"dam_sam", "refcoco", "refcocog", "pix2cap"}
    assert all(s["pair"] is not None and s["region_inputs"] and s["pair"]["seg_targets"] for s, _, _ in samples.values())
