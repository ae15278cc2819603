"""Rejections: why an input record did not become a sample.

Every input record is either written or rejected with a :class:`Reject` carrying a stable ``code``
(for counting in the manifest) and a human ``detail`` naming what was wrong. Sources raise it;
the builder catches it, records ``{source, record, file, code, detail}`` in ``rejects.jsonl`` and
goes on with the next record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Stable reason codes; the manifest counts rejections per source and code.
REASONS = {
    "missing_file": "an annotation file or directory the source needs does not exist",
    "malformed_annotation": "an annotation file or record cannot be parsed or lacks required fields",
    "duplicate_id": "an id that must be unique appears twice",
    "unsafe_pickle": "a pickle references something other than plain containers, strings, bytes, numbers",
    "unsafe_path": "a file name is absolute or climbs out of the data root with '..'",
    "missing_image": "the image file does not exist",
    "bad_image": "the image bytes are not a decodable JPEG/PNG (unknown format or truncated)",
    "decompression_bomb": "the image header declares more pixels than the configured limit",
    "image_size_mismatch": "the annotation's width/height differ from the image's",
    "bad_polygon": "a polygon has fewer than 3 points or non-numeric / odd-length coordinates",
    "mask_size_mismatch": "an RLE's size differs from the image's [height, width]",
    "empty_mask": "a region mask has no foreground pixel",
    "bbox_outside_image": "a box is empty or lies outside the image",
    "no_regions": "no usable region is left in the record",
    "bad_text": "required text (expression, caption, question) is empty or malformed",
    "image_too_small": "the image is below the source's minimum side (Flickr30K GCG: 32 px, as GLaMM filters)",
    "ignored_annotation": "the release flags the annotation 'ignore' (its loaders skip it)",
    "eval_overlap": "the image also appears in an evaluation split (--exclude-eval)",
    "format_unsupported": "the sample cannot be expressed in the build's --format (e.g. MVP-LM: nothing to perceive)",
    "invalid_sample": "the converter produced a sample that violates the schema (a converter bug)",
    "unexpected_error": "the converter raised an unexpected exception on this record (a converter bug)",
    "worker_crashed": "the build process died twice while building this record (e.g. a native-library crash)",
}


def deterministic(detail: str) -> str:
    """Drop object addresses (``<... at 0x7f..>``): rejects.jsonl is byte-identical across runs."""
    return _ADDRESS.sub("", detail) if " at 0x" in detail else detail


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class Reject(Exception):
    """An input record that cannot become a sample; ``code`` is one of :data:`REASONS`."""

    code: str
    detail: str
    file: str | None = None  #: the file the problem is in, relative to the data root

    def __post_init__(self) -> None:
        if self.code not in REASONS:
            raise ValueError(f"unknown reject code {self.code!r}")
        self.detail = deterministic(self.detail)
        super().__init__(f"{self.code}: {self.detail}")


@dataclass
class RejectRecord:
    """One line of ``rejects.jsonl``."""

    source: str
    record: str  #: the record's id as the release names it (ref id, tar member, ...) or sample key
    file: str | None
    code: str
    detail: str
    stage: str  #: "index" (while listing records) | "sample" (while building one) | "annotation"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "record": self.record,
            "file": self.file,
            "code": self.code,
            "detail": self.detail,
            "stage": self.stage,
        }
