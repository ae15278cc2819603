"""The learnability benchmark's pieces: attribute scoring, deterministic scenes, and one smoke run of the path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench.learnability.attributes import attribute_hits, parse_attributes
from bench.learnability.generate import Difficulty, SplitSize, generate_split
from fclm_data.synthetic.scenes import SceneObject


def caption(**attrs) -> str:
    base = {"shape": "circle", "colour": "red", "texture": "dotted", "size": "large", "polygon": [], "box": [],
            "position": "upper left"}  # fmt: skip
    return SceneObject(**{**base, **attrs}).caption()


def test_parse_reads_every_attribute_of_a_generated_caption():
    assert parse_attributes(caption()) == {"colour": "red", "shape": "circle", "size": "large",
                                           "texture": "dotted", "position": "upper left"}  # fmt: skip
    # "small round dots" is the dotted texture, not a size
    assert parse_attributes(caption(size="medium", texture="dotted"))["size"] == "medium"
    assert parse_attributes(caption(texture="plain"))["texture"] == "plain"
    assert parse_attributes(caption(texture="striped", colour="white"))["texture"] == "striped"


def test_hits_compare_first_mentions_and_missing_attributes_are_wrong():
    reference = caption(size="small", colour="blue", shape="square", texture="striped", position="lower right")
    assert all(attribute_hits(reference, reference).values())
    said = "A small green square, a blue square with diagonal stripes, in the lower right part."
    assert attribute_hits(said, reference) == {"colour": False, "shape": True, "size": True, "texture": True,
                                               "position": True}  # fmt: skip
    assert not any(attribute_hits("", reference).values())
    with pytest.raises(ValueError, match="states no"):
        attribute_hits(reference, "A red thing.")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_generation_is_deterministic_and_held_out_scenes_differ(tmp_path):
    sizes = SplitSize(dam=3, refcoco=2, paco=2)
    a = generate_split(tmp_path / "a", "train", sizes, Difficulty(), seed=3)
    b = generate_split(tmp_path / "b", "train", sizes, Difficulty(), seed=3)
    held = generate_split(tmp_path / "c", "heldout", sizes, Difficulty(), seed=3)
    assert tree_digest(a) == tree_digest(b)
    dam = "describe-anything-dataset/SAM/images/00000000.tar"
    assert (a / dam).read_bytes() != (held / dam).read_bytes()
    assert (held / "paco/paco_lvis_v1_val.json").exists() and not (held / "paco/paco_lvis_v1_train.json").exists()


def test_difficulty_controls_the_scenes(tmp_path):
    from fclm_data.synthetic.context import SynthContext
    from fclm_data.synthetic.scenes import SceneSpec

    spec = SceneSpec(min_objects=3, max_objects=3, colours=("red", "blue"), shapes=("circle", "square"),
                     unique="colour+shape")
    ctx = SynthContext(tmp_path, seed=0, image_size=(128, 96), scene_spec=spec)
    scenes = [ctx.coco_image(i) for i in range(20)]
    assert all(scene.image.size == (128, 96) for scene in scenes)
    for scene in scenes:
        assert {o.colour for o in scene.objects} <= {"red", "blue"} and {o.shape for o in scene.objects} <= {"circle", "square"}
        pairs = [(o.colour, o.shape) for o in scene.objects]
        assert len(pairs) == len(set(pairs))  # never two red circles
    assert sum(len(s.objects) == 3 for s in scenes) > 10  # placement may fail, but mostly three


def test_smoke_run_of_stage_one_then_stage_two(tmp_path, capsys):
    from bench.learnability.run import main

    args = ["--out", str(tmp_path), "--smoke", "--experiments", "full", "stage2_off", "--seeds", "7"]
    results = main(args)
    rows = {(r["stage"], r["experiment"]): r for r in results["rows"]}
    assert set(rows) == {(1, "both-on"), (2, "full"), (2, "stage2_off")}  # one stage-1 run serves both
    for row in rows.values():
        for key in ("dlres_ciou", "dlc_attribute_accuracy", "roc_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert row["dlres_n"] > 0 and row["dlc_roc_n"] > 0 and row["seed"] == 7
    # stage 2 really starts from stage 1 and really switches the consistency terms off
    full, off = rows[(2, "full")]["final_loss"], rows[(2, "stage2_off")]["final_loss"]
    assert off["recon_loss"] == off["latent_loss"] == 0.0 < full["recon_loss"]
    stage2 = json.loads((tmp_path / "seed7/stage2/full/step-000002/train_config.json").read_text())
    assert stage2["stage"] == 2 and stage2["init_from"].endswith("seed7/stage1/both-on")
    assert [d["better"] for d in results["directions"]] == ["full"]
    report = capsys.readouterr().out
    assert "Learnability benchmark (smoke:" in report and "| 2 | stage2_off |" in report
    # a repeated command reuses the finished runs
    again = main(args)
    assert [r["train_s"] for r in again["rows"]] == [r["train_s"] for r in results["rows"]]


def test_validation_seeds_are_kept_apart(tmp_path):
    from bench.learnability.run import REPORTED_SEEDS, VALIDATION_SEEDS, main

    assert not set(REPORTED_SEEDS) & set(VALIDATION_SEEDS) and len(REPORTED_SEEDS) == 3
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--smoke", "--seeds", str(VALIDATION_SEEDS[0])])


def test_summary_and_directions_over_seeds():
    from bench.learnability.experiments import directions, format_directions, format_summary, summarize

    def row(seed, name, ciou):
        return {"seed": seed, "stage": 2, "experiment": name, "dlres_ciou": ciou, "dlres_giou": ciou,
                "dlc_attribute_accuracy": 0.5, "res_ciou": None, "roc_accuracy": 0.25, "train_s": 10.0}

    rows = [row(2, "full", 0.6), row(3, "full", 0.8), row(2, "stage2_no_latent", 0.5), row(3, "stage2_no_latent", 0.9)]
    summary = summarize(rows)
    full = next(e for e in summary if e["experiment"] == "full")
    assert full["dlres_ciou"][0] == pytest.approx(0.7) and full["dlres_ciou"][1] == pytest.approx(0.1414, abs=1e-4)
    assert full["res_ciou"] is None and full["seeds"] == [2, 3]
    (d,) = directions(rows)
    assert d["dlres_ciou"]["mean"] == pytest.approx(0.0) and d["dlres_ciou"]["agree"] == 1
    assert not d["dlres_ciou"]["resolved"]
    assert "70.0 ± 14.1" in format_summary(summary) and "(1/2)" in format_directions([d])


def test_a_seed_runs_in_one_process_at_a_time(tmp_path):
    """A second process on a seed another one is running stops with one line instead of deleting its runs."""
    import fcntl
    import subprocess
    import sys

    seed_dir = tmp_path / "seed2"
    seed_dir.mkdir()
    with open(seed_dir / ".lock", "w") as held:  # what the running process holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = subprocess.run([sys.executable, "-m", "bench.learnability.run", "--out", str(tmp_path), "--smoke",
                               "--experiments", "full", "--seeds", "2"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], timeout=300)  # fmt: skip
    assert done.returncode == 1 and "another benchmark process is running this seed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (seed_dir / "data").exists()
