"""Osprey-style region tags (``<region1>``, ``<region2>``...): repair the release's noise, then render.

Osprey-724K writes region references as 1-based tags into the record's ``annotation`` list. The
released text carries typos; :func:`repair_tags` canonicalises the unambiguous ones and rejects the
rest with the reason:

=====================  =========================================================================
``<region1]``          repaired (wrong closing bracket)
``<region1.``          repaired: '.' is the unshifted '>' key, so it is taken as the closing bracket
``<region 1>``         repaired (space before the number); also ``<region 1]`` etc.
``<Region1>``          repaired (case)
``<regin1>``           repaired (misspelling); also ``<regin 1>``
``<region of1>``       repaired
``<region01>``         repaired (leading zero)
``<region>``           rejected ``bad_text``: a bare tag does not say which region it means
``<region0>``, N > n   rejected ``malformed_annotation``: no such entry in ``annotation``
anything else          rejected ``bad_text`` (e.g. ``<region1`` with no closing bracket, ``<regions>``)
=====================  =========================================================================

Rendering (our schema allows ``<region>`` only in user turns; see :mod:`fclm_data.sources.osprey`):

* :func:`render_inline` -- every tag in a user turn becomes one ``<region>`` input, in reading
  order (a region named twice is two inputs with the same region index). ``regions`` are ordered
  by first mention in the user turns, and a tag in an assistant turn becomes the plain text
  "region k" where k is that 1-based order, so "region 2" always names the second region the user
  marked. A region only the assistant names continues the numbering but has no input.
* :func:`render_listed` -- Osprey's own rendering: the first user turn opens with "There are N part
  regions in the picture: region 1 <region>, region 2 <region>." (every annotation, in order) and
  every tag in every turn becomes the plain text "region N" with the release's numbering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fclm_data.errors import Reject
from fclm_data.schema import REGION_TOKEN, Turn

#: The canonical tag after repair.
CANONICAL_TAG = re.compile(r"<region([1-9]\d*)>")
#: Every repairable spelling: region/regin in any case, optional "of", spaces, '>' ']' or '.' closing.
_VARIANT_TAG = re.compile(r"<\s*(?:region|regin)\s*(?:of\s*)?(\d+)\s*[>\].]", re.IGNORECASE)
_NUMBERED_TAG = re.compile(r"<region(\d+)>")
_BARE_TAG = re.compile(r"<\s*region\s*>", re.IGNORECASE)
#: Tag-like text left after repair ("<region1 is", "<regions>", "<reigon2>"): never passed on as text.
_LEFTOVER = re.compile(r"<\s*(?:reg|r[a-z]*\s*(?:of\s*)?\d)[^\s]{0,12}", re.IGNORECASE)


@dataclass
class Repaired:
    text: str  #: with every tag canonical (``<regionN>``)
    fixes: list[str]  #: the original spellings that were repaired
    numbers: list[int]  #: the 1-based region numbers in reading order


def repair_tags(text: str, n_regions: int) -> Repaired:
    """Canonicalise the region tags of ``text``; raise :class:`Reject` for ambiguous or impossible ones."""
    bare = _BARE_TAG.search(text)
    if bare:
        raise Reject("bad_text", f"bare {bare.group(0)!r} tag does not say which region it means")
    fixes: list[str] = []

    def canonical(match: re.Match) -> str:
        tag = f"<region{int(match.group(1))}>"
        if match.group(0) != tag:
            fixes.append(match.group(0))
        return tag

    repaired = _VARIANT_TAG.sub(canonical, text)
    numbers = [int(n) for n in _NUMBERED_TAG.findall(repaired)]
    for number in numbers:
        if not 1 <= number <= n_regions:
            raise Reject("malformed_annotation", f"<region{number}> names no entry of the {n_regions} in 'annotation'")
    leftover = _LEFTOVER.search(_NUMBERED_TAG.sub("", repaired))
    if leftover:
        raise Reject("bad_text", f"unrecognised region tag {leftover.group(0)!r}")
    return Repaired(repaired, fixes, numbers)


def region_name(number: int) -> str:
    """How a region is named in plain text (assistant turns, listed intros)."""
    return f"region {number}"


def render_inline(turns: list[tuple[str, str]]) -> tuple[list[Turn], list[int], list[int]]:
    """User tags -> ``<region>`` inputs; assistant tags -> "region k" (k = order of first user mention).

    Args:
        turns: (role, text with canonical tags) pairs.

    Returns:
        (rendered turns, the 0-based annotation index of each sample region in order, region_inputs).
    """
    order: list[int] = []
    for role, text in turns:
        if role == "user":
            for number in CANONICAL_TAG.findall(text):
                if int(number) - 1 not in order:
                    order.append(int(number) - 1)
    named = list(order)  # assistant-only regions continue the numbering without an input
    rendered, region_inputs = [], []
    for role, text in turns:
        if role == "user":
            region_inputs += [order.index(int(n) - 1) for n in CANONICAL_TAG.findall(text)]
            rendered.append(Turn(role, CANONICAL_TAG.sub(REGION_TOKEN, text)))
        else:
            rendered.append(Turn(role, CANONICAL_TAG.sub(lambda m: _assistant_name(m, named), text)))
    return rendered, order, region_inputs


def _assistant_name(match: re.Match, named: list[int]) -> str:
    index = int(match.group(1)) - 1
    if index not in named:
        named.append(index)
    return region_name(named.index(index) + 1)


def render_listed(turns: list[tuple[str, str]], n_regions: int, intro: str) -> tuple[list[Turn], list[int], list[int]]:
    """Osprey's rendering: ``intro`` (with ``{n}``/``{regions}``) lists every region once, tags become names."""
    listing = ", ".join(f"{region_name(i + 1)} {REGION_TOKEN}" for i in range(n_regions))
    rendered = []
    for i, (role, text) in enumerate(turns):
        text = CANONICAL_TAG.sub(lambda m: region_name(int(m.group(1))), text)
        if i == 0:
            text = f"{intro.format(n=n_regions, regions=listing)} {text}"
        rendered.append(Turn(role, text))
    return rendered, list(range(n_regions)), list(range(n_regions))
