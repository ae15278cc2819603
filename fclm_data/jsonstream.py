"""Streaming reader of large annotation JSONs: one record in memory at a time, with its byte span.

Release files run to hundreds of MB (MUSE ~1 GB, Osprey 57-153 MB, the GCG, VG and PACO files);
parsing one whole holds the file, its decoded text and every parsed record at once (2-4x the file in
RSS). This reader reads the file in fixed-size chunks, decodes them incrementally, and parses each
element of a top-level list (or of a named array inside a top-level object, for COCO-style
``images``/``annotations``) with ``json``'s C decoder, so memory is bounded by about one chunk plus
the largest record, whatever the file size. Each element comes with its byte offset and length, so
an index can keep only the span and ``build`` re-read the record (:class:`SpanReader`).

A chunk boundary anywhere (inside a string, an escape, a number or a multi-byte character) only
means "read more and parse that value again". Every problem is one ``malformed_annotation`` reject
naming the file and the byte where it is: not a list/object, truncated, trailing data, invalid
UTF-8, invalid JSON inside a record.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from fclm_data.errors import Reject

DEFAULT_CHUNK = 1 << 20  #: bytes per read; memory is about one chunk plus the largest record
_WS = re.compile(r"[ \t\n\r]*+")
_CUT_SLACK = 8  #: a parse error this close to the end of the text read so far may be the chunk's cut
#: what a top-level value is, from its first character (named as ``json.load``'s result type would be)
_KINDS = {"{": "a dict", "[": "a list", '"': "a str", "t": "a bool", "f": "a bool", "n": "a NoneType"}


class Span(NamedTuple):
    offset: int  #: byte offset of the record in the file
    length: int  #: its length in bytes
    value: Any  #: the parsed record


class Member(NamedTuple):
    key: str  #: the top-level object's key
    index: int | None  #: position in the array ``key`` (streamed arrays), None for a member read whole
    offset: int
    length: int
    value: Any


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class JsonStream:
    """A chunked reader over one binary file; ``peak_buffer`` is the most characters it ever held.

    The chunks are decoded incrementally (a multi-byte character cut by a chunk waits for the next),
    and each value is parsed by ``json``'s C decoder from where it starts in the decoded text; a value
    that the end of the text cuts short is parsed again once more text is read (a parse error within
    a few characters of the end, an unterminated string, or a number that may go on). Byte offsets
    are tracked by a mark that only moves forward, so they cost one pass over the text.
    """

    def __init__(self, fh: BinaryIO, rel: str, chunk_size: int = DEFAULT_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.fh, self.rel, self.chunk_size = fh, rel, chunk_size
        self.text = ""
        self.pos = 0  #: read position in ``text``
        self.mark = (0, 0)  #: (index in ``text``, byte offset of that character in the file)
        self.read_bytes = 0  #: bytes read from the file so far
        self.eof = False
        self.peak_buffer = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()

    # ---- public: the two layouts -------------------------------------------------------------
    def list_items(self) -> Iterator[Span]:
        """Every element of a top-level JSON list, then a check that nothing follows the list."""
        self._start("[", "a list")
        yield from self._elements()
        self._finish("list")

    def members(self, arrays: frozenset[str] | set[str] = frozenset()) -> Iterator[Member]:
        """Every member of a top-level JSON object; the lists of the keys in ``arrays`` element by element
        (an empty one, or a key in ``arrays`` whose value is not a list, comes whole with ``index`` None)."""
        self._start("{", "a dict")
        if self._peek() == "}":
            self.pos += 1
        else:
            while True:
                yield from self._member(arrays)
                if self._delimiter("}", "object"):
                    break
        self._finish("object")

    # ---- structure ---------------------------------------------------------------------------
    def _start(self, opener: str, what: str) -> None:
        while not self.text and self._read(0):  # (the first chunks may hold only part of a character)
            pass
        if self.text.startswith("\ufeff"):  # a UTF-8 BOM
            self.pos = 1
        c = self._peek()
        if c != opener:
            raise self._error(f"holds {_KINDS.get(c, 'a number') if c is not None else 'nothing'}, not {what}")
        self.pos += 1

    def _elements(self) -> Iterator[Span]:
        """The elements of a list whose ``[`` was consumed, up to and including its ``]``."""
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()
            if self._delimiter("]", "list"):
                return

    def _member(self, arrays: frozenset[str] | set[str]) -> Iterator[Member]:
        if self._peek() != '"':
            raise self._error("expected a string key")
        key = self._value().value
        if self._peek() != ":":
            raise self._error(f"expected ':' after key {key!r:.40}")
        self.pos += 1
        if key in arrays and self._peek() == "[":
            offset, empty = self._byte_at(self.pos), True
            self.pos += 1
            for i, span in enumerate(self._elements()):
                empty = False
                yield Member(key, i, *span)
            if empty:  # so that the caller still sees the key
                yield Member(key, None, offset, self._byte_at(self.pos) - offset, [])
        else:
            yield Member(key, None, *self._value())

    def _delimiter(self, closer: str, what: str) -> bool:
        """Consume ',' (False: another item follows) or ``closer`` (True: the container ends)."""
        c = self._peek()
        if c == closer:
            self.pos += 1
            return True
        if c != ",":
            if c is None:
                raise self._error(f"truncated: the {what} is not closed")
            raise self._error(f"invalid JSON: expected ',' or {closer!r}, found {c!r}")
        self.pos += 1
        if self._peek() == closer:
            raise self._error(f"invalid JSON: a ',' before the {closer!r} that closes the {what}")
        return False

    def _finish(self, what: str) -> None:
        if self._peek() is not None:
            raise self._error(f"trailing data after the top-level {what}")

    # ---- one value ---------------------------------------------------------------------------
    def _value(self) -> Span:
        """Parse the JSON value at the read position (whitespace before it skipped)."""
        c = self._peek()
        if c is None:
            raise self._error("truncated: a value is missing")
        if c in "]},:":
            raise self._error(f"invalid JSON: expected a value, found {c!r}")
        while True:
            try:
                value, end = self._json.raw_decode(self.text, self.pos)
                if end < len(self.text) or self.eof or c in '[{"':  # a number may go on in the next chunk
                    break
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(self.text) - _CUT_SLACK or exc.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    if self.eof and (exc.pos >= len(self.text) or exc.msg.startswith("Unterminated string")):
                        what = "a string" if c == '"' else "a record"
                        raise self._error(f"truncated: {what} is cut off by the end of the file") from exc
                    raise self._error(f"invalid JSON: {exc.msg}", self._byte_at(exc.pos)) from exc
            self._read(self.pos, more=len(self.text) - self.pos)
        offset = self._byte_at(self.pos)
        length = self._byte_at(end) - offset
        self.pos = end
        return Span(offset, length, value)

    # ---- buffer ------------------------------------------------------------------------------
    def _byte_at(self, i: int) -> int:
        """Byte offset in the file of ``text[i]``; ``i`` never goes back past the last one asked for."""
        index, byte = self.mark
        byte += _utf8_len(self.text[index:i])
        self.mark = (i, byte)
        return byte

    def _read(self, keep: int, more: int = 0) -> bool:
        """Append a chunk (at least ``more`` bytes: a value longer than a chunk is re-parsed a few times, not
        once per chunk), dropping ``text[:keep]``, which was consumed; False at the end of the file."""
        if self.eof:
            return False
        self._byte_at(keep)
        pending = len(self._utf8.getstate()[0])
        data = self.fh.read(max(self.chunk_size, more))
        try:
            decoded = self._utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            at = self.read_bytes - pending + exc.start
            raise self._error(f"not UTF-8 text ({exc.reason})", at) from exc
        self.read_bytes += len(data)
        self.text = self.text[keep:] + decoded
        self.pos -= keep
        self.mark = (0, self.mark[1])
        self.peak_buffer = max(self.peak_buffer, len(self.text))
        self.eof = not data
        return bool(data)

    def _peek(self) -> str | None:
        """The next non-whitespace character (read position moved onto it), None at the end of the file."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._read(self.pos):
                return None

    def _error(self, reason: str, at: int | None = None) -> Reject:
        at = self._byte_at(self.pos) if at is None else at
        return Reject("malformed_annotation", f"{self.rel}: {reason} at byte {at}", self.rel)


def iter_json_list(path: Path, rel: str, chunk_size: int | None = None) -> Iterator[Span]:
    """(offset, length, record) for each element of the top-level JSON list in ``path``."""
    with _open(path, rel) as fh:
        yield from JsonStream(fh, rel, chunk_size or DEFAULT_CHUNK).list_items()


def iter_json_members(
    path: Path, rel: str, arrays: frozenset[str] | set[str] = frozenset(), chunk_size: int | None = None
) -> Iterator[Member]:
    """The members of the top-level JSON object in ``path``; the arrays named in ``arrays`` element by element."""
    with _open(path, rel) as fh:
        yield from JsonStream(fh, rel, chunk_size or DEFAULT_CHUNK).members(arrays)


class SpanReader:
    """Re-reads records from the spans an index kept, through one open file (the file must not have changed)."""

    def __init__(self, path: Path, rel: str) -> None:
        self.fh, self.rel = _open(path, rel), rel

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def __call__(self, offset: int, length: int) -> Any:
        self.fh.seek(offset)
        raw = self.fh.read(length)
        try:
            if len(raw) != length:
                raise ValueError(f"{len(raw)} of {length} bytes")
            return json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            detail = f"{self.rel}: the record at byte {offset} changed since indexing ({exc})"
            raise Reject("malformed_annotation", detail, self.rel) from exc


def read_record(path: Path, rel: str, offset: int, length: int) -> Any:
    """One record re-read from its span (see :class:`SpanReader` for many)."""
    with SpanReader(path, rel) as read:
        return read(offset, length)


def _open(path: Path, rel: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise Reject("missing_file", f"{rel} does not exist under the data root", rel) from exc
