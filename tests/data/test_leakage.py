"""The train/eval leakage report and --exclude-eval, on planted overlaps."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest
from helpers import build, read_rejects
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from fclm_data.cli import app
from fclm_data.leakage import find_leaks
from fclm_data.recipes import Recipe, RecipeEntry, load_recipe
from fclm_data.synthetic import generate_data_root


def _add_dam_sample(root: Path, subset: str, key: str, image: bytes, img_id: int, size: tuple[int, int]) -> None:
    h, w = size
    rle = mask_utils.frPyObjects([[5.0, 5.0, 40.0, 5.0, 40.0, 40.0, 5.0, 40.0]], h, w)[0]
    region = {"img_id": img_id, "ann_id": 1, "image": f"{img_id:012d}.jpg", "category": "thing",
              "caption": "A planted square.", "mask_rle": {"size": [h, w], "counts": rle["counts"].decode()}}  # fmt: skip
    path = root / f"describe-anything-dataset/{subset}/images/00000077.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{key}.jpg", image), (f"{key}.pickle", pickle.dumps([region]))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root where RefCOCOg train reuses RefCOCO val/test images (as in reality), plus two plants:
    a ReasonSeg val image copied byte-for-byte into DAM-SAM, and a COCO-Stuff region on a RefCOCO val image."""
    root = generate_data_root(tmp_path_factory.mktemp("leak_root"), families=["refcoco", "dam", "reasonseg"])
    val_image = next(sorted((root / "reason_seg/ReasonSeg/val").glob("*.jpg")).__iter__())
    from PIL import Image

    with Image.open(val_image) as im:
        size = (im.height, im.width)
    _add_dam_sample(root, "SAM", "planted", val_image.read_bytes(), 424242, size)
    refs = pickle.loads((root / "refer_seg/refcoco/refs(unc).p").read_bytes())
    val_id = next(r["image_id"] for r in refs if r["split"] == "val")
    coco = root / f"coco/train2014/COCO_train2014_{val_id:012d}.jpg"
    with Image.open(coco) as im:
        coco_size = (im.height, im.width)
    # COCO-Stuff ships its own (re-encoded) copy: only the COCO id can tell
    buf = io.BytesIO()
    Image.open(coco).save(buf, "JPEG", quality=70)
    _add_dam_sample(root, "COCOStuff", "planted", buf.getvalue(), val_id, coco_size)
    return root


def _train() -> Recipe:
    names = ["refcoco", "refcocog", "dam_sam", "dam_cocostuff", "dam_mapillary"]
    return Recipe("train", [RecipeEntry(n) for n in names])


def _evals() -> list[Recipe]:
    return [load_recipe("eval_refcoco"), load_recipe("eval_reasonseg")]


def test_report_finds_every_planted_overlap(planted: Path) -> None:
    report = {e.entry: e.to_dict() for e in find_leaks(_train(), _evals(), planted)}
    refs = pickle.loads((planted / "refer_seg/refcoco/refs(unc).p").read_bytes())
    eval_ids = {r["image_id"] for r in refs if r["split"] != "train"}
    refs_g = pickle.loads((planted / "refer_seg/refcocog/refs(umd).p").read_bytes())
    shared = {r["image_id"] for r in refs_g if r["split"] == "train"} & eval_ids
    assert shared  # the synthetic release reproduces RefCOCOg-train / RefCOCO-eval image sharing
    assert report["refcocog"]["images"] == sorted(f"coco:{i}" for i in shared)
    assert report["refcocog"]["by_reason"] == {"coco_id": len(shared)}
    assert report["refcoco"]["leaking_units"] == 0  # its own train split is disjoint from its eval splits
    assert report["dam_sam"]["by_reason"] == {"content": 1}
    assert report["dam_sam"]["eval_entries"] == ["reasonseg_val"]
    assert report["dam_cocostuff"]["by_reason"] == {"coco_id": 1}
    assert report["dam_mapillary"]["leaking_units"] == 0


def test_exclude_eval_drops_and_counts_them(planted: Path, tmp_path: Path) -> None:
    leaks = {e.entry: len(e.leaks) for e in find_leaks(_train(), _evals(), planted)}
    manifest = build(_train(), planted, tmp_path, exclude_eval=tuple(_evals()))
    for name, ledger in manifest["sources"].items():
        assert ledger["excluded_eval"] == leaks[name], name
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"] + ledger["excluded_eval"]
    lines = [r for r in read_rejects(tmp_path) if r["code"] == "eval_overlap"]
    assert len(lines) == sum(leaks.values()) and {r["stage"] for r in lines} == {"excluded"}
    assert any("reasonseg_val" in r["detail"] for r in lines)


def test_leakage_cli(planted: Path) -> None:
    result = CliRunner().invoke(app, ["leakage", "-r", "stage1", "-e", "eval_refcoco", "-d", str(planted), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["entry"]: r for r in json.loads(result.stdout)["sources"]}
    assert rows["refcocog"]["leaking_units"] > 0 and "muse" in rows
