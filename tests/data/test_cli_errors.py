"""fclm-data's plain user errors: exit 2 with one ``error:`` line naming the thing and the reason, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("errors")
    (root / "a-file").write_text("not a directory")
    (root / "empty").mkdir()
    return {"file": root / "a-file", "empty": root / "empty", "missing": root / "missing", "root": root}


CASES = [
    (["build", "-s", "refcoco", "-d", "{missing}", "-o", "{root}/o"], "--data-root {missing} does not exist"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{file}"], "--out {file} is a file, not a directory"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{file}/sub"], "--out {file}/sub: {file} is a file"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{root}/o", "--shard-size", "0"],
     "--shard-size must be a positive number, got 0"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{root}/o", "--shard-size", "-5"],
     "--shard-size must be a positive number, got -5"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{root}/o", "--executor", "threads"],
     "--executor 'threads' is not one of auto, serial, processes, ray"),
    (["build", "-s", "refcoco", "-d", "{root}", "-o", "{root}/o", "--workers", "0"], "--workers must be a positive"),
    (["build", "-s", "no_such_source", "-d", "{root}", "-o", "{root}/o"], "unknown source 'no_such_source'"),
    (["build", "-r", "no-such-recipe", "-d", "{root}", "-o", "{root}/o"], "no-such-recipe"),
    (["inspect", "{missing}"], "{missing} does not exist"),
    (["inspect", "{empty}"], "{empty} holds no shards (*.tar) and no manifest.json"),
    (["demo-data", "{file}"], "ROOT {file} is a file, not a directory"),
    (["leakage", "-r", "stage2", "-e", "eval_refcoco", "-d", "{missing}"], "--data-root {missing} does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_user_errors_are_one_line(places, args, expected):
    code, lines, probe = run_cli("fclm_data.cli", *(a.format(**places) for a in args))
    assert code == 2, lines
    assert lines == [lines[0]] and lines[0].startswith("error: "), lines  # one line, no traceback
    assert expected.format(**places) in lines[0]
    assert probe == ["probe: torch not imported"]
