"""A restricted unpickler for untrusted release pickles (Describe-Anything ``.pickle`` members).

Plain containers, strings, numbers, booleans and None are built by pickle opcodes that never look
up a global. The only globals allowed are the few that protocol-2 pickles need for plain data
(``_codecs.encode`` for bytes, ``set``/``frozenset``/``bytearray``); anything else that would
import or call (``os.system``, numpy arrays, custom classes) is refused before it runs.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

from fclm_data.errors import Reject

#: Largest pickle we accept; DAM annotation pickles are a few KB to a few MB.
MAX_PICKLE_BYTES = 256 * 1024 * 1024


#: The most a pickle may make from a call: ``bytearray(10**10)`` is 20 bytes of pickle.
MAX_CALL_BYTES = 64 * 1024 * 1024


class PickleLimitError(pickle.UnpicklingError):
    """An allowed global was asked to build something larger than the limits (a memory bomb)."""


def _bounded_bytearray(*args: Any) -> bytearray:
    """``bytearray`` from data already in the pickle; a size argument (zeros from nothing) is refused."""
    if args and isinstance(args[0], int):
        raise PickleLimitError(f"bytearray({args[0]}) would allocate from a size, not from data")
    if args and hasattr(args[0], "__len__") and len(args[0]) > MAX_CALL_BYTES:
        raise PickleLimitError(f"bytearray of {len(args[0]):,} items exceeds {MAX_CALL_BYTES:,}")
    return bytearray(*args)


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Protocol 2's bytes: ``_codecs.encode(str, "latin1")`` only (other codecs may compress or expand)."""
    if not isinstance(obj, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"forbidden global _codecs.encode with {type(obj).__name__}/{encoding!r}")
    return codecs.encode(obj, "latin1", errors)


#: (module, name) -> the object; protocol 2 pickles bytes as ``_codecs.encode(str, "latin1")``.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bounded_bytearray,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytearray"): _bounded_bytearray,
}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see module docstring
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_loads(data: bytes, what: str) -> Any:
    """Unpickle ``data`` allowing only plain data; raise ``Reject('unsafe_pickle')`` otherwise."""
    if len(data) > MAX_PICKLE_BYTES:
        raise Reject("unsafe_pickle", f"{what}: {len(data):,} bytes exceeds the {MAX_PICKLE_BYTES:,}-byte limit")
    try:
        obj = _load(data)
    except PickleLimitError as exc:
        raise Reject("unsafe_pickle", f"{what}: {exc}") from exc
    except pickle.UnpicklingError as exc:
        code = "unsafe_pickle" if "forbidden" in str(exc) or "persistent" in str(exc) else "malformed_annotation"
        raise Reject(code, f"{what}: {exc}") from exc
    except Exception as exc:  # truncated / corrupt streams raise EOFError, ValueError, ...
        raise Reject("malformed_annotation", f"{what}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
    return obj


def _load(data: bytes) -> Any:
    """Python-2 pickles (the 2014-era refer ``refs(*).p``) store 8-bit strings: read them as UTF-8,
    falling back to latin-1 so no record is lost to an odd byte."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="utf-8").load()
    except UnicodeDecodeError:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="latin-1").load()
