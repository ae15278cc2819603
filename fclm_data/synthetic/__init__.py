"""Tiny data roots in the official release layouts, generated on the fly (no download).

``generate_data_root(root)`` writes every registered family's files under ``root`` exactly where
``--data-root`` expects them. Families share one synthetic COCO (as RefCOCO, RefCOCOg-GCG, MUSE,
PACO... share COCO images in reality), so overlap between sources is realistic too.
Each family module registers ``write(ctx)`` with :func:`register_generator`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from fclm_data.synthetic.context import SynthContext

_GENERATORS: dict[str, Callable[[SynthContext], None]] = {}
_loaded = False


def register_generator(family: str, write: Callable[[SynthContext], None]) -> None:
    if family in _GENERATORS:
        raise ValueError(f"generator {family!r} registered twice")
    _GENERATORS[family] = write


def generator_names() -> list[str]:
    _load_all()
    return sorted(_GENERATORS)


def _load_all() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if module.name not in ("context", "scenes"):
                importlib.import_module(f"{__name__}.{module.name}")


def generate_data_root(
    root: Path | str,
    families: list[str] | None = None,
    seed: int = 0,
    scale: int = 1,
    image_size: tuple[int, int] = (320, 240),
) -> Path:
    """Write the families' releases under ``root``; ``scale`` multiplies the record counts."""
    _load_all()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ctx = SynthContext(root, seed=seed, scale=scale, image_size=image_size)
    for family in families or sorted(_GENERATORS):
        if family not in _GENERATORS:
            raise KeyError(f"no generator {family!r}; available: {', '.join(sorted(_GENERATORS))}")
        _GENERATORS[family](ctx)
    return root
