"""Recipes: which sources, how many samples of each, and the build seed.

A recipe is YAML (``recipes/<name>.yaml``, headed by its launch command)::

    name: stage2
    seed: 0
    shard_size: 1000
    sources:
      - source: dam_sam
        count: 592822          # null = everything available
        repeat: false          # true: repeat a smaller source (fresh template draws) to reach count
        options: {subset: SAM} # any option of the source (paths relative to --data-root, split, caps)

Counts are Table 7's where the paper gives them. A count above what a source holds takes everything
and warns, unless ``repeat: true``. RECIPE changes (counts, seed, order) change the shards.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fclm_data.sources import get_spec

#: recipes/ at the repository root (editable installs) and the current directory are searched.
RECIPE_DIRS = (Path(__file__).resolve().parent.parent / "recipes", Path("recipes"))
DEFAULT_SHARD_SIZE = 1000
_LABEL = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # no '-': it separates the label from the uid in sample keys


class RecipeError(ValueError):
    """A recipe that cannot be used, with the file and the reason."""


@dataclass
class RecipeEntry:
    source: str  #: registry name
    count: int | None = None  #: samples to take; None = all
    repeat: bool = False  #: repeat the source when count > available
    options: dict[str, Any] = field(default_factory=dict)
    #: ledger / sample-key label; needed when a recipe lists one source twice (e.g. val and test splits)
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.source


@dataclass
class Recipe:
    name: str
    entries: list[RecipeEntry]
    seed: int = 0
    shard_size: int = DEFAULT_SHARD_SIZE
    description: str = ""
    path: str | None = None
    format: str = "fclm"  #: sample format (``format:`` in the YAML, ``--format`` overrides): fclm | refvlm | mvplm

    def fingerprint(self) -> str:
        """Hash of everything that determines the shards' content."""
        body = {"entries": [asdict(e) for e in self.entries], "seed": self.seed, "shard_size": self.shard_size}
        if self.format != "fclm":  # only then: fclm fingerprints (and so existing builds) stay as they were
            body["format"] = self.format
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    for directory in RECIPE_DIRS:
        candidate = directory / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    raise RecipeError(f"no recipe named {name_or_path!r}; available: {', '.join(list_recipes()) or 'none'}")


def list_recipes() -> list[str]:
    names = {p.stem for d in RECIPE_DIRS if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def load_recipe(name_or_path: str) -> Recipe:
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {exc}") from exc
    return parse_recipe(raw, str(path))


def parse_recipe(raw: Any, where: str = "<recipe>") -> Recipe:
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise RecipeError(f"{where}: a recipe needs a non-empty 'sources' list")
    unknown = set(raw) - {"name", "seed", "shard_size", "description", "sources", "format"}
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)}")
    entries = [_parse_entry(item, f"{where} sources[{i}]") for i, item in enumerate(raw["sources"])]
    labels = [e.label for e in entries]
    duplicates = sorted({n for n in labels if labels.count(n) > 1})
    if duplicates:
        raise RecipeError(f"{where}: sources listed twice: {duplicates} (give each entry a distinct 'name')")
    shard_size = int(raw.get("shard_size", DEFAULT_SHARD_SIZE))
    if shard_size < 1:
        raise RecipeError(f"{where}: shard_size must be >= 1")
    from fclm_data.formats import FORMATS

    fmt = str(raw.get("format", "fclm"))
    if fmt not in FORMATS:
        raise RecipeError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    return Recipe(
        name=str(raw.get("name", Path(where).stem)),
        entries=entries,
        seed=int(raw.get("seed", 0)),
        shard_size=shard_size,
        description=str(raw.get("description", "")),
        path=where,
        format=fmt,
    )


def _parse_entry(item: Any, where: str) -> RecipeEntry:
    if not isinstance(item, dict) or "source" not in item:
        raise RecipeError(f"{where}: each entry needs 'source'")
    unknown = set(item) - {"source", "count", "repeat", "options", "name"}
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        spec = get_spec(item["source"])
    except KeyError as exc:
        raise RecipeError(f"{where}: {exc.args[0]}") from exc
    options = item.get("options") or {}
    bad = set(options) - set(spec.cls.option_names())
    if bad:
        raise RecipeError(f"{where}: {spec.name} has no option(s) {sorted(bad)}; valid: {spec.cls.option_names()}")
    count = item.get("count")
    if count is not None and (not isinstance(count, int) or count < 0):
        raise RecipeError(f"{where}: count must be a non-negative integer or null")
    name = item.get("name")
    if name is not None and not _LABEL.match(str(name)):
        raise RecipeError(f"{where}: name {name!r} must match {_LABEL.pattern}")
    return RecipeEntry(spec.name, count, bool(item.get("repeat", False)), dict(options), name)


def single_source_recipe(names: list[str], seed: int, shard_size: int) -> Recipe:
    """``--source NAME`` builds: every named source with its defaults, everything available."""
    return Recipe(
        name="+".join(names),
        entries=[RecipeEntry(get_spec(n).name) for n in names],
        seed=seed,
        shard_size=shard_size,
    )
