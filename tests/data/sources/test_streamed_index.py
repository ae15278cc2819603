"""Sources that stream their release file: the index is the one the whole-file readers gave.

The digests below were recorded with the whole-file readers (commit 877a3a5, before
:mod:`fclm_data.jsonstream`) on the generated data root: per source, the units (uid, image ref,
file, and the payload ``build`` works from, :meth:`Source.payload_of`), the index rejects and the
missing paths. They must not change when only the reading changes, at any chunk size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fclm_data import jsonstream
from fclm_data.sources import get_source

WHOLE_FILE_DIGESTS = {
    ("osprey_short_form", "train"): (3, 0, "8b578c2f0d45e9d0"),
    ("osprey_conversations", "train"): (8, 4, "05cce03ca6cf7909"),
    ("osprey_lvis_posneg", "train"): (4, 0, "53c65e7c465ca94b"),
    ("osprey_detailed_description", "train"): (4, 2, "a1c88a312648c22d"),
    ("grandf", "train"): (8, 1, "82fe9148ac3a8f54"),
    ("openpsg_gcg", "train"): (4, 0, "42e0a14b026190a1"),
    ("openpsg_gcg", "val"): (2, 0, "ea5e307bf6bb0afa"),
    ("refcocog_gcg", "train"): (6, 1, "f7f1eb31283baf82"),
    ("refcocog_gcg", "val"): (1, 0, "e659be7d1693fe4c"),
    ("flickr30k_gcg", "train"): (6, 2, "098987ad9942f195"),
    ("flickr30k_gcg", "val"): (1, 0, "1f02f569cf2d943d"),
    ("vg", "train"): (5, 1, "18d20ec4eebc6131"),
    ("vg_grit", "train"): (5, 3, "fb8306d94cbe7984"),
    ("paco_lvis", "train"): (6, 1, "e6b9e2cefd7a0784"),
    ("paco_lvis", "val"): (2, 0, "9483bd4bcbe5b197"),
}


def _digest(name: str, split: str, root: Path) -> tuple[int, int, str]:
    source = get_source(name, root, **({"split": split} if split != "train" else {}))
    result = source.index()
    units = [[u.uid, u.image_ref, u.file, source.payload_of(u)] for u in result.units]
    rejects = [[r.record, r.file, r.code, r.detail] for r in result.rejects]
    blob = json.dumps([units, rejects, result.missing], sort_keys=True, default=str).encode()
    return len(result.units), len(result.rejects), hashlib.sha256(blob).hexdigest()[:16]


@pytest.mark.parametrize("chunk", [jsonstream.DEFAULT_CHUNK, 7])
@pytest.mark.parametrize(("name", "split"), list(WHOLE_FILE_DIGESTS))
def test_streamed_index_equals_the_whole_file_index(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, name: str, split: str, chunk: int
) -> None:
    monkeypatch.setattr(jsonstream, "DEFAULT_CHUNK", chunk)  # 7 bytes: boundaries everywhere in the records
    assert _digest(name, split, data_root) == WHOLE_FILE_DIGESTS[(name, split)]


@pytest.mark.parametrize("name", ["osprey_conversations", "grandf", "refcocog_gcg", "flickr30k_gcg", "muse"])
def test_units_keep_spans_not_records(data_root: Path, name: str) -> None:
    """What keeps indexing memory flat: a unit holds no mask, caption or conversation of its record."""
    source = get_source(name, data_root)
    for unit in source.index().units:
        kept = json.dumps(unit.payload, default=str)
        assert len(kept) < 200, kept
        assert not {"counts", "segmentation", "caption", "turns", "phrases"} & set(unit.payload)


@pytest.mark.parametrize("name", ["vg", "paco_lvis"])
def test_coco_units_keep_mask_spans(data_root: Path, name: str) -> None:
    """Per-image units of the COCO-style files keep each annotation's span in place of its mask."""
    source = get_source(name, data_root)
    units = source.index().units
    assert units and all("span" in e and "segmentation" not in e for u in units for e in u.payload["anns"])
    assert all("segmentation" in e for u in units for e in source.payload_of(u)["anns"])
