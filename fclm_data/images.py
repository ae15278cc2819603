"""Safe image access under the data root: path checks, format sniffing, full-stream decode check.

Shards carry each image's original bytes (no re-encoding), so this module only proves the bytes
are a complete JPEG/PNG of the declared size. Two checks (``BuildOptions.image_check``):

* ``decode`` (default): JPEGs are decoded at 1/8 scale (``Image.draft``): the entropy-coded stream
  is still read to the end, so truncation and most corruption are caught (``verify()`` only reads
  headers and misses truncation), at about 2x less cost than a full decode. It still dominates a
  build's CPU time.
* ``markers``: a structural walk without decoding -- a JPEG must reach its end-of-image marker after
  its scan data, a PNG its ``IEND`` chunk through valid chunk lengths. Catches truncation at memcpy
  speed; does not catch corrupt entropy-coded data inside a complete file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from fclm_data.errors import Reject

#: Default pixel limit per image (SA-1B ~3.4 MP, Mapillary <= ~25 MP); above it we reject as a bomb.
DEFAULT_MAX_PIXELS = 100_000_000
_FORMATS = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class ImageData:
    data: bytes  #: original file bytes, written to the shard unchanged
    ext: str  #: "jpg" | "png", the shard member extension
    width: int
    height: int
    sha256: str
    file_name: str  #: relative to the data root (tar path + "#" + member for images inside tars)


def safe_relpath(name: str, what: str = "file_name") -> str:
    """Normalise a release-relative path; reject absolute paths and '..' (never read outside the root)."""
    if not isinstance(name, str) or not name.strip():
        raise Reject("malformed_annotation", f"{what} is empty or not a string: {name!r}")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise Reject("unsafe_path", f"{what} {name!r} is absolute")
    parts = PurePosixPath(posix).parts
    if any(part == ".." for part in parts):
        raise Reject("unsafe_path", f"{what} {name!r} climbs out of its directory with '..'")
    return "/".join(part for part in parts if part not in ("", "."))


def join_checked(directory: str, file_name: str) -> str:
    """``directory/file_name`` where the release's ``file_name`` is checked on its own first.

    Checking only the joined path would let an absolute ``/etc/passwd`` pass as a (missing)
    ``dir/etc/passwd``; a hostile name must be reported as unsafe, not as missing.
    """
    return f"{directory}/{safe_relpath(file_name)}" if directory else safe_relpath(file_name)


IMAGE_CHECKS = ("decode", "markers")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _scan_jpeg(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, complete) from the marker segments; None when ``data`` is not a JPEG.

    Complete = an EOI after the first scan: entropy-coded bytes never contain 0xFFD9 (0xFF is
    stuffed as 0xFF00), so an EOI after the scan can only be the image's own end.
    """
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, size = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF and pos + 9 <= len(data):
            size = (int.from_bytes(data[pos + 7 : pos + 9], "big"), int.from_bytes(data[pos + 5 : pos + 7], "big"))
        if marker == 0xDA:  # start of scan
            complete = size is not None and data.rfind(b"\xff\xd9", pos + 2 + length) != -1
            return (*size, complete) if size else (0, 0, False)
        pos += 2 + length
    return (*size, False) if size else (0, 0, False)


def _scan_png(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, complete): chunks whose lengths stay inside the file, up to IEND."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return width, height, True
        pos += 12 + length
    return width, height, False


def _check_structure(data: bytes, file_name: str) -> tuple[str, int, int] | None:
    """``markers`` check: (ext, width, height) of a complete JPEG/PNG; None when neither (PIL explains)."""
    for ext, scan in (("jpg", _scan_jpeg), ("png", _scan_png)):
        found = scan(data)
        if found is not None:
            width, height, complete = found
            if not complete:
                raise Reject("bad_image", f"{file_name}: {ext.upper()} stream is incomplete (truncated)", file_name)
            return ext, width, height
    return None


def check_image_bytes(
    data: bytes, file_name: str, max_pixels: int = DEFAULT_MAX_PIXELS, check: str = "decode"
) -> ImageData:
    """Sniff, size-check and verify ``data`` (``check``: decode | markers); returns the original bytes."""
    found = _check_structure(data, file_name) if check == "markers" else None
    if found is not None:
        ext, width, height = found
        _check_pixels(width, height, max_pixels, file_name)
    else:
        ext, width, height = _decode_check(data, file_name, max_pixels)
    return ImageData(data, ext, width, height, hashlib.sha256(data).hexdigest(), file_name)


def _check_pixels(width: int, height: int, max_pixels: int, file_name: str) -> None:
    if width * height > max_pixels:
        raise Reject(
            "decompression_bomb", f"{file_name}: {width}x{height} exceeds the {max_pixels:,}-pixel limit", file_name
        )


def _decode_check(data: bytes, file_name: str, max_pixels: int) -> tuple[str, int, int]:
    """Header via PIL, pixel limit, then a 1/8-scale decode of JPEGs (full decode of PNGs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            fmt = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Reject("decompression_bomb", f"{file_name}: {exc}", file_name) from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError...
        raise Reject("bad_image", f"{file_name}: not a readable image ({exc})", file_name) from exc
    if fmt not in _FORMATS:
        raise Reject("bad_image", f"{file_name}: format {fmt} is not JPEG or PNG", file_name)
    _check_pixels(width, height, max_pixels, file_name)
    try:
        if fmt == "JPEG":
            image.draft(image.mode if image.mode in ("L", "RGB") else "RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as exc:
        raise Reject("bad_image", f"{file_name}: decoding failed ({exc})", file_name) from exc
    return _FORMATS[fmt], width, height


def read_image(root: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS, check: str = "decode") -> ImageData:
    """Read and check ``root/rel``; ``rel`` must stay inside ``root``."""
    rel = safe_relpath(rel)
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise Reject("missing_image", f"{rel} does not exist under the data root", rel) from exc
    except IsADirectoryError as exc:
        raise Reject("missing_image", f"{rel} is a directory", rel) from exc
    return check_image_bytes(data, rel, max_pixels, check)


def read_first_image(
    root: Path, candidates: list[str], max_pixels: int = DEFAULT_MAX_PIXELS, check: str = "decode"
) -> ImageData:
    """Read the first candidate path that exists; ``missing_image`` names all of them otherwise.

    Releases disagree on folders and prefixes (COCO 2014 vs 2017 names, Flickr prefixes), so
    sources list where an image may be, in the order their reference loaders look.
    """
    if not candidates:
        raise Reject("missing_image", "the record names no image")
    for rel in candidates[:-1]:
        if (root / safe_relpath(rel)).is_file():
            return read_image(root, rel, max_pixels, check)
    try:
        return read_image(root, candidates[-1], max_pixels, check)
    except Reject as exc:
        if exc.code == "missing_image" and len(candidates) > 1:
            raise Reject("missing_image", f"none of {candidates} exists under the data root", candidates[0]) from exc
        raise


_COCO_NAME = re.compile(r"(?:^|_|/)(\d{12})\.jpg$")


def coco_image_id(file_name: str) -> int | None:
    """COCO id in a COCO file name ("COCO_train2014_000000000042.jpg", "train2017/000000000042.jpg")."""
    match = _COCO_NAME.search(str(file_name))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ImageLocation:
    """Where a unit's image bytes are: a file, or a byte range inside a tar."""

    path: str  #: relative to the data root
    offset: int | None = None
    size: int | None = None


def read_range(path: Path, offset: int, size: int) -> bytes:
    """Read ``size`` bytes at ``offset`` (tar members located at index time)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise Reject("bad_image", f"{path.name}: member at {offset} is cut short ({len(data)}/{size} bytes)")
    return data


def expect_size(image: ImageData, width: int, height: int, what: str) -> None:
    """Annotations are drawn on the raw pixel grid: their width/height must equal the image's."""
    if (int(width), int(height)) != (image.width, image.height):
        raise Reject(
            "image_size_mismatch",
            f"{what} says {int(width)}x{int(height)} but {image.file_name} is {image.width}x{image.height}",
            image.file_name,
        )


def relative_to_root(root: Path, path: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")
