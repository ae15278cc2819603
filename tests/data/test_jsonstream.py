"""The streaming JSON reader: same records as ``json.loads``, exact byte spans, bounded memory, one-line rejects."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fclm_data.errors import Reject
from fclm_data.jsonstream import JsonStream, SpanReader, iter_json_list, iter_json_members, read_record

#: strings that straddle any chunk boundary: escapes, escaped quotes/backslashes, brackets, multi-byte and
#: surrogate-pair characters, numbers and literals that end the list
RECORDS = [
    {"a": 'x"y\\z', "b": [1, 2, [3, {"c": "]}[{"}]], "u": "é☕\U0001f600", "esc": "\\\"\\\\\n\t\u00e9"},
    "a string with ] and } and \\",
    -12.5e3,
    {"nested": {"deep": [[[]]], "empty": {}}, "t": True, "f": False, "n": None},
    [],
    "日本語のテキスト",
    123456789,
]


def _stream(raw: bytes, chunk: int) -> list:
    return list(JsonStream(io.BytesIO(raw), "ann/x.json", chunk).list_items())


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_records_and_spans_at_every_chunk_boundary(chunk: int, indent: int | None, bom: bytes) -> None:
    raw = bom + json.dumps(RECORDS, indent=indent, ensure_ascii=False).encode()
    spans = _stream(raw, chunk)
    assert [s.value for s in spans] == RECORDS
    for span in spans:  # each span is exactly the record's bytes
        assert json.loads(raw[span.offset : span.offset + span.length]) == span.value
        assert raw[span.offset : span.offset + span.length].strip() == raw[span.offset : span.offset + span.length]


def test_ascii_escaped_file_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(RECORDS))  # \\uXXXX escapes, surrogate pairs included
    spans = list(iter_json_list(path, "x.json", chunk_size=3))
    assert [s.value for s in spans] == RECORDS
    with SpanReader(path, "x.json") as read:
        assert [read(s.offset, s.length) for s in spans] == RECORDS
    assert read_record(path, "x.json", spans[0].offset, spans[0].length) == RECORDS[0]


@pytest.mark.parametrize("chunk", [1, 4, 1 << 20])
def test_members_stream_the_named_arrays_only(chunk: int) -> None:
    data = {"info": {"v": "]"}, "images": [{"id": 1}, {"id": "b"}], "annotations": [], "categories": [{"id": 1}],
            "odd": "x", "annotations2": 3}  # fmt: skip
    raw = json.dumps(data).encode()
    got = list(JsonStream(io.BytesIO(raw), "c.json", chunk).members({"images", "annotations", "annotations2"}))
    assert [(m.key, m.index, m.value) for m in got] == [
        ("info", None, {"v": "]"}),
        ("images", 0, {"id": 1}),
        ("images", 1, {"id": "b"}),
        ("annotations", None, []),  # an empty streamed array still names its key
        ("categories", None, [{"id": 1}]),
        ("odd", None, "x"),
        ("annotations2", None, 3),  # not a list: whole
    ]
    for m in got:
        assert json.loads(raw[m.offset : m.offset + m.length]) == m.value
    assert list(JsonStream(io.BytesIO(b" {} "), "c.json", chunk).members()) == []


# (file content, reason in the reject, byte offset it names)
MALFORMED = [
    (b"", "holds nothing, not a list", 0),
    (b"   \n", "holds nothing, not a list", 4),
    (b'{"a": 1}', "holds a dict, not a list", 0),
    (b'"text"', "holds a str, not a list", 0),
    (b"\xef\xbb\xbf 12", "holds a number, not a list", 4),
    (b"[1, 2", "truncated: the list is not closed", 5),
    (b'[{"a": 1}', "truncated: the list is not closed", 9),
    (b'[{"a": [1, 2]', "truncated: a record is cut off", 1),
    (b'[{"a": "b\\', "truncated: a record is cut off", 1),
    (b'["abc', "truncated: a string is cut off", 1),
    (b"[1,", "truncated: a value is missing", 3),
    (b"[1, 2] x", "trailing data after the top-level list", 7),
    (b"[1] [2]", "trailing data after the top-level list", 4),
    (b"[1, ]", "invalid JSON: a ',' before the ']'", 4),
    (b"[1 2]", "invalid JSON: expected ',' or ']', found '2'", 3),
    (b'[{"a": 1}}', "invalid JSON: expected ',' or ']', found '}'", 9),
    (b'[{"a" 1}]', "invalid JSON: Expecting ':' delimiter", 6),
    (b'[{"a": tru}]', "invalid JSON: Expecting value", 7),
    (b'["caf\xc3\xa9", "b\xffd"]', "not UTF-8 text (invalid start byte)", 12),
    (b'["\xe2\x98"]', "not UTF-8 text", 2),
]


@pytest.mark.parametrize(("raw", "reason", "at"), MALFORMED)
@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_malformed_files_are_one_line_rejects_at_the_byte(raw: bytes, reason: str, at: int, chunk: int) -> None:
    with pytest.raises(Reject) as info:
        _stream(raw, chunk)
    exc = info.value
    assert exc.code == "malformed_annotation" and exc.file == "ann/x.json"
    assert exc.detail.startswith("ann/x.json: ") and "\n" not in exc.detail
    assert reason in exc.detail and exc.detail.endswith(f"at byte {at}"), exc.detail


def test_object_errors_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(Reject, match="holds a list, not a dict at byte 0"):
        list(JsonStream(io.BytesIO(b"[]"), "c.json", 4).members())
    with pytest.raises(Reject, match="expected a string key at byte 1"):
        list(JsonStream(io.BytesIO(b"{1: 2}"), "c.json", 4).members())
    with pytest.raises(Reject, match="truncated: the object is not closed"):
        list(JsonStream(io.BytesIO(b'{"images": [{"id": 1}]'), "c.json", 4).members({"images"}))
    with pytest.raises(Reject, match="does not exist") as info:
        list(iter_json_members(tmp_path / "none.json", "none.json"))
    assert info.value.code == "missing_file"


def test_changed_file_is_a_reject_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('[{"a": 1}, {"b": 2}]')
    spans = list(iter_json_list(path, "x.json"))
    path.write_text('[{"a": 1}, {"b": 2')
    with pytest.raises(Reject, match="x.json: the record at byte 11 changed since indexing") as info:
        read_record(path, "x.json", spans[1].offset, spans[1].length)
    assert info.value.code == "malformed_annotation"


class _CountingFile(io.BytesIO):
    """A file that records every read's size and how many bytes it returned."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.sizes: list[int] = []
        self.returned = 0

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        self.sizes.append(-1 if size is None else size)
        data = super().read(size)
        self.returned += len(data)
        return data


def test_memory_is_bounded_by_a_chunk_and_the_largest_record() -> None:
    """Memory must not grow with the file: reads are sized by the chunk (or the record being parsed), lazy, each
    byte read once, and the buffer never holds more than about two records plus two chunks (a whole-file read,
    or a reader that keeps consumed text, fails this)."""
    records = [{"id": i, "caption": "word " * (i % 37), "mask": {"counts": "x" * (i % 101)}} for i in range(3000)]
    raw = json.dumps(records).encode()
    chunk = 64
    fh = _CountingFile(raw)
    stream = JsonStream(fh, "big.json", chunk)
    largest = 0
    for n, span in enumerate(stream.list_items()):
        largest = max(largest, span.length)
        assert span.value == records[n]
        assert fh.tell() <= span.offset + 2 * span.length + 2 * chunk  # nothing read far ahead of the record
    assert fh.returned == len(raw) and min(fh.sizes) >= chunk and max(fh.sizes) <= largest + chunk
    assert stream.peak_buffer <= 2 * largest + 2 * chunk < len(raw) // 100
