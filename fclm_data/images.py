"""Safe image access under the data root: path and symlink checks, format sniffing, strict decode check.

Shards carry each image's original bytes (no re-encoding), so this module only proves the bytes
are a complete, uncorrupted JPEG/PNG of the declared size. Two checks (``BuildOptions.image_check``):

* ``decode`` (default): JPEGs are decoded by libjpeg-turbo in strict mode (``simplejpeg``) at 1/8
  DCT scale: the whole entropy-coded stream is still read, and libjpeg's corruption *warnings*
  ("Corrupt JPEG data: ...") are errors, so damaged scan data is caught as well as truncation
  (PIL's decoder only warns and fills grey). PNGs are fully decoded by PIL (zlib and CRC checked).
  Each distinct image (by sha256) is checked once per worker process: Describe-Anything has many
  regions per image, and the outcome is a pure function of the bytes.
* ``markers``: a structural walk without decoding -- a JPEG must reach its end-of-image marker after
  its scan data, a PNG its ``IEND`` chunk through valid chunk lengths. Catches truncation at memcpy
  speed; does not catch corrupt entropy-coded data inside a complete file.

EXIF orientation: release masks are drawn on the stored pixel grid, but ``datasets`` (and any
reader calling ``ImageOps.exif_transpose``) would rotate the pixels. The orientation tag is set to
1 in place (same length: the JPEG/PNG data is otherwise untouched), so every reader sees the stored
grid; the original value is kept in ``ImageData.exif_orientation`` (``manifest.parquet``).

Symlinks: a path may go through symlinks when its resolved target stays inside the data root or a
trusted root (:func:`trust_roots`: the targets of the data root's configured paths, and
``--link-root``); anything else is an ``unsafe_path`` reject naming the link's target.
"""

from __future__ import annotations

import functools
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
    exif_orientation: int | None = None  #: the EXIF orientation tag before it was set to 1 (None: no tag)


def safe_relpath(name: str, what: str = "file_name") -> str:
    """Normalise a release-relative path; reject absolute paths and '..' (never read outside the root)."""
    if not isinstance(name, str) or not name.strip():
        raise Reject("malformed_annotation", f"{what} is empty or not a string: {name!r}")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise Reject("unsafe_path", f"{what} {name!r} is absolute")
    parts = [part for part in posix.split("/") if part not in ("", ".")]  # PurePosixPath's parts, 5x cheaper
    if ".." in parts:
        raise Reject("unsafe_path", f"{what} {name!r} climbs out of its directory with '..'")
    return "/".join(parts)


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


def _check_structure(data: bytes, file_name: str | None) -> tuple[str, int, int] | None:
    """``markers`` check: (ext, width, height) of a complete JPEG/PNG; None when neither (PIL explains)."""
    for ext, scan in (("jpg", _scan_jpeg), ("png", _scan_png)):
        found = scan(data)
        if found is not None:
            width, height, complete = found
            if not complete:
                raise Reject("bad_image", f"{ext.upper()} stream is incomplete (truncated)", file_name)
            return ext, width, height
    return None


def check_image_bytes(
    data: bytes, file_name: str, max_pixels: int = DEFAULT_MAX_PIXELS, check: str = "decode"
) -> ImageData:
    """Sniff, size-check and verify ``data`` (``check``: decode | markers); returns the stored bytes.

    The verdict is cached by sha256 (once per distinct image per process); a cached rejection is
    re-raised with this call's file name, so the reject line is the same with or without the cache.
    """
    sha = hashlib.sha256(data).hexdigest()
    cache_key = (sha, check, max_pixels)
    verdict = _VERDICTS.get(cache_key)
    if verdict is None:
        try:
            verdict = _verify(data, max_pixels, check)
        except Reject as exc:
            verdict = exc
        if len(_VERDICTS) >= _VERDICT_CACHE_SIZE:
            _VERDICTS.clear()
        _VERDICTS[cache_key] = verdict
    if isinstance(verdict, Reject):
        raise Reject(verdict.code, f"{file_name}: {verdict.detail}", file_name)
    ext, width, height = verdict
    patched, orientation = neutralise_orientation(data, ext)
    if patched is not data:
        sha = hashlib.sha256(patched).hexdigest()
    return ImageData(patched, ext, width, height, sha, file_name, orientation)


#: sha256 -> (ext, width, height) or the Reject: each distinct image is verified once per process
_VERDICTS: dict[tuple[str, str, int], tuple[str, int, int] | Reject] = {}
_VERDICT_CACHE_SIZE = 200_000


def _verify(data: bytes, max_pixels: int, check: str) -> tuple[str, int, int]:
    """(ext, width, height) of a complete, decodable image; raises Reject (details without a file name)."""
    found = _check_structure(data, None) if check == "markers" else None
    if found is not None:
        ext, width, height = found
        _check_pixels(width, height, max_pixels)
        return ext, width, height
    return _decode_check(data, max_pixels, strict_jpeg=check == "decode")


def _check_pixels(width: int, height: int, max_pixels: int, file_name: str | None = None) -> None:
    if width * height > max_pixels:
        prefix = f"{file_name}: " if file_name else ""
        raise Reject(
            "decompression_bomb", f"{prefix}{width}x{height} exceeds the {max_pixels:,}-pixel limit", file_name
        )


def _decode_check(data: bytes, max_pixels: int, strict_jpeg: bool = True) -> tuple[str, int, int]:
    """Header via PIL, pixel limit, then a strict 1/8-scale libjpeg-turbo decode (PIL for PNGs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            fmt = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Reject("decompression_bomb", str(exc)) from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, SyntaxError, ValueError...
        raise Reject("bad_image", f"not a readable image ({_no_address(exc)})") from exc
    if fmt not in _FORMATS:
        raise Reject("bad_image", f"format {fmt} is not JPEG or PNG")
    _check_pixels(width, height, max_pixels)
    try:
        if fmt == "JPEG" and strict_jpeg:
            _strict_jpeg_decode(data, image.mode)
        else:
            if fmt == "JPEG":
                image.draft(
                    image.mode if image.mode in ("L", "RGB") else "RGB", (max(1, width // 8), max(1, height // 8))
                )
            image.load()
    except Exception as exc:
        raise Reject("bad_image", f"decoding failed ({_no_address(exc)})") from exc
    return _FORMATS[fmt], width, height


def _strict_jpeg_decode(data: bytes, mode: str) -> None:
    """libjpeg-turbo at 1/8 scale with warnings as errors ("Corrupt JPEG data: N extraneous bytes")."""
    import simplejpeg

    colorspace = {"L": "GRAY", "CMYK": "CMYK"}.get(mode, "RGB")
    simplejpeg.decode_jpeg(
        data, colorspace=colorspace, fastdct=True, min_height=1, min_width=1, min_factor=8, strict=True
    )


def _no_address(exc: BaseException) -> str:
    """An exception's message without object addresses (reject lines are byte-identical across runs)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))


# ---- EXIF orientation -------------------------------------------------------------------------
_ORIENTATION_TAG = 0x0112


def neutralise_orientation(data: bytes, ext: str) -> tuple[bytes, int | None]:
    """(bytes with the EXIF orientation set to 1, the original value or None when there is no tag).

    The tag's two bytes are rewritten in place (PNG: and the eXIf chunk's CRC), so nothing else in
    the file changes; bytes without a tag, or already at 1, are returned as the same object.
    """
    found = _jpeg_exif(data) if ext == "jpg" else _png_exif(data)
    if found is None:
        return data, None
    start, end, crc_at = found
    located = _orientation_offset(data, start, end)
    if located is None:
        return data, None
    offset, little = located
    value = int.from_bytes(data[offset : offset + 2], "little" if little else "big")
    if value == 1:
        return data, 1
    patched = bytearray(data)
    patched[offset : offset + 2] = (1).to_bytes(2, "little" if little else "big")
    if crc_at is not None:  # PNG chunk CRC covers the chunk type and data
        import zlib

        patched[crc_at : crc_at + 4] = zlib.crc32(bytes(patched[start - 4 : end])).to_bytes(4, "big")
    return bytes(patched), value


def _jpeg_exif(data: bytes) -> tuple[int, int, None] | None:
    """(start, end) of the TIFF block of the first APP1 Exif segment before the scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
            return pos + 10, min(len(data), pos + 2 + length), None
        pos += 2 + length
    return None


def _png_exif(data: bytes) -> tuple[int, int, int] | None:
    """(start, end, crc offset) of the eXIf chunk's data."""
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            start = pos + 8
            end = start + length
            return (start, end, end) if end + 4 <= len(data) else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _orientation_offset(data: bytes, start: int, end: int) -> tuple[int, bool] | None:
    """Offset of IFD0's orientation value (a SHORT) inside the TIFF block, and its byte order."""
    tiff = data[start:end]
    if tiff[:4] not in (b"II*\0", b"MM\0*"):
        return None
    little = tiff[:2] == b"II"
    order = "little" if little else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[entry : entry + 2], order) == _ORIENTATION_TAG:
            kind = int.from_bytes(tiff[entry + 2 : entry + 4], order)
            return (start + entry + 8, little) if kind == 3 else None
    return None


# ---- symlinks ---------------------------------------------------------------------------------
#: realpath(data root) -> extra real roots that symlinks under it may lead into
_TRUSTED: dict[str, tuple[str, ...]] = {}


def trust_roots(root: Path, extra: tuple[str, ...]) -> None:
    """Let symlinks under ``root`` lead into ``extra`` (absolute real paths) for this process."""
    _real_dir.cache_clear()  # folders may have been re-linked since the last build in this process
    _TRUSTED[os.path.realpath(root)] = tuple(os.path.realpath(p) for p in extra)


def link_targets(root: Path, rels: list[str]) -> list[str]:
    """Real targets of the configured paths (and their folders) that are symlinks out of ``root``.

    Data roots are assembled from links (``DATA/coco -> /mnt/coco``): those the recipe's paths go
    through are trusted; a link found deeper inside a release is not.
    """
    real_root = os.path.realpath(root)
    targets: set[str] = set()
    for rel in rels:
        parts = PurePosixPath(rel).parts
        for n in range(1, len(parts) + 1):
            path = root.joinpath(*parts[:n])
            if path.is_symlink():
                target = os.path.realpath(path)
                if not _inside(target, (real_root,)):
                    targets.add(target)
    return sorted(targets)


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


@functools.lru_cache(maxsize=4096)
def _real_dir(path: str) -> str:
    """realpath of a directory, cached per process (a build reads thousands of files per folder)."""
    return os.path.realpath(path)


def _realpath(path: Path) -> str:
    """realpath with the folder part cached: one lstat per file instead of one per path component."""
    parent, name = os.path.split(str(path))
    if os.path.islink(path) or name in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(_real_dir(parent), name)


def checked_path(root: Path, rel: str) -> Path:
    """``root/rel`` after the symlink policy: its real path must be inside the root or a trusted root."""
    path = root / rel
    real = _realpath(path)
    real_root = _real_dir(str(root))
    if _inside(real, (real_root,)) or _inside(real, _TRUSTED.get(real_root, ())):
        return path
    raise Reject(
        "unsafe_path",
        f"{rel} is a symlink to {real}, outside the data root (trust it with --link-root {os.path.dirname(real)})",
        rel,
    )


def read_image(root: Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS, check: str = "decode") -> ImageData:
    """Read and check ``root/rel``; ``rel`` must stay inside ``root``."""
    rel = safe_relpath(rel)
    try:
        data = checked_path(root, rel).read_bytes()
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
