"""Attributes stated in a synthetic scene's caption: colour, shape, size, texture, position.

Captions come from :meth:`fclm_data.synthetic.scenes.SceneObject.caption` ("A small red circle with dark diagonal
stripes, placed in the upper left part of the picture. ..."). A generated caption states an attribute correctly
when the first mention of that attribute names the ground-truth value; an attribute never mentioned is wrong.
Texture phrases are read (and removed) before sizes, since "small round dots" is a texture, not a size.
"""

from __future__ import annotations

import re

from fclm_data.synthetic.scenes import COLOURS, SHAPES, SIZES

#: the four attributes DLC attribute accuracy averages over (position is reported on its own)
SCORED = ("colour", "shape", "size", "texture")
TEXTURE_PHRASES = {"plain, even surface": "plain", "diagonal stripes": "striped", "round dots": "dotted"}
_POSITION = re.compile(r"\b(upper|middle|lower) (left|centre|right)\b")


def _first(text: str, words) -> str | None:
    found = [(m.start(), word) for word in words for m in [re.search(rf"\b{re.escape(word)}\b", text)] if m]
    return min(found)[1] if found else None


def parse_attributes(caption: str) -> dict[str, str | None]:
    """``{colour, shape, size, texture, position}`` as first stated in ``caption`` (None when absent)."""
    text = caption.lower()
    texture = None
    positions = [(text.find(phrase), value) for phrase, value in TEXTURE_PHRASES.items() if phrase in text]
    if positions:
        texture = min(positions)[1]
    for phrase in TEXTURE_PHRASES:
        text = text.replace(phrase, " ")
    position = _POSITION.search(text)
    return {
        "colour": _first(text, COLOURS),
        "shape": _first(text, SHAPES),
        "size": _first(text, SIZES),
        "texture": texture,
        "position": position.group(0) if position else None,
    }


def attribute_hits(generated: str, reference: str) -> dict[str, bool]:
    """Per attribute: does ``generated`` state the value ``reference`` states?"""
    truth, said = parse_attributes(reference), parse_attributes(generated)
    missing = [name for name, value in truth.items() if value is None]
    if missing:
        raise ValueError(f"reference caption states no {', '.join(missing)}: {reference!r}")
    return {name: said[name] == value for name, value in truth.items()}
