"""skinlesion.data.images: every bad image is refused naming the file; modes, orientation, stats."""

from __future__ import annotations

import hashlib
import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageFilter

from skinlesion.data.images import bytes_sha256, file_sha256, image_stats, load_image
from skinlesion.errors import ImageError
from skinlesion.store import IMAGE_STAT_COLUMNS


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise_jpeg(w: int = 120, h: int = 90) -> bytes:
    rng = np.random.default_rng(0)
    return _encode(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), "JPEG")


def _corrupt_png() -> bytes:
    """A PNG whose compressed pixel data is garbage (valid header and chunk CRC)."""
    data = _encode(Image.new("RGB", (64, 48), (200, 120, 90)))
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    garbage = bytes(range(256)) * (length // 256 + 1)
    body = garbage[:length]
    crc = zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
    return data[:start] + body + crc + data[start + length + 4:]


BAD_FILES = {
    "empty.jpg": (b"", "empty"),
    "notes.jpg": (b"these are clinical notes, not a picture", "not an image"),
    "cut.jpg": (_noise_jpeg()[:2000], "truncated"),
    "garbled.png": (_corrupt_png(), "corrupt"),
    "tiny.png": (_encode(Image.new("RGB", (12, 40))), "12x40"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_image_file_is_refused_naming_the_file(tmp_path, name):
    data, words = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=words) as info:
        load_image(path)
    assert info.value.source == str(path)
    assert name in str(info.value)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_upload_is_refused_under_its_name(name):
    data, words = BAD_FILES[name]
    with pytest.raises(ImageError, match=words) as info:
        load_image(data, name=f"upload-{name}")
    assert info.value.source == f"upload-{name}"


def test_truncation_is_caught_even_with_pil_tolerance_switched_on(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="truncated"):
        load_image(_noise_jpeg()[:2000], name="cut.jpg")
    assert load_image(_noise_jpeg(), name="whole.jpg").size == (120, 90)  # no false alarm


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageError, match="not found") as info:
        load_image(tmp_path / "absent.jpg")
    assert info.value.source == str(tmp_path / "absent.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_file_over_the_byte_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(_noise_jpeg())
    with pytest.raises(ImageError, match="MiB limit"):
        load_image(path, max_bytes=1000)
    with pytest.raises(ImageError, match="MiB limit"):
        load_image(path.read_bytes(), max_bytes=1000)


def test_decompression_bomb_is_refused_with_our_message(monkeypatch):
    flat = _encode(Image.new("L", (400, 300)))  # 120,000 pixels in a few hundred bytes
    assert len(flat) < 2000
    with pytest.raises(ImageError, match="decompression bomb") as info:
        load_image(flat, name="bomb.png", max_pixels=100_000)
    assert "400x300" in str(info.value)
    # PIL's own guard (warning above MAX_IMAGE_PIXELS, error above twice that) becomes our error too
    for limit in (100_000, 50_000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ImageError, match="decompression bomb"):
            load_image(flat, name="bomb.png", max_pixels=10**9)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_colour_modes_become_rgb(mode):
    rgb = Image.new("RGB", (40, 30), (180, 110, 70))
    if mode == "I;16":
        src = Image.fromarray(np.full((30, 40), 257 * 128, dtype=np.uint16))
        expected = (128, 128, 128)
    elif mode == "1":
        src = Image.new("1", (40, 30), 1)
        expected = (255, 255, 255)
    else:
        src = rgb.convert(mode)
        expected = src.convert("RGB").getpixel((5, 5))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_encode(src, fmt), name=f"x.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.allclose(out.getpixel((5, 5)), expected, atol=3)


def test_transparent_pixels_are_composited_on_black():
    img = Image.new("RGBA", (32, 32), (250, 250, 250, 0))
    img.paste((200, 100, 50, 255), (0, 0, 16, 32))
    out = load_image(_encode(img), name="cutout.png")
    assert out.getpixel((4, 4)) == (200, 100, 50)
    assert out.getpixel((28, 4)) == (0, 0, 0)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 40))  # left half red
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = load_image(_encode(img, "JPEG", exif=exif, quality=95), name="phone.jpg")
    assert out.size == (40, 60)
    top, bottom = np.asarray(out)[5, 20], np.asarray(out)[55, 20]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red now on top


def test_path_str_and_bytes_give_the_same_image(tmp_path):
    path = tmp_path / "lesion.jpg"
    path.write_bytes(_noise_jpeg())
    a, b, c = load_image(path), load_image(str(path)), load_image(path.read_bytes())
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a),
                                                                           np.asarray(c))


def _textured(level: float) -> Image.Image:
    rng = np.random.default_rng(1)
    base = np.full((120, 160, 3), level, dtype=np.float64)
    base += rng.normal(0, 25, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def test_stats_follow_planted_differences():
    dark, bright = image_stats(_textured(60)), image_stats(_textured(200))
    assert set(dark) == set(IMAGE_STAT_COLUMNS)
    assert all(isinstance(v, float) for v in dark.values())
    assert dark["width"] == 160.0 and dark["height"] == 120.0
    assert dark["brightness"] < 0.3 < 0.7 < bright["brightness"]

    sharp = _textured(128)
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    assert image_stats(blurred)["sharpness"] < 0.2 * image_stats(sharp)["sharpness"]
    assert image_stats(blurred)["contrast"] < image_stats(sharp)["contrast"]

    grey, red = Image.new("RGB", (50, 50), (128, 128, 128)), Image.new("RGB", (50, 50), (230, 20, 20))
    assert image_stats(grey)["saturation"] == pytest.approx(0.0, abs=1e-6)
    assert image_stats(red)["saturation"] > 0.9
    assert image_stats(red)["mean_r"] == pytest.approx(230 / 255, abs=0.01)
    assert image_stats(red)["mean_g"] == pytest.approx(20 / 255, abs=0.01)
    assert image_stats(grey)["sharpness"] == pytest.approx(0.0, abs=1e-9)


def test_hashes_are_content_sha256(tmp_path):
    data = _noise_jpeg()
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == bytes_sha256(data) == expected
    assert bytes_sha256(data + b"\0") != expected
