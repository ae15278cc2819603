"""Streaming reader of large annotation JSONs: one record in memory at a time, with its byte span.

Release files run to hundreds of MB (MUSE ~1 GB, Osprey 57-153 MB, the GCG files); parsing one
whole holds the file, its decoded text and every parsed record at once (2-4x the file in RSS).
This reader reads the file in fixed-size chunks, finds where each element of a top-level list (or
of a named array inside a top-level object, for COCO-style ``annotations``) ends by scanning the
bytes, and parses that element alone, so memory is bounded by one chunk plus the largest record,
whatever the file size. Each element comes with its byte offset and length, so an index can keep
only the span and ``build`` re-read the record (:func:`read_record`).

Scanning works on bytes: the structural characters ``" \\ [ ] { }`` are ASCII and never occur inside
a UTF-8 multi-byte character, so a chunk boundary anywhere (inside a string, an escape or a
character) only means "read more". Every problem is one ``malformed_annotation`` reject naming
the file and the byte where it is: not a list/object, truncated, trailing data, invalid UTF-8,
invalid JSON inside a record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from fclm_data.errors import Reject

DEFAULT_CHUNK = 1 << 20  #: bytes per read; memory is about one chunk plus the largest record
_BOM = b"\xef\xbb\xbf"
_WS = re.compile(rb"[ \t\n\r]*+")
#: a whole string (escapes included), a bracket, or a lone quote (a string that runs past the buffer)
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{}]|"', re.DOTALL)
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_SCALAR_END = re.compile(rb"[,\]}: \t\n\r]")
_OPEN, _CLOSE, _QUOTE = frozenset(b"[{"), frozenset(b"]}"), ord('"')
#: what a top-level value is, from its first byte (named as ``json.load``'s result type would be)
_KINDS = {ord("{"): "a dict", ord("["): "a list", _QUOTE: "a str", ord("t"): "a bool", ord("f"): "a bool",
          ord("n"): "a NoneType"}  # fmt: skip


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


class JsonStream:
    """A chunked reader over one binary file; ``peak_buffer`` is the most bytes it ever held."""

    def __init__(self, fh: BinaryIO, rel: str, chunk_size: int = DEFAULT_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.fh, self.rel, self.chunk_size = fh, rel, chunk_size
        self.buf = b""
        self.base = 0  #: file offset of ``buf[0]``
        self.pos = 0  #: read position in ``buf``
        self.eof = False
        self.peak_buffer = 0

    # ---- public: the two layouts -------------------------------------------------------------
    def list_items(self) -> Iterator[Span]:
        """Every element of a top-level JSON list, then a check that nothing follows the list."""
        self._start(ord("["), "a list")
        yield from self._elements()
        self._finish("list")

    def members(self, arrays: frozenset[str] | set[str] = frozenset()) -> Iterator[Member]:
        """Every member of a top-level JSON object; the lists of the keys in ``arrays`` element by element
        (an empty one, or a key in ``arrays`` whose value is not a list, comes whole with ``index`` None)."""
        self._start(ord("{"), "a dict")
        if self._peek() == ord("}"):
            self.pos += 1
        else:
            while True:
                yield from self._member(arrays)
                if self._delimiter(ord("}"), "object"):
                    break
        self._finish("object")

    # ---- structure ---------------------------------------------------------------------------
    def _start(self, opener: int, what: str) -> None:
        self._fill_to(len(_BOM))
        if self.buf.startswith(_BOM):
            self.pos = len(_BOM)
        c = self._peek()
        if c != opener:
            raise self._error(f"holds {_KINDS.get(c, 'a number') if c is not None else 'nothing'}, not {what}")
        self.pos += 1

    def _elements(self) -> Iterator[Span]:
        """The elements of a list whose ``[`` was consumed, up to and including its ``]``."""
        if self._peek() == ord("]"):
            self.pos += 1
            return
        while True:
            yield self._value()
            if self._delimiter(ord("]"), "list"):
                return

    def _member(self, arrays: frozenset[str] | set[str]) -> Iterator[Member]:
        if self._peek() != _QUOTE:
            raise self._error("expected a string key")
        key = self._value().value
        if self._peek() != ord(":"):
            raise self._error(f"expected ':' after key {key!r:.40}")
        self.pos += 1
        if key in arrays and self._peek() == ord("["):
            offset, empty = self.base + self.pos, True
            self.pos += 1
            for i, span in enumerate(self._elements()):
                empty = False
                yield Member(key, i, *span)
            if empty:  # so that the caller still sees the key
                yield Member(key, None, offset, self.base + self.pos - offset, [])
        else:
            yield Member(key, None, *self._value())

    def _delimiter(self, closer: int, what: str) -> bool:
        """Consume ',' (False: another item follows) or ``closer`` (True: the container ends)."""
        c = self._peek()
        if c == closer:
            self.pos += 1
            return True
        if c != ord(","):
            if c is None:
                raise self._error(f"truncated: the {what} is not closed")
            raise self._error(f"invalid JSON: expected ',' or {chr(closer)!r}, found {chr(c)!r}")
        self.pos += 1
        if self._peek() == closer:
            raise self._error(f"invalid JSON: a ',' before the {chr(closer)!r} that closes the {what}")
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
        if c in _OPEN:
            end = self._container_end(self.pos)
        elif c == _QUOTE:
            end = self._string_end(self.pos)
        elif c in _CLOSE or c in b",:":
            raise self._error(f"invalid JSON: expected a value, found {chr(c)!r}")
        else:
            end = self._scalar_end(self.pos)
        start = self.pos  # the value's start (reading more shifts the buffer, and ``pos`` with it)
        offset = self.base + start
        raw = self.buf[start:end]
        self.pos = end
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(f"not UTF-8 text ({exc.reason})", offset + exc.start) from exc
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            at = offset + len(text[: exc.pos].encode("utf-8"))
            raise self._error(f"invalid JSON: {exc.msg}", at) from exc
        return Span(offset, end - start, value)

    def _container_end(self, start: int) -> int:
        """Index in ``buf`` just past the bracket that closes the container opened at ``start``."""
        depth, scan = 0, start
        while True:
            for m in _TOKEN.finditer(self.buf, scan):
                i = m.start()
                c = self.buf[i]
                if c == _QUOTE:
                    if m.end() - i == 1:  # a string that runs past the buffer: resume at its quote
                        scan = i
                        break
                elif c in _OPEN:
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        return m.end()
            else:
                scan = len(self.buf)
            start, scan = self._more(start, scan, "a record")

    def _string_end(self, start: int) -> int:
        while True:
            m = _STRING.match(self.buf, start)
            if m:
                return m.end()
            start, _ = self._more(start, start, "a string")

    def _scalar_end(self, start: int) -> int:
        scan = start
        while True:
            m = _SCALAR_END.search(self.buf, scan)
            if m:
                return m.start()
            scan = len(self.buf) - start
            if not self._read(start):
                return len(self.buf)  # a number or literal that ends the file (the list is then unclosed)
            start = 0

    # ---- buffer ------------------------------------------------------------------------------
    def _more(self, keep: int, scan: int, what: str) -> tuple[int, int]:
        """Read another chunk, dropping ``buf[:keep]``; returns ``keep`` and ``scan`` shifted to match."""
        at = self.base + keep
        if not self._read(keep):
            raise self._error(f"truncated: {what} is cut off by the end of the file", at)
        return 0, scan - keep

    def _read(self, keep: int) -> bool:
        """Append one chunk (dropping ``buf[:keep]``, which was consumed); False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(self.chunk_size)
        self.buf = self.buf[keep:] + data
        self.base += keep
        self.pos -= keep
        self.peak_buffer = max(self.peak_buffer, len(self.buf))
        if not data:
            self.eof = True
        return bool(data)

    def _fill_to(self, n: int) -> None:
        while len(self.buf) - self.pos < n and self._read(self.pos):
            pass

    def _peek(self) -> int | None:
        """The next non-whitespace byte (read position moved onto it), None at the end of the file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._read(self.pos):
                return None

    def _error(self, reason: str, at: int | None = None) -> Reject:
        at = self.base + self.pos if at is None else at
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
