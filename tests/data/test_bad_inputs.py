"""The bad-input corpus: every broken record is rejected with its reason, nothing else is lost.

One data root holds, next to good records, each kind of damage the releases (or a hostile
upload) can carry. The build must finish, write every good record, and name every bad one.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from PIL import Image
from pycocotools import mask as mask_utils

from fclm_data.synthetic import generate_data_root


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/fclm-pwned",))


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")
    return buf.getvalue()


def _corrupt_refcoco(root: Path) -> dict[str, str]:
    """Damage one train image of refcoco per kind; returns expected {sample key: reject code}."""
    path = root / "refer_seg/refcoco/instances.json"
    instances = json.loads(path.read_text())
    refs = pickle.loads((root / "refer_seg/refcoco/refs(unc).p").read_bytes())
    train_ids = sorted({r["image_id"] for r in refs if r["split"] == "train"})
    images = {i["id"]: i for i in instances["images"]}
    expected: dict[str, str] = {}

    def image_file(image_id: int) -> Path:
        return root / "coco/train2014" / images[image_id]["file_name"]

    damage = iter(train_ids)
    i = next(damage)
    image_file(i).unlink()
    expected[f"refcoco-train-{i}"] = "missing_image"  # noqa: E702
    i = next(damage)
    image_file(i).write_bytes(image_file(i).read_bytes()[:-300])
    expected[f"refcoco-train-{i}"] = "bad_image"  # noqa: E702,E501
    i = next(damage)
    image_file(i).write_bytes(b"<html>not found</html>")
    expected[f"refcoco-train-{i}"] = "bad_image"  # noqa: E702
    i = next(damage)
    image_file(i).write_bytes(_bomb_png())
    expected[f"refcoco-train-{i}"] = "decompression_bomb"  # noqa: E702
    i = next(damage)
    images[i]["file_name"] = "../../../etc/passwd"
    expected[f"refcoco-train-{i}"] = "unsafe_path"  # noqa: E702
    i = next(damage)
    images[i]["file_name"] = "/etc/passwd"
    expected[f"refcoco-train-{i}"] = "unsafe_path"  # noqa: E702
    i = next(damage)
    images[i]["height"] += 7
    expected[f"refcoco-train-{i}"] = "image_size_mismatch"  # noqa: E702
    i = next(damage)
    for ann in instances["annotations"]:  # every object of this image: a polygon of < 3 points
        if ann["image_id"] == i:
            ann["segmentation"] = [[10.0, 10.0, 20.0, 20.0]]
    expected[f"refcoco-train-{i}"] = "bad_polygon"
    path.write_text(json.dumps(instances))
    # RefCOCO+ gets a malformed instances.json: the whole file is one index-stage reject
    plus = root / "refer_seg/refcoco+/instances.json"
    plus.write_text(plus.read_text()[:-40])
    return expected


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _corrupt_dam(root: Path) -> dict[str, str]:
    """A new tar in the SAM subset with one damaged sample per kind; returns {record: code}."""
    good_tar = root / "describe-anything-dataset/SAM/images/00000000.tar"
    with tarfile.open(good_tar) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    key = sorted(n.partition(".")[0] for n in members)[0]
    jpg, records = members[f"{key}.jpg"], pickle.loads(members[f"{key}.pickle"])
    region = records[0]
    h, w = region["mask_rle"]["size"]
    zeros = np.zeros((h, w), dtype=np.uint8, order="F")
    empty = {"size": [h, w], "counts": mask_utils.encode(zeros)["counts"].decode()}  # valid RLE, no foreground
    cases = {
        "trunc": (jpg[:-500], [region], "bad_image"),
        "notimg": (b"\x00" * 100, [region], "bad_image"),
        "evil": (jpg, [region, _Exploit()], "unsafe_pickle"),
        "size": (jpg, [{**region, "mask_rle": {**region["mask_rle"], "size": [h + 1, w]}}], "mask_size_mismatch"),
        "empty": (jpg, [{**region, "mask_rle": empty}], "empty_mask"),
        "nocap": (jpg, [{**region, "caption": "  "}], "bad_text"),
    }
    expected = {}
    with tarfile.open(good_tar.with_name("00000009.tar"), "w") as tar:
        for name, (image, regions, code) in cases.items():
            _member(tar, f"{name}.jpg", image)
            _member(tar, f"{name}.pickle", pickle.dumps(regions, protocol=4))
            expected[name] = code
        _member(tar, "cut.jpg", jpg)
        _member(tar, "cut.pickle", pickle.dumps([region])[:-7])
        expected["cut"] = "malformed_annotation"
        _member(tar, "lonely.jpg", jpg)  # no pickle member
        expected["lonely"] = "malformed_annotation"
    return expected


@pytest.fixture(scope="module")
def corrupted_root(tmp_path_factory: pytest.TempPathFactory):
    root = generate_data_root(tmp_path_factory.mktemp("bad_root"), families=["refcoco", "dam"])
    return root, _corrupt_refcoco(root), _corrupt_dam(root)


@pytest.fixture(scope="module", params=["decode", "markers"])
def corrupted(request, corrupted_root, tmp_path_factory: pytest.TempPathFactory):
    """The same corpus under both image checks: each must reject the same records for the same reasons."""
    from fclm_data.sources import BuildOptions

    root, expected_refcoco, expected_dam = corrupted_root
    out = tmp_path_factory.mktemp(f"bad_out_{request.param}")
    manifest = build(["refcoco", "refcoco_plus", "dam_sam"], root, out, options=BuildOptions(image_check=request.param))
    return root, out, manifest, expected_refcoco, expected_dam


def test_each_damaged_image_record_is_rejected_with_its_reason(corrupted) -> None:
    _, out, _, expected, _ = corrupted
    got = {r["record"]: r["code"] for r in read_rejects(out) if r["source"] == "refcoco" and r["stage"] == "sample"}
    assert got == expected
    details = {r["record"]: r for r in read_rejects(out)}
    assert "etc/passwd" in details[next(k for k, c in expected.items() if c == "unsafe_path")]["detail"]


def test_each_damaged_tar_sample_is_rejected_with_its_reason(corrupted) -> None:
    _, out, _, _, expected = corrupted
    rejects = [r for r in read_rejects(out) if r["source"] == "dam_sam"]
    got = {}
    for r in rejects:
        name = r["record"].split("#")[-1].split("[")[0] if "#" in r["record"] else r["record"].split("-")[2]
        got[name] = r["code"]
    assert got == expected
    assert all(r["file"] and "images/00000009.tar" in r["file"] for r in rejects)
    assert not Path("/tmp/fclm-pwned").exists()


def test_malformed_json_rejects_the_file_not_the_build(corrupted) -> None:
    _, out, manifest, _, _ = corrupted
    plus = manifest["sources"]["refcoco_plus"]
    assert plus["written"] == 0 and plus["index_rejected"] == 1
    assert plus["reject_reasons"] == {"malformed_annotation": 1}
    line = next(r for r in read_rejects(out) if r["source"] == "refcoco_plus")
    assert line["file"] == "refer_seg/refcoco+/instances.json" and "invalid JSON" in line["detail"]


def test_nothing_is_lost(corrupted) -> None:
    root, out, manifest, expected_refcoco, _ = corrupted
    for name, ledger in manifest["sources"].items():
        assert ledger["selected"] == ledger["written"] + ledger["rejected"], name
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"], name
    refs = pickle.loads((root / "refer_seg/refcoco/refs(unc).p").read_bytes())
    train_images = {r["image_id"] for r in refs if r["split"] == "train"}
    written = {k for k, (s, _, _) in read_samples(out).items() if s["source"] == "refcoco"}
    assert written == {f"refcoco-train-{i}" for i in train_images} - set(expected_refcoco)
    assert manifest["sources"]["dam_sam"]["written"] == 16  # the good SAM samples of the generated root
