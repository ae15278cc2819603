"""A build that no input can crash or silently corrupt (issue 12).

Each test builds a data root carrying one defect and checks the exact outcome: the damaged record
named in ``rejects.jsonl`` with its reason, every other record written, the ledger balanced, the
exit status. Small generated RefCOCO roots keep each build well under a second.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import build, read_rejects, read_samples
from PIL import Image

from fclm_data.build.run import BuildError, lock_out_dir
from fclm_data.commands.build import quality_failures
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import register_source
from fclm_data.sources.refcoco import RefCocoSource
from fclm_data.synthetic import generate_data_root

INSTANCES = "refer_seg/refcoco/instances.json"
REFS = "refer_seg/refcoco/refs(unc).p"
LEDGER = ("manifest.json", "rejects.jsonl", "manifest.parquet", "shardindex.json", "README.md")


# ---- a data root and its tables ----------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    return generate_data_root(tmp_path / "root", families=["refcoco"])


def _tables(root: Path) -> tuple[dict, list]:
    return json.loads((root / INSTANCES).read_text()), pickle.loads((root / REFS).read_bytes())


def _save(root: Path, instances: dict, refs: list) -> None:
    (root / INSTANCES).write_text(json.dumps(instances))
    (root / REFS).write_bytes(pickle.dumps(refs, protocol=2))


def _train_images(refs: list) -> list[int]:
    return sorted({r["image_id"] for r in refs if r["split"] == "train"})


def _image_path(root: Path, instances: dict, image_id: int) -> Path:
    name = next(i["file_name"] for i in instances["images"] if i["id"] == image_id)
    return root / "coco/train2014" / name


def _sample_rejects(out: Path, source: str = "refcoco") -> dict[str, str]:
    return {r["record"]: r["code"] for r in read_rejects(out) if r["source"] == source and r["stage"] == "sample"}


def _written(out: Path, source: str = "refcoco") -> set[str]:
    return {k for k, (s, _, _) in read_samples(out).items() if s["source"] == source}


def _assert_balanced(manifest: dict) -> None:
    for name, ledger in manifest["sources"].items():
        assert ledger["selected"] == ledger["written"] + ledger["rejected"], name
        assert ledger["records"] == ledger["available"] + ledger["index_rejected"] + ledger["excluded_eval"], name


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "fclm_data.cli", *args], capture_output=True, text=True, env=env)


# ---- values a native library cannot handle -----------------------------------------------------
def test_absurd_coordinates_and_counts_are_rejects_not_crashes(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    a, b, c = _train_images(refs)[:3]
    h, w = 240, 320
    broken = {
        a: [[0.0, 0.0, 1e12, 0.0, 1e12, 1e12]],  # segfaulted pycocotools' rasteriser
        b: {"size": [h, w], "counts": [-100, h * w + 100]},  # negative run
        c: {"size": [h, w], "counts": [10**12]},  # overflowed uint32
    }
    for ann in instances["annotations"]:
        if ann["image_id"] in broken:
            ann["segmentation"] = broken[ann["image_id"]]
    _save(root, instances, refs)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out, workers=1)  # auto: a worker process
    assert _sample_rejects(out) == {
        f"refcoco-train-{a}": "bad_polygon",
        f"refcoco-train-{b}": "malformed_annotation",
        f"refcoco-train-{c}": "malformed_annotation",
    }
    assert "outside" in next(r["detail"] for r in read_rejects(out) if r["record"] == f"refcoco-train-{a}")
    assert _written(out) == {f"refcoco-train-{i}" for i in _train_images(refs)} - set(_sample_rejects(out))
    _assert_balanced(manifest)


def test_type_errors_in_an_index_file_are_record_rejects(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    train = [r for r in refs if r["split"] == "train"]
    train[0]["ref_id"] = [1, 2]  # unhashable: crashed the index stage
    train[1]["sentences"] = None
    instances["images"].append({"id": {"nested": 1}, "file_name": "x.jpg", "height": 1, "width": 1})
    _save(root, instances, refs)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out)
    index = [(r["record"], r["code"]) for r in read_rejects(out) if r["stage"] == "index"]
    assert sorted(index) == sorted([("ref #0", "malformed_annotation"), (f"ref {train[1]['ref_id']}", "bad_text"),
                                    ("image #" + str(len(instances["images"]) - 1), "malformed_annotation")])  # fmt: skip
    assert manifest["sources"]["refcoco"]["written"] > 0
    _assert_balanced(manifest)


def test_text_that_cannot_be_encoded_is_a_reject(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    target = _train_images(refs)[0]
    for ref in refs:
        if ref["image_id"] == target:
            for sentence in ref["sentences"]:
                sentence["sent"] = "the \ud800 circle"  # a lone surrogate: no UTF-8 for it
    _save(root, instances, refs)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out)
    assert _sample_rejects(out) == {f"refcoco-train-{target}": "bad_text"}
    assert "UTF-8" in next(r["detail"] for r in read_rejects(out) if r["record"] == f"refcoco-train-{target}")
    _assert_balanced(manifest)


# ---- a worker that dies takes down only its record ---------------------------------------------
@dataclass
class _CrashingSource(RefCocoSource):
    """RefCOCO whose build dies in native code (a real SIGSEGV) on one unit."""

    crash_uid: str = ""
    crash_index: bool = False

    def index(self):
        if self.crash_index:
            ctypes.string_at(0)
        return super().index()

    def build(self, unit, key, repeat, options):
        if unit.uid == self.crash_uid:
            ctypes.string_at(0)  # reads address 0: the process gets SIGSEGV
        return super().build(unit, key, repeat, options)


try:
    register_source("test_crashing_refcoco", _CrashingSource, "test only", dataset="refcoco", split_by="unc")
except ValueError:  # registered already (module imported twice)
    pass


def test_a_record_that_kills_its_worker_is_rejected_and_the_build_goes_on(root: Path, tmp_path: Path) -> None:
    _, refs = _tables(root)
    victim = _train_images(refs)[2]
    entry = RecipeEntry("test_crashing_refcoco", options={"crash_uid": f"train-{victim}"}, name="refcoco")
    recipe = Recipe("crash", [entry], seed=0, shard_size=3)
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp_path / f"w{workers}"
        manifest = build(recipe, root, outs[workers], executor="processes", workers=workers)
        assert _sample_rejects(outs[workers]) == {f"refcoco-train-{victim}": "worker_crashed"}
        detail = next(r["detail"] for r in read_rejects(outs[workers]) if r["code"] == "worker_crashed")
        assert "SIGSEGV" in detail and "2 times" in detail
        written = _written(outs[workers], "test_crashing_refcoco")
        assert written == {f"refcoco-train-{i}" for i in _train_images(refs) if i != victim}
        _assert_balanced(manifest)
        assert not list((outs[workers] / ".parts").glob("*.journal"))
    for name in LEDGER:  # the outcome does not depend on what else was running
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name


def test_an_entry_whose_indexing_process_dies_is_one_reject(root: Path, tmp_path: Path) -> None:
    crashing = RecipeEntry("test_crashing_refcoco", options={"crash_index": True}, name="doomed")
    recipe = Recipe("crash", [crashing, RecipeEntry("refcoco")], seed=0, shard_size=3)
    out = tmp_path / "out"
    manifest = build(recipe, root, out, executor="processes", workers=2)
    (line,) = [r for r in read_rejects(out) if r["source"] == "doomed"]
    assert (line["code"], line["stage"]) == ("worker_crashed", "index")
    assert manifest["sources"]["doomed"]["written"] == 0 and manifest["sources"]["refcoco"]["written"] > 0
    assert [f.split(" wrote")[0] for f in quality_failures(manifest, False, None)] == ["doomed"]
    _assert_balanced(manifest)


def test_workers_exit_when_the_driver_is_killed(root: Path, tmp_path: Path) -> None:
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from dataclasses import dataclass
from fclm_data.build.run import BuildConfig, run_build
from fclm_data.recipes import Recipe, RecipeEntry
from fclm_data.sources import register_source
from fclm_data.sources.refcoco import RefCocoSource

@dataclass
class Slow(RefCocoSource):
    def build(self, unit, key, repeat, options):
        time.sleep(30)
        return super().build(unit, key, repeat, options)

register_source("slow", Slow, dataset="refcoco", split_by="unc")
recipe = Recipe("slow", [RecipeEntry("slow")], seed=0, shard_size=1)
from pathlib import Path
run_build(recipe, BuildConfig(Path({str(root)!r}), Path({str(tmp_path / "out")!r}), executor="processes", workers=2))
"""
    driver = subprocess.Popen([sys.executable, "-c", script])
    children_file = Path(f"/proc/{driver.pid}/task/{driver.pid}/children")
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while len(workers) < 2:
        assert time.monotonic() < deadline and driver.poll() is None, "the build never started its workers"
        time.sleep(0.05)
        workers = [int(p) for p in children_file.read_text().split()] if children_file.exists() else []
    time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)  # only the driver: nobody tells the workers
    driver.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers):
        assert time.monotonic() < deadline, f"orphaned workers still running: {[p for p in workers if _alive(p)]}"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# ---- duplicate ids ------------------------------------------------------------------------------
def test_duplicate_image_and_annotation_ids_are_rejected_never_replaced(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    a, b = _train_images(refs)[:2]
    twin = dict(next(i for i in instances["images"] if i["id"] == a))
    instances["images"].append({**twin, "file_name": instances["images"][-1]["file_name"]})  # another image's pixels
    b_refs = [r for r in refs if r["image_id"] == b and r["split"] == "train"]
    ann = next(x for x in instances["annotations"] if x["id"] == b_refs[0]["ann_id"])
    instances["annotations"].append({**ann, "segmentation": [[0, 0, 50, 0, 50, 50]]})  # another mask
    _save(root, instances, refs)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out)
    index = {r["record"]: r for r in read_rejects(out) if r["stage"] == "index"}
    a_refs = [r for r in refs if r["image_id"] == a and r["split"] == "train"]
    bad = {f"ref {r['ref_id']}" for r in a_refs} | {f"ref {r['ref_id']}" for r in b_refs if r["ann_id"] == ann["id"]}
    assert set(index) == bad and {r["code"] for r in index.values()} == {"duplicate_id"}
    assert f"refcoco-train-{a}" not in _written(out)
    samples = read_samples(out)
    if len(b_refs) > 1:  # b's other refs are still written, without the ambiguous annotation
        assert f"ann{ann['id']}" not in " ".join(samples[f"refcoco-train-{b}"][0]["provenance"]["ann_ids"])
    _assert_balanced(manifest)


@pytest.mark.parametrize(("family", "source", "file"), [
    ("visual_genome", "vg", "vg/vg_train_with_mask.json"),
    ("paco_lvis", "paco_lvis", "paco/paco_lvis_v1_train.json"),
])  # fmt: skip
def test_every_coco_style_reader_rejects_duplicate_image_ids(tmp_path: Path, family: str, source: str, file: str):
    root = generate_data_root(tmp_path / "root", families=[family])
    data = json.loads((root / file).read_text())
    first = data["images"][0]
    data["images"].append(dict(first))
    (root / file).write_text(json.dumps(data))
    out = tmp_path / "out"
    manifest = build([source], root, out)
    rejects = [r for r in read_rejects(out) if r["stage"] == "index"]
    on_first = [a for a in data["annotations"] if a["image_id"] == first["id"]]
    assert len(rejects) == len(on_first) > 0 and {r["code"] for r in rejects} == {"duplicate_id"}
    assert all(s["provenance"]["image_id"] != str(first["id"]) for s, _, _ in read_samples(out).values())
    assert manifest["sources"][source]["written"] > 0
    _assert_balanced(manifest)


# ---- corrupt images -----------------------------------------------------------------------------
def _damage_scan(data: bytes, seed: int) -> bytes:
    """Cut bytes out of the middle of the entropy-coded scan; every marker (EOI included) stays.

    (Random byte flips are caught only ~3 times in 4: the rest decode as valid, wrong
    coefficients, which no decoder can flag. A scan that runs out before its last MCU always is.)
    """
    sos = data.find(b"\xff\xda")
    cut = sos + (len(data) - sos) * (seed + 1) // 5
    return data[:cut] + data[cut + 300 :]


def test_corrupt_entropy_coded_data_is_rejected_and_inspect_strict_sees_it(root: Path, tmp_path: Path) -> None:
    from fclm_data.inspect import inspect_output
    from fclm_data.sources import BuildOptions

    instances, refs = _tables(root)
    damaged = _train_images(refs)[:3]
    for n, image_id in enumerate(damaged):
        path = _image_path(root, instances, image_id)
        path.write_bytes(_damage_scan(path.read_bytes(), n))
        Image.open(path).load()  # PIL decodes it without complaint: markers and length are intact
    out = tmp_path / "decode"
    manifest = build(["refcoco"], root, out)
    assert _sample_rejects(out) == {f"refcoco-train-{i}": "bad_image" for i in damaged}
    assert all("Corrupt JPEG data" in r["detail"] or "JPEG" in r["detail"] for r in read_rejects(out))
    _assert_balanced(manifest)
    lenient = tmp_path / "markers"  # the structural check lets them through; inspect --strict must not
    build(["refcoco"], root, lenient, options=BuildOptions(image_check="markers"))
    assert {f"refcoco-train-{i}" for i in damaged} <= _written(lenient)
    _, problems = inspect_output(lenient, strict=True)
    reports, _ = inspect_output(lenient, strict=True)
    flagged = {p.split(":")[0] for r in reports for p in r.problems}
    assert flagged == {f"refcoco-train-{i}" for i in damaged}


def test_each_distinct_image_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fclm_data import images

    root = generate_data_root(tmp_path / "root", families=["dam"])
    calls: list[int] = []
    verify = images._verify
    monkeypatch.setattr(images, "_verify", lambda data, *a: calls.append(len(data)) or verify(data, *a))
    images._VERDICTS.clear()
    out = tmp_path / "out"
    build(["dam_sam"], root, out, executor="serial")
    samples = read_samples(out)
    distinct = {s["image"]["sha256"] for s, _, _ in samples.values()}
    assert len(samples) > len(distinct) and len(calls) == len(distinct)


# ---- EXIF orientation ---------------------------------------------------------------------------
def test_exif_orientation_is_neutralised_so_every_reader_sees_the_stored_grid(root: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    instances, refs = _tables(root)
    target = _train_images(refs)[0]
    path = _image_path(root, instances, target)
    pixels = Image.open(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a reader that applies it swaps width and height
    pixels.save(path, "JPEG", quality=95, exif=exif.tobytes())
    stored = np.asarray(Image.open(path).convert("RGB"))
    out = tmp_path / "out"
    build(["refcoco"], root, out)
    key = f"refcoco-train-{target}"
    sample, data, _ = read_samples(out)[key]
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == 1
    rows = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows[key]["exif_orientation"] == 6
    assert {r["exif_orientation"] for k, r in rows.items() if k != key} == {None}
    from PIL import ImageOps

    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")), stored)
    datasets = pytest.importorskip("datasets")
    rows_hf = datasets.load_dataset(str(out), split="train")
    row = next(r for r in rows_hf if r["__key__"] == key)
    assert row["jpg"].size == (sample["image"]["width"], sample["image"]["height"])
    assert np.array_equal(np.asarray(row["jpg"].convert("RGB")), stored)
    pytest.importorskip("torch")
    from fclm_train.data.vision import open_image

    tensor, (height, width) = open_image(data, side=1024)
    assert (height, width) == (sample["image"]["height"], sample["image"]["width"])
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), stored)


# ---- symlinks -----------------------------------------------------------------------------------
def test_symlink_out_of_the_root_is_rejected_unless_trusted(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    target = _train_images(refs)[0]
    path = _image_path(root, instances, target)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / path.name).write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside / path.name)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out)
    assert _sample_rejects(out) == {f"refcoco-train-{target}": "unsafe_path"}
    assert str(outside) in read_rejects(out)[0]["detail"] and "--link-root" in read_rejects(out)[0]["detail"]
    _assert_balanced(manifest)
    trusted = tmp_path / "trusted"
    build(["refcoco"], root, trusted, link_roots=(str(outside),))
    assert f"refcoco-train-{target}" in _written(trusted) and not _sample_rejects(trusted)


def test_a_data_root_assembled_from_symlinked_folders_builds(root: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    build(["refcoco"], root, reference)
    store = tmp_path / "store"
    (root / "coco").rename(store)  # DATA/coco -> /somewhere/else, the usual way to assemble a root
    (root / "coco").symlink_to(store, target_is_directory=True)
    out = tmp_path / "out"
    build(["refcoco"], root, out)
    for name in [p.name for p in reference.glob("shard-*.tar")] + ["rejects.jsonl", "manifest.parquet"]:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


# ---- --out: one build at a time, no stale results -----------------------------------------------
def test_a_second_build_into_the_same_out_fails_at_once(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with lock_out_dir(out):  # a build in progress
        started = time.monotonic()
        result = _cli("build", "--source", "refcoco", "--data-root", str(root), "--out", str(out))
        assert result.returncode == 2 and "being written by another build" in result.stderr
        assert time.monotonic() - started < 30 and not (out / "manifest.json").exists()
    assert _cli("build", "--source", "refcoco", "--data-root", str(root), "--out", str(out)).returncode == 0


def test_changed_build_options_are_another_plan(root: Path, tmp_path: Path) -> None:
    from fclm_data.sources import BuildOptions

    out = tmp_path / "out"
    build(["refcoco"], root, out)
    with pytest.raises(BuildError, match="another plan"):
        build(["refcoco"], root, out, options=BuildOptions(visual_prompt="box"))
    build(["refcoco"], root, out, options=BuildOptions(visual_prompt="box"), overwrite=True)
    assert {s["visual_prompt"] for s, _, _ in read_samples(out).values()} == {"box"}


def test_retry_rejects_after_repairing_an_input(root: Path, tmp_path: Path) -> None:
    instances, refs = _tables(root)
    target = _train_images(refs)[0]
    path = _image_path(root, instances, target)
    good = path.read_bytes()
    path.unlink()
    out = tmp_path / "out"
    build(["refcoco"], root, out)
    assert _sample_rejects(out) == {f"refcoco-train-{target}": "missing_image"}
    path.write_bytes(good)  # the user repairs it
    build(["refcoco"], root, out)
    assert _sample_rejects(out) == {f"refcoco-train-{target}": "missing_image"}  # resumed: kept, and said so
    result = _cli("build", "--source", "refcoco", "--data-root", str(root), "--out", str(out), "--shard-size", "1000")
    assert result.returncode == 0 and "--retry-rejects" in result.stderr, result.stderr
    build(["refcoco"], root, out, retry_rejects=True)
    assert not _sample_rejects(out)
    fresh = tmp_path / "fresh"
    build(["refcoco"], root, fresh)
    for name in [p.name for p in fresh.glob("shard-*.tar")] + list(LEDGER):
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name


# ---- inspect --strict ---------------------------------------------------------------------------
def test_inspect_strict_catches_a_damaged_tar_header_and_a_changed_caption(root: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fclm_data.inspect import inspect_output, inspect_shard

    out = tmp_path / "out"
    build(["refcoco"], root, out)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    shard = out / rows[0]["shard"]
    original = shard.read_bytes()
    third = [r for r in rows if r["shard"] == shard.name][2]
    damaged = bytearray(original)
    damaged[third["offset"] + 148 : third["offset"] + 156] = b"garbage!"  # the header checksum
    shard.write_bytes(bytes(damaged))
    report, _ = inspect_shard(shard, strict=True)
    assert any("stops being readable" in p for p in report.problems)
    assert any("the ledger beside it says" in p for p in report.problems)
    result = _cli("inspect", str(shard), "--strict")
    assert result.returncode == 1
    # a caption changed in place (same length): the per-sample checksum names the sample
    sample_row = rows[0]
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        member = tar.getmember(f"{sample_row['key']}.json")
    text = original[member.offset_data : member.offset_data + member.size]
    changed = text.replace(b"circle", b"CIRCLE") if b"circle" in text else text.replace(b"the", b"THE", 1)
    assert changed != text and len(changed) == len(text)
    edited = original[: member.offset_data] + changed + original[member.offset_data + member.size :]
    shard.write_bytes(edited)
    _, problems = inspect_output(out, strict=True)
    assert f"{shard.name}: {sample_row['key']}.json differs from its checksum in manifest.parquet" in problems


# ---- untrusted pickles, deterministic reasons -------------------------------------------------------
def test_a_tiny_pickle_cannot_allocate_gigabytes(root: Path, tmp_path: Path) -> None:
    bomb = b"\x80\x02c__builtin__\nbytearray\nq\x00\x8a\x05\x00\xe4\x0bT\x02\x85q\x01Rq\x02."  # bytearray(10**10)
    assert len(bomb) < 64
    (root / REFS).write_bytes(bomb)
    out = tmp_path / "out"
    manifest = build(["refcoco"], root, out)
    (line,) = read_rejects(out)
    assert (line["code"], line["stage"], line["file"]) == ("unsafe_pickle", "index", REFS)
    assert "allocate" in line["detail"]
    assert quality_failures(manifest, allow_empty=False, max_reject_fraction=None)


def test_reject_details_carry_no_object_addresses() -> None:
    from fclm_data.errors import Reject

    class Thing:
        pass

    detail = f"cannot use {Thing()!r} here"
    assert " at 0x" in detail
    assert " at 0x" not in Reject("unexpected_error", detail).detail


# ---- lost sources --------------------------------------------------------------------------------
def test_an_entry_that_writes_nothing_fails_the_build(tmp_path: Path) -> None:
    root = generate_data_root(tmp_path / "root", families=["refcoco"])
    plus = root / "refer_seg/refcoco+/instances.json"
    plus.write_text(plus.read_text()[:-40])  # malformed: the whole entry is lost
    args = ["build", "--source", "refcoco", "--source", "refcoco_plus", "--data-root", str(root)]
    failed = _cli(*args, "--out", str(tmp_path / "a"))
    assert failed.returncode == 3 and "refcoco_plus wrote 0 samples" in failed.stderr
    assert "malformed_annotation" in failed.stderr and (tmp_path / "a/manifest.json").exists()
    assert _cli(*args, "--out", str(tmp_path / "b"), "--allow-empty").returncode == 0
    strict = _cli(*args, "--out", str(tmp_path / "c"), "--allow-empty", "--max-reject-fraction", "0.5")
    assert strict.returncode == 3 and "refcoco_plus rejected 1 of 1 records" in strict.stderr


def test_the_shard_writer_writes_tarfiles_bytes() -> None:
    """Byte-identical builds rest on this: the fast writer equals tarfile's PAX output."""
    from fclm_data.build.shard import TarWriter, _tarinfo

    rng = np.random.default_rng(0)
    members = [(f"key-{i}.{ext}", rng.bytes(size)) for i, (ext, size) in
               enumerate([("jpg", 0), ("json", 1), ("jpg", 511), ("json", 512), ("png", 513), ("jpg", 20_000)])]  # fmt: skip
    members.append(("k" * 150 + ".json", b"{}"))  # too long for a ustar name: tarfile's own PAX header
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    got = io.BytesIO()
    with TarWriter(got) as writer:
        for name, data in members:
            writer.add(name, data)
    assert got.getvalue() == expected.getvalue()
