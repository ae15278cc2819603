"""Helpers shared by tests: build a recipe into a directory and read back what was written."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from fclm_data.build.run import BuildConfig, run_build
from fclm_data.recipes import Recipe, load_recipe, single_source_recipe


def build(recipe: Recipe | str | list[str], root: Path, out: Path, **config) -> dict:
    """Build a recipe name/object or a list of source names into ``out``; returns the manifest."""
    if isinstance(recipe, list):
        recipe = single_source_recipe(recipe, config.pop("seed", 0), config.pop("shard_size", 1000))
    elif isinstance(recipe, str):
        recipe = load_recipe(recipe)
    return run_build(recipe, BuildConfig(data_root=root, out_dir=out, **config))


def read_samples(out: Path) -> dict[str, tuple[dict, bytes, str]]:
    """key -> (decoded json, image bytes, image ext) over every shard of a build."""
    samples = {}
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in members.items():
            key, _, ext = name.partition(".")
            if ext == "json":
                image_ext = next(e for e in ("jpg", "png") if f"{key}.{e}" in members)
                samples[key] = (json.loads(data), members[f"{key}.{image_ext}"], image_ext)
    return samples


def read_rejects(out: Path) -> list[dict]:
    text = (out / "rejects.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


_PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    print("probe: torch imported" if "torch" in sys.modules else "probe: torch not imported", file=sys.stderr)
"""


def run_cli(module: str, *args: str, timeout: float = 300) -> tuple[int, list[str], list[str]]:
    """Run ``python -m module args`` in a fresh process; (exit code, stderr lines, probe lines).

    The probe line says whether torch was imported by the time the command exited (a user error should be
    reported before the heavy imports)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _PROBE, module, *args], capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    probe = [line for line in lines if line.startswith("probe: ")]
    return result.returncode, [line for line in lines if not line.startswith("probe: ")], probe
