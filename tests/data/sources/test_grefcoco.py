"""gRefCOCO: multi-target and no-target expressions from the release layout; bad refs rejected with reasons."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

from helpers import build, read_rejects, read_samples

from fclm_data.masks import decode_rle


def _copy(data_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(data_root / "refer_seg/grefcoco", root / "refer_seg/grefcoco")
    (root / "coco").symlink_to(data_root / "coco")
    return root


def test_every_val_expression_becomes_one_sample_with_its_targets(data_root, tmp_path):
    refs = json.loads((data_root / "refer_seg/grefcoco/grefs(unc).json").read_text())
    val = [r for r in refs if r["split"] == "val"]
    manifest = build(["grefcoco"], data_root, tmp_path)
    samples = {m["key"]: m for m, _, _ in read_samples(tmp_path).values()}
    assert manifest["sources"]["grefcoco"]["written"] == sum(len(r["sentences"]) for r in val) == len(samples)
    instances = json.loads((data_root / "refer_seg/grefcoco/instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    for ref in val:
        for sent in ref["sentences"]:
            sample = samples[f"grefcoco-val-{ref['ref_id']}-{sent['sent_id']}"]
            answer = sample["conversations"][1]["content"]
            if ref["no_target"]:
                assert sample["regions"] == [] and "[SEG]" not in answer
                assert sample["provenance"]["ann_ids"] == [f"ref{ref['ref_id']}/no_target"]
                continue
            assert answer.count("[SEG]") == len(ref["ann_id"]) == len(sample["seg_targets"])
            assert [r["label"] for r in sample["regions"]] == [
                next(c["name"] for c in instances["categories"] if c["id"] == anns[a]["category_id"])
                for a in ref["ann_id"]]  # fmt: skip
            assert all(decode_rle(r["mask"]).any() for r in sample["regions"])
    assert any(len(r["ann_id"]) > 1 for r in val) and any(r["no_target"] for r in val)


def test_the_pickle_is_read_first_as_relas_g_refer_does(data_root, tmp_path):
    root = _copy(data_root, tmp_path)
    refs = json.loads((root / "refer_seg/grefcoco/grefs(unc).json").read_text())
    some = [r for r in refs if r["split"] == "val"][:3]
    (root / "refer_seg/grefcoco/grefs(unc).p").write_bytes(pickle.dumps(some, protocol=2))
    manifest = build(["grefcoco"], root, tmp_path / "out")
    assert manifest["sources"]["grefcoco"]["records"] == sum(len(r["sentences"]) for r in some)
    assert {m["provenance"]["source_file"] for m, _, _ in read_samples(tmp_path / "out").values()} == {
        "refer_seg/grefcoco/grefs(unc).p"}  # fmt: skip


def test_bad_refs_are_rejected_with_their_reason(data_root, tmp_path):
    root = _copy(data_root, tmp_path)
    path = root / "refer_seg/grefcoco/grefs(unc).json"
    refs = [r for r in json.loads(path.read_text()) if r["split"] == "val"]
    target = next(r for r in refs if not r["no_target"])
    absent = next(r for r in refs if r["no_target"])
    bad = [
        {**target, "ref_id": 9001, "no_target": True},  # flag contradicts ann_id
        {**target, "ref_id": 9002, "ann_id": [123456789]},  # no such annotation
        {**absent, "ref_id": 9003, "sentences": [{"sent_id": 1, "sent": "  "}]},  # no text
        {**target, "ref_id": target["ref_id"]},  # duplicate id
    ]
    path.write_text(json.dumps(refs + bad))
    manifest = build(["grefcoco"], root, tmp_path / "out")
    reasons = {r["record"]: (r["code"], r["detail"]) for r in read_rejects(tmp_path / "out")}
    assert reasons["ref 9001"][0] == "malformed_annotation" and "no_target=True" in reasons["ref 9001"][1]
    assert reasons["ref 9002"][0] == "malformed_annotation" and "123456789" in reasons["ref 9002"][1]
    assert reasons["ref 9003"][0] == "bad_text"
    assert reasons[f"ref {target['ref_id']}"][0] == "duplicate_id"
    ledger = manifest["sources"]["grefcoco"]
    assert ledger["index_rejected"] == 4 and ledger["records"] == ledger["available"] + 4
