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
