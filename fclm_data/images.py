"""Safe image access under the data root: path checks, format sniffing, full-stream decode check.

Shards carry each image's original bytes (no re-encoding), so this module only proves the bytes
are a complete JPEG/PNG of the declared size. JPEGs are decoded at 1/8 scale (``Image.draft``):
the entropy-coded stream is still read to the end, so truncation is caught (``verify()`` only
reads headers and misses it), at about 2x less cost than a full decode.
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


def check_image_bytes(data: bytes, file_name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Sniff, size-check and decode ``data``; returns the original bytes with their metadata."""
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
    if width * height > max_pixels:
        raise Reject(
            "decompression_bomb", f"{file_name}: {width}x{height} exceeds the {max_pixels:,}-pixel limit", file_name
        )
    try:
        if fmt == "JPEG":
            image.draft(image.mode if image.mode in ("L", "RGB") else "RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as exc:
        raise Reject("bad_image", f"{file_name}: decoding failed ({exc})", file_name) from exc
    return ImageData(data, _FORMATS[fmt], width, height, hashlib.sha256(data).hexdigest(), file_name)


def read_image(root: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read and check ``root/rel``; ``rel`` must stay inside ``root``."""
    rel = safe_relpath(rel)
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise Reject("missing_image", f"{rel} does not exist under the data root", rel) from exc
    except IsADirectoryError as exc:
        raise Reject("missing_image", f"{rel} is a directory", rel) from exc
    return check_image_bytes(data, rel, max_pixels)


def read_first_image(root: Path, candidates: list[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read the first candidate path that exists; ``missing_image`` names all of them otherwise.

    Releases disagree on folders and prefixes (COCO 2014 vs 2017 names, Flickr prefixes), so
    sources list where an image may be, in the order their reference loaders look.
    """
    if not candidates:
        raise Reject("missing_image", "the record names no image")
    for rel in candidates[:-1]:
        if (root / safe_relpath(rel)).is_file():
            return read_image(root, rel, max_pixels)
    try:
        return read_image(root, candidates[-1], max_pixels)
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
