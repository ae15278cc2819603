"""Describe-Anything tars -> paired DLC / DL-RES samples."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
from helpers import read_samples

from fclm_data.masks import decode_rle
from fclm_data.templates import DLC_QUESTIONS, DLRES_ANSWERS, dlres_query, template_text, with_image


def _release_regions(root: Path, subset: str) -> dict[tuple[str, int], dict]:
    regions = {}
    for tar_path in sorted((root / f"describe-anything-dataset/{subset}/images").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".pickle"):
                    for i, region in enumerate(pickle.loads(tar.extractfile(member).read())):
                        regions[(f"{tar_path.stem}-{member.name.partition('.')[0]}", i)] = region
    return regions


def test_every_region_becomes_one_paired_sample(data_root: Path, stage2_build: Path) -> None:
    samples = read_samples(stage2_build)
    for subset, source in (
        ("COCOStuff", "dam_cocostuff"),
        ("Mapillary", "dam_mapillary"),
        ("OpenImages", "dam_openimages"),
        ("SAM", "dam_sam"),
    ):
        regions = _release_regions(data_root, subset)
        keys = {k for k, (s, _, _) in samples.items() if s["source"] == source}
        assert keys == {f"{source}-{stem}-{i}" for stem, i in regions}
        assert any(i > 0 for _, i in regions)  # some tar samples carry several regions


def test_pairing_and_table12_rendering(stage2_build: Path) -> None:
    for sample, _, _ in read_samples(stage2_build).values():
        caption = sample["regions"][0]["caption"]
        dlc_q, dlres_q, dlres_a = sample["templates"]
        assert sample["task"] == "dlc_dlres" and len(sample["regions"]) == 1
        # DLC view: region in, caption out
        assert sample["conversations"][0]["content"] == with_image(template_text(dlc_q))
        assert template_text(dlc_q) in DLC_QUESTIONS
        assert sample["conversations"][1] == {"role": "assistant", "content": caption}
        assert (sample["region_inputs"], sample["seg_targets"]) == ([0], [])
        # DL-RES view of the same region: caption in, [SEG] out
        pair = sample["pair"]
        assert pair["conversations"][0]["content"] == with_image(dlres_query(template_text(dlres_q), caption))
        assert pair["conversations"][1]["content"] == template_text(dlres_a) and template_text(dlres_a) in DLRES_ANSWERS
        assert (pair["region_inputs"], pair["seg_targets"]) == ([], [0])


def test_masks_and_images_are_the_releases(data_root: Path, stage2_build: Path) -> None:
    regions = _release_regions(data_root, "SAM")
    for key, (sample, image, ext) in read_samples(stage2_build).items():
        if sample["source"] != "dam_sam":
            continue
        _, tar_stem, member, index = key.split("-")
        source_region = regions[(f"{tar_stem}-{member}", int(index))]
        rle = source_region["mask_rle"]
        counts = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
        from pycocotools import mask as mask_utils

        assert np.array_equal(
            decode_rle(sample["regions"][0]["mask"]), mask_utils.decode({"size": rle["size"], "counts": counts})
        )
        assert sample["regions"][0]["label"] == source_region["category"]
        with tarfile.open(data_root / sample["provenance"]["source_file"]) as tar:
            assert tar.extractfile(f"{member}.jpg").read() == image and ext == "jpg"


def test_bytes_counts_are_accepted(data_root: Path, stage2_build: Path) -> None:
    """The synthetic Mapillary subset stores RLE counts as bytes, the others as str."""
    region = next(iter(_release_regions(data_root, "Mapillary").values()))
    assert isinstance(region["mask_rle"]["counts"], bytes)
    assert sum(s["source"] == "dam_mapillary" for s, _, _ in read_samples(stage2_build).values()) > 0
