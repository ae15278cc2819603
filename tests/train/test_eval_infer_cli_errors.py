"""fclm-eval's and fclm-infer's plain user errors: exit 2 with one ``error:`` line naming the thing and the reason,
no traceback, and -- for everything that can be known from the arguments -- before torch is imported."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import build, run_cli
from PIL import Image

from fclm_data.recipes import single_source_recipe


@pytest.fixture(scope="module")
def places(stage2_build: Path, data_root: Path, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("errors")
    recipe = single_source_recipe(["refcoco"], 0, 1000)
    recipe.format = "refvlm"  # a REF-VLM build: another model's inputs
    build(recipe, data_root, root / "refvlm")
    (root / "loose").mkdir()  # one of its shards without the manifest: the samples say their format
    shutil.copy(root / "refvlm" / "shard-000000.tar", root / "loose" / "shard-000000.tar")
    (root / "a-file.txt").write_text("not an image")
    (root / "empty").mkdir()
    run = root / "run"  # the files a checkpoint check looks at (the model is never loaded in these cases)
    (run / "step-000001").mkdir(parents=True)
    (run / "step-000001" / "trainer_state.json").write_text(json.dumps({"step": 1}))
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(root / "img.png")
    Image.fromarray(np.ones((10, 10), dtype=np.uint8) * 255).save(root / "small-mask.png")
    return {"root": str(root), "file": str(root / "a-file.txt"), "empty": str(root / "empty"), "run": str(run),
            "missing": str(root / "missing"), "img": str(root / "img.png"), "mask": str(root / "small-mask.png"),
            "stage2": str(stage2_build), "refvlm": str(root / "refvlm"),
            "loose": str(root / "loose" / "shard-000000.tar")}  # fmt: skip


EVAL = ["--checkpoint", "{run}", "--out", "{root}/report.json"]
EVAL_CASES = [
    (["--task", "vqa", "--shards", "{stage2}", *EVAL], "--task 'vqa' is not one of dlc, gcg, gres, reason, rec, reg, res, roc"),
    (["--task", "res", "--shards", "{missing}", *EVAL], "--shards '{missing}': {missing} does not exist"),
    (["--task", "res", "--shards", "{empty}", *EVAL], "holds no shards (*.tar) and no manifest.json"),
    (["--task", "res", "--shards", "{missing}/shard-{{000000..000003}}.tar", *EVAL], "4 of 4 shards do not exist"),
    (["--task", "roc", "--shards", "{stage2}", *EVAL],
     "does not suit --task roc: its samples are task 'dlc_dlres'"),
    (["--task", "gcg", "--shards", "{stage2}", *EVAL], "does not suit --task gcg"),
    (["--task", "res", "--shards", "{stage2}", "--checkpoint", "{missing}"], "--checkpoint {missing} does not exist"),
    (["--task", "res", "--shards", "{stage2}", "--checkpoint", "{empty}"], "--checkpoint {empty} holds no checkpoint"),
    (["--task", "res", "--shards", "{stage2}", "--checkpoint", "{run}", "--out", "{empty}"],
     "--out {empty} is a directory"),
    (["--task", "res", "--shards", "{stage2}", *EVAL, "--batch-size", "0"], "--batch-size must be a positive"),
    (["--task", "res", "--shards", "{stage2}", *EVAL, "--device", "gpu"], "--device 'gpu' is not one of"),
    (["--task", "res", *EVAL], "give --shards"),
    (["--task", "res", "--shards", "{refvlm}", *EVAL],
     "--shards '{refvlm}': a refvlm-format build (its manifest.json); fclm-eval (the FCLM model) reads fclm-format"),
    (["--task", "res", "--shards", "{loose}", *EVAL],
     "--shards '{loose}': its samples are refvlm-format (e.g. refcoco-"),
]  # fmt: skip

INFER = ["--checkpoint", "{run}"]
INFER_CASES = [
    (["segment", *INFER, "--image", "{missing}.jpg", "--text", "a"], "--image {missing}.jpg does not exist"),
    (["segment", *INFER, "--image", "{file}", "--text", "a"], "--image {file} is not a readable image"),
    (["segment", "--checkpoint", "{missing}", "--image", "{img}", "--text", "a"], "--checkpoint {missing} does not"),
    (["segment", *INFER, "--image", "{img}", "--text", "a", "--out", "{empty}"], "--out {empty} is a directory"),
    (["segment", *INFER, "--image", "{img}", "--text", "a", "--query", "vqa"], "--query 'vqa' is not one of"),
    (["describe", *INFER, "--image", "{img}"], "give exactly one of --box, --point, --mask (got none)"),
    (["describe", *INFER, "--image", "{img}", "--box", "1,2,3"], "--box takes 4 comma-separated numbers"),
    (["describe", *INFER, "--image", "{img}", "--box", "0,0,100,10"], "--box 0,0,100,10 is not x0,y0,x1,y1"),
    (["classify", *INFER, "--image", "{img}", "--point", "70,5"], "--point 70,5 lies outside the 60x40 image"),
    (["classify", *INFER, "--image", "{img}", "--mask", "{mask}"], "--mask {mask} is (10, 10)"),
    (["caption", *INFER, "--image", "{img}", "--max-new-tokens", "0"], "--max-new-tokens must be a positive"),
]  # fmt: skip


def _check(module: str, args: list[str], expected: str, places: dict[str, str]) -> None:
    code, lines, probe = run_cli(module, *(a.format(**places) for a in args))
    assert code == 2, lines
    assert lines == [lines[0]] and lines[0].startswith("error: "), lines  # one line, no traceback
    assert expected.format(**places) in lines[0]
    assert probe == ["probe: torch not imported"]


@pytest.mark.parametrize(("args", "expected"), EVAL_CASES, ids=[c[1][:40] for c in EVAL_CASES])
def test_eval_user_errors_are_one_line(places, args, expected):
    _check("fclm_train.eval.cli", args, expected, places)


@pytest.mark.parametrize(("args", "expected"), INFER_CASES, ids=[c[1][:40] for c in INFER_CASES])
def test_infer_user_errors_are_one_line(places, args, expected):
    _check("fclm_train.infer.cli", args, expected, places)


def test_a_truncated_shard_stops_an_evaluation_with_its_name(stage2_build: Path, tmp_path: Path):
    """Found only while reading (the manifest is intact): the evaluation stops, naming the shard, no traceback."""
    from fclm_train.config import TrainConfig
    from fclm_train.train import Trainer

    checkpoint = Trainer(TrainConfig.from_dict({
        "model": "tiny", "out_dir": str(tmp_path / "run"), "max_steps": 1, "global_batch_size": 1,
        "gradient_checkpointing": False, "tensorboard": False,
        "data": {"shards": [str(stage2_build)], "micro_batch_size": 1, "num_workers": 0, "shuffle_buffer": 1},
    })).run()  # fmt: skip
    shards = tmp_path / "cut"
    shutil.copytree(stage2_build, shards)
    last = sorted(shards.glob("shard-*.tar"))[-1]
    with tarfile.open(last) as tar:
        members = [m for m in tar if m.isreg()]
    last.write_bytes(last.read_bytes()[: members[-1].offset_data + 10])
    code, lines, _ = run_cli("fclm_train.eval.cli", "--task", "dlc", "--shards", str(shards), "--checkpoint",
                             str(checkpoint), "--out", str(tmp_path / "r.json"), "--no-captions",
                             "--max-new-tokens", "2", "--device", "cpu")  # fmt: skip
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and not any("Traceback" in line for line in lines), lines
    assert len(errors) == 1 and f"{last.name}: truncated shard" in errors[0], lines
