"""Untrusted pickles: plain data loads, anything that would import or call is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from fclm_data.errors import Reject
from fclm_data.safe_pickle import safe_loads


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_data_loads() -> None:
    obj = [{"img_id": 1, "caption": "a cat", "mask_rle": {"size": [2, 3], "counts": b"06"}, "score": 0.5, "x": None}]
    for protocol in (2, 4, 5):
        assert safe_loads(pickle.dumps(obj, protocol=protocol), "t") == obj


def test_hostile_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps([{"caption": "x"}, _Exploit(marker)])
    with pytest.raises(Reject) as info:
        safe_loads(payload, "evil.pickle")
    assert info.value.code == "unsafe_pickle" and "system" in info.value.detail
    assert not marker.exists()


def test_numpy_and_classes_are_refused() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(Reject) as info:
        safe_loads(pickle.dumps({"mask": np.zeros(3)}), "np.pickle")
    assert info.value.code == "unsafe_pickle"


def test_truncated_pickle_is_malformed() -> None:
    with pytest.raises(Reject) as info:
        safe_loads(pickle.dumps([1, 2, 3] * 100)[:-5], "cut.pickle")
    assert info.value.code == "malformed_annotation"


def test_python2_8bit_strings_are_read() -> None:
    """refer's refs(*).p date from Python 2: str is an 8-bit SHORT_BINSTRING, decoded as UTF-8."""
    caf = "café".encode()
    payload = b"\x80\x02]q\x00U" + bytes([len(caf)]) + caf + b"a."  # PROTO 2, EMPTY_LIST, SHORT_BINSTRING, APPEND
    assert safe_loads(payload, "py2.p") == ["café"]
