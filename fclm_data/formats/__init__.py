"""Sample formats: one build of the releases rendered for FCLM, REF-VLM or MVP-LM (``fclm-data build --format``).

Every source builds the same :class:`~fclm_data.schema.Sample` (masks, boxes, labels, captions, the FCLM
conversation); a format's **renderer** rewrites only ``conversations``, the index lists and its own fields, and
its **parser** recovers the targets from the rendered text (phrase -> region indexes, unit, count). ``fclm`` is
the identity: its samples are byte-for-byte what the builder wrote before formats existed.

A non-default format adds two keys after ``templates``: ``format`` (the name) and ``format_fields`` (what the
format needs beyond the conversation; see each module). ``region_inputs`` / ``seg_targets`` keep their meaning:
the region index per visual-prompt input placeholder and per output placeholder, in reading order, where the
placeholders are the format's (:attr:`Format.input_token`, :attr:`Format.output_token`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fclm_data.formats.common import FormatError, Targets

FORMATS = ("fclm", "refvlm", "mvplm")
DEFAULT_FORMAT = "fclm"

__all__ = ["DEFAULT_FORMAT", "FORMATS", "Format", "FormatError", "Targets", "get_format", "render", "parse"]


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable[[dict[str, Any], int], dict[str, Any]]  #: (FCLM sample dict, seed) -> rendered sample dict
    parse: Callable[[dict[str, Any]], Targets]  #: rendered sample dict -> its targets, read from the text
    expected: Callable[[dict[str, Any]], Targets]  #: FCLM sample dict -> the targets its rendering must carry
    input_token: str | None  #: the visual-prompt input placeholder (user turns), None when the format has none
    output_token: str  #: the output placeholder (assistant turns)
    #: the tokens of the format's text a model must see as one token each (the loader's tokenizer adds them after
    #: FCLM's three, ``fclm_train.data.tokenizer.add_format_tokens``); FCLM's own are the model's, so ``()`` here
    special_tokens: tuple[str, ...] = ()


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    from fclm_data.formats import fclm, mvplm, refvlm

    return {"fclm": fclm.FORMAT, "refvlm": refvlm.FORMAT, "mvplm": mvplm.FORMAT}[name]


def render(sample: dict[str, Any], name: str, seed: int = 0) -> dict[str, Any]:
    """The FCLM sample dict rendered in format ``name`` (``fclm``: the same object)."""
    return get_format(name).render(sample, seed)


def parse(sample: dict[str, Any]) -> Targets:
    """The targets of a rendered sample, read from its text in its own format."""
    return get_format(sample.get("format", DEFAULT_FORMAT)).parse(sample)
