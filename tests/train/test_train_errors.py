"""A user's mistake ends fclm-train with exit status 2 and one line naming the thing, before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import build

from fclm_data.recipes import single_source_recipe

ROOT = Path(__file__).resolve().parents[2]
#: runs the real CLI in a fresh interpreter and reports its exit status and whether torch got imported
PROBE = """
import json, sys
from fclm_train.cli import app
try:
    app(sys.argv[1:], prog_name="fclm-train")
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def run_cli(*args: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                            timeout=120, cwd=ROOT)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture(scope="module")
def cases(tmp_path_factory, mixed_build, data_root):
    tmp = tmp_path_factory.mktemp("errors")
    for name in ("refvlm", "mvplm"):  # builds for the other systems: the FCLM model cannot train on them
        recipe = single_source_recipe(["refcoco"], 0, 1000)
        recipe.format = name
        build(recipe, data_root, tmp / name)
    (tmp / "empty").mkdir()
    (tmp / "a-file").write_text("not a directory\n")
    done = tmp / "done" / "step-000001"
    done.mkdir(parents=True)
    (done / "trainer_state.json").write_text("{}")
    good = ["--shards", str(mixed_build), "--model", "tiny", "--out", str(tmp / "run")]
    return {
        "missing shard path": (["--shards", str(tmp / "nope"), "--model", "tiny"], f"{tmp / 'nope'} does not exist"),
        "missing brace pattern directory": (["--shards", str(tmp / "nope/shard-{000000..000003}.tar")],
                                            "does not exist"),
        "empty shard directory": (["--shards", str(tmp / "empty"), "--model", "tiny"], "holds no shards"),
        "unknown preset": ([*good, "--model", "13b"], "model: '13b' is not one of tiny | 3b | 7b"),
        "indivisible batch": ([*good, "--global-batch-size", "3", "--micro-batch-size", "2"],
                              "global_batch_size: 3 is not a multiple of micro batch 2 x 1 rank(s)"),
        "out is a file": ([*good, "--out", str(tmp / "a-file")], "is a file, not a directory"),
        "out holds a run": ([*good, "--out", str(tmp / "done")], "already holds a run; continue it with --resume"),
        "resume without checkpoint": (["--resume", str(tmp / "empty")], "holds no checkpoint"),
        "unknown --set field": ([*good, "--set", "optim.warmup=0.1"], "did you mean 'optim.warmup_ratio'"),
        "missing recipe": ([*good, "--recipe", str(tmp / "nope.yaml")], "nope.yaml: no such file"),
        "negative workers": ([*good, "--num-workers", "-1"], "data.num_workers: must be >= 0"),
        "zero word budget": ([*good, "--mvplm-word-budget", "0"], "data.mvplm_word_budget: must be > 0"),
        "refvlm shards": (["--shards", str(tmp / "refvlm"), "--model", "tiny", "--out", str(tmp / "run")],
                          f"--shards {tmp / 'refvlm'}: a refvlm-format build (its manifest.json); fclm-train (the "
                          "FCLM model) reads fclm-format shards (fclm-data build --format fclm)"),
        "mvplm val shards": ([*good, "--val-shards", str(tmp / "mvplm")],
                             f"--val-shards {tmp / 'mvplm'}: a mvplm-format build"),
    }  # fmt: skip


CASES = ["missing shard path", "missing brace pattern directory", "empty shard directory", "unknown preset",
         "indivisible batch", "out is a file", "out holds a run", "resume without checkpoint", "unknown --set field",
         "missing recipe", "negative workers", "zero word budget", "refvlm shards", "mvplm val shards"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_user_error_is_one_line_without_traceback(cases, case):
    args, expected = cases[case]
    report, stderr = run_cli(*args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert report["code"] == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("fclm-train: error: "), stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr
    assert not report["torch"]  # reported before the heavy imports


def test_a_large_preset_without_pretrained_weights_says_so_loudly(capsys):
    from fclm_train.config import TrainConfig
    from fclm_train.train import _warn_random_init

    _warn_random_init(TrainConfig(model="7b"))
    err = capsys.readouterr().err
    assert "WARNING" in err and "RANDOM weights" in err and "--llm" in err and "--sam" in err
    _warn_random_init(TrainConfig(model="3b", llm_path="/ckpt/qwen"))
    err = capsys.readouterr().err
    assert "--sam" in err and "--llm and" not in err
    _warn_random_init(TrainConfig(model="tiny"))
    _warn_random_init(TrainConfig(model="3b", llm_path="/q", sam_path="/s"))
    assert capsys.readouterr().err == ""
