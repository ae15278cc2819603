"""Image checks: truncation (caught by decoding, not verify), non-images, bombs, unsafe paths."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from fclm_data.errors import Reject
from fclm_data.images import check_image_bytes, read_image, safe_relpath


def _jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_good_jpeg_and_png() -> None:
    image = check_image_bytes(_jpeg(), "a.jpg")
    assert (image.ext, image.width, image.height) == ("jpg", 64, 48)
    buf = io.BytesIO()
    Image.new("RGB", (5, 7)).save(buf, "PNG")
    assert check_image_bytes(buf.getvalue(), "a.png").ext == "png"


def test_truncated_jpeg_is_caught_by_decoding_where_verify_passes() -> None:
    data = _jpeg()[:-200]
    Image.open(io.BytesIO(data)).verify()  # header-only check does not notice
    with pytest.raises(Reject) as info:
        check_image_bytes(data, "cut.jpg")
    assert info.value.code == "bad_image" and "cut.jpg" in info.value.detail


@pytest.mark.parametrize("data", [b"not an image at all", b"", b"GIF89a" + b"\0" * 20])
def test_non_images(data: bytes) -> None:
    with pytest.raises(Reject) as info:
        check_image_bytes(data, "x.jpg")
    assert info.value.code == "bad_image"


def test_decompression_bomb() -> None:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 MP in ~20 KB
    with pytest.raises(Reject) as info:
        check_image_bytes(buf.getvalue(), "bomb.png")
    assert info.value.code == "decompression_bomb"
    with pytest.raises(Reject) as info:
        check_image_bytes(_jpeg((200, 200)), "small-limit.jpg", max_pixels=10_000)
    assert info.value.code == "decompression_bomb"


@pytest.mark.parametrize("name", ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "C:\\x.jpg", "a\\..\\..\\b.jpg"])
def test_unsafe_paths_never_leave_the_root(name: str, tmp_path: Path) -> None:
    (tmp_path / "secret.jpg").write_bytes(_jpeg())
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(Reject) as info:
        read_image(root, name)
    assert info.value.code == "unsafe_path"


def test_missing_image_and_normalised_names(tmp_path: Path) -> None:
    with pytest.raises(Reject) as info:
        read_image(tmp_path, "coco/nope.jpg")
    assert info.value.code == "missing_image"
    assert safe_relpath("./coco//train2014/./a.jpg") == "coco/train2014/a.jpg"


@pytest.mark.parametrize("cut", [1, 10, 200, 2000])
def test_marker_check_catches_truncation_without_decoding(cut: int) -> None:
    data = _jpeg((120, 90))
    assert check_image_bytes(data, "ok.jpg", check="markers").width == 120
    with pytest.raises(Reject) as info:
        check_image_bytes(data[:-cut], "cut.jpg", check="markers")
    assert info.value.code == "bad_image" and "incomplete" in info.value.detail
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 30).save(buf, "PNG")
    png = buf.getvalue()
    assert check_image_bytes(png, "ok.png", check="markers").ext == "png"
    with pytest.raises(Reject):
        check_image_bytes(png[:-cut], "cut.png", check="markers")


def test_marker_check_accepts_progressive_and_exif_jpegs() -> None:
    buf = io.BytesIO()
    image = Image.effect_noise((80, 60), 30).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: an APP1 segment before the scan
    image.save(buf, "JPEG", progressive=True, exif=exif)
    assert check_image_bytes(buf.getvalue(), "p.jpg", check="markers").height == 60


def test_marker_check_reads_the_same_size_as_pil() -> None:
    for size in ((64, 48), (1, 1), (333, 17)):
        for fmt in ("JPEG", "PNG"):
            buf = io.BytesIO()
            Image.effect_noise(size, 20).convert("RGB").save(buf, fmt)
            fast = check_image_bytes(buf.getvalue(), "x", check="markers")
            slow = check_image_bytes(buf.getvalue(), "x", check="decode")
            assert (fast.ext, fast.width, fast.height) == (slow.ext, slow.width, slow.height)
    with pytest.raises(Reject) as info:  # not an image: the decode path explains
        check_image_bytes(b"plain text", "x.jpg", check="markers")
    assert info.value.code == "bad_image"


def test_exif_orientation_is_set_to_1_in_place_for_jpeg_and_png() -> None:
    import io

    import numpy as np
    from PIL import Image, ImageOps

    from fclm_data.images import check_image_bytes

    pixels = Image.fromarray(np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3))
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png")):
        exif = Image.Exif()
        exif[0x0112] = 8
        buf = io.BytesIO()
        pixels.save(buf, fmt, exif=exif.tobytes())
        data = buf.getvalue()
        assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (48, 64)  # a reader would rotate it
        image = check_image_bytes(data, f"x.{ext}")
        assert (image.ext, image.exif_orientation, len(image.data)) == (ext, 8, len(data))
        fixed = Image.open(io.BytesIO(image.data))
        fixed.load()  # PNG: the eXIf chunk's CRC was redone
        assert fixed.getexif()[0x0112] == 1 and ImageOps.exif_transpose(fixed).size == (64, 48)
        assert np.array_equal(np.asarray(fixed), np.asarray(Image.open(io.BytesIO(data))))
        assert sum(a != b for a, b in zip(image.data, data)) <= 5  # two tag bytes (+ 4 CRC bytes for PNG)
        again = check_image_bytes(image.data, f"x.{ext}")
        assert again.data is image.data and again.exif_orientation == 1
    plain = io.BytesIO()
    pixels.save(plain, "JPEG")
    assert check_image_bytes(plain.getvalue(), "y.jpg").exif_orientation is None
