"""Source registry: registry name -> (Source class, preset options).

Each module in this package registers its dataset family on import; :func:`_load_all` imports
them all (sorted), so adding ``sources/<family>.py`` is enough to add a source.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fclm_data.sources.base import BuildOptions, Built, IndexResult, Source, Unit

__all__ = [
    "BuildOptions", "Built", "IndexResult", "Source", "SourceSpec", "Unit",
    "get_source", "list_sources", "register_source",
]  # fmt: skip


@dataclass(frozen=True)
class SourceSpec:
    name: str  #: registry name used in recipes and sample JSON
    cls: type[Source]
    presets: dict[str, Any] = field(default_factory=dict)  #: option values fixed by this name
    description: str = ""
    table7: str = ""  #: the paper's Table 7 row this source feeds

    def options(self) -> dict[str, Any]:
        """Default option values (class defaults overridden by presets)."""
        import dataclasses

        defaults = {
            f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(self.cls)
            if f.name != "data_root"
        }
        return {**defaults, **self.presets}


_REGISTRY: dict[str, SourceSpec] = {}
_loaded = False


def register_source(name: str, cls: type[Source], description: str = "", table7: str = "", **presets: Any) -> None:
    if name in _REGISTRY:
        raise ValueError(f"source {name!r} registered twice")
    unknown = set(presets) - set(cls.option_names())
    if unknown:
        raise ValueError(f"source {name!r}: presets {sorted(unknown)} are not options of {cls.__name__}")
    _REGISTRY[name] = SourceSpec(name, cls, presets, description, table7)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


def list_sources() -> list[SourceSpec]:
    _load_all()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_spec(name: str) -> SourceSpec:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown source {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_source(name: str, data_root: Path | str, **options: Any) -> Source:
    """Instantiate source ``name`` on ``data_root``; ``options`` override its presets."""
    spec = get_spec(name)
    unknown = set(options) - set(spec.cls.option_names())
    if unknown:
        raise ValueError(
            f"source {name!r} has no option(s) {sorted(unknown)}; valid: {', '.join(spec.cls.option_names())}"
        )
    source = spec.cls(data_root=Path(data_root), **{**spec.presets, **options})
    source.name = name  # instance attribute shadows the ClassVar: one class serves several names
    return source
