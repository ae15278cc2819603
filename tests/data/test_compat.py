"""Plain webdataset and HF datasets read the shards with every field intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds
from helpers import build, read_samples

from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.schema import SAMPLE_KEYS, hf_features


def test_webdataset_reads_every_sample(stage2_build: Path) -> None:
    expected = read_samples(stage2_build)
    shards = sorted(str(p) for p in stage2_build.glob("shard-*.tar"))
    seen = {}
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        assert set(sample) >= {"__key__", "jpg", "json"}
        seen[sample["__key__"]] = (json.loads(sample["json"]), sample["jpg"])
    assert seen.keys() == expected.keys()
    for key, (decoded, image) in seen.items():
        assert decoded == expected[key][0] and image == expected[key][1]
        assert list(decoded) == list(SAMPLE_KEYS)


@pytest.fixture(scope="module")
def mixed_build(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RES (pair null) and DLC/DL-RES (pair set) samples mixed: nulls first, structs later."""
    out = tmp_path_factory.mktemp("mixed")
    build(Recipe("mixed", [RecipeEntry("refcoco"), RecipeEntry("dam_sam")], seed=5), data_root, out)
    return out


def test_hf_datasets_load_webdataset_files(stage2_build: Path) -> None:
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in stage2_build.glob("shard-*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
    expected = read_samples(stage2_build)
    assert len(ds) == len(expected)
    for row in ds:
        assert row["json"] == expected[row["__key__"]][0]
        assert row["jpg"].size == (row["json"]["image"]["width"], row["json"]["image"]["height"])


def test_hf_datasets_load_the_output_directory_with_mixed_samples(mixed_build: Path) -> None:
    """The build's README.md carries the features, so nulls in the first rows do not break the load."""
    datasets = pytest.importorskip("datasets")
    expected = read_samples(mixed_build)
    assert {s["pair"] is None for s, _, _ in expected.values()} == {True, False}
    ds = datasets.load_dataset(str(mixed_build), split="train")
    assert len(ds) == len(expected)
    for row in ds:
        assert row["json"] == expected[row["__key__"]][0]
    files = sorted(str(p) for p in mixed_build.glob("shard-*.tar"))
    streamed = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", features=hf_features())
    assert [r["json"] for r in streamed] == [r["json"] for r in ds]
