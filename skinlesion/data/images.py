"""Load images safely and describe them with a few numbers.

:func:`load_image` is the one door every image goes through (datasets, the API, the dashboard): it
returns a fully decoded RGB :class:`PIL.Image.Image` or raises :class:`~skinlesion.errors.ImageError`
naming the file and the fix. It accepts the :data:`ACCEPTED_FORMATS` only (what the API advertises:
JPEG, including a phone's multi-picture JPEG, and single-frame PNG); it refuses empty, oversized,
non-image, animated, truncated and corrupt files, decompression bombs and images too small to hold a
lesion; it converts every colour mode to 8-bit RGB and applies the EXIF orientation, so a phone photo
is seen the way the clinician saw it. What the conversion loses is kept as caveats
(:func:`image_caveats`): a greyscale or high-bit-depth original is answered ``uncertain`` with that
reason, since the models were trained on 8-bit colour dermoscopy.

:func:`read_header` reads the format, mode and size without decoding a pixel (the API uses it to
refuse early and to reserve memory for the decode).

:func:`image_stats` gives the image statistics stored with every prediction (the monitoring layer
watches them for drift: a new camera, darker lighting, blur); :func:`file_sha256` /
:func:`bytes_sha256` identify images by content.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from skinlesion.errors import ImageError, ImageFormatError

#: The image formats accepted everywhere (PIL's names); the API advertises exactly these.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG")
#: PIL formats read as one of :data:`ACCEPTED_FORMATS`: a phone's multi-picture JPEG (MPO) is a JPEG
#: whose first picture is the photo.
_FORMAT_ALIASES = {"MPO": "JPEG"}
MAX_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 16
#: Long side (px) :func:`image_stats` measures at.
STATS_SIZE = 256
#: Name used in errors for an image given as bytes without a name (an upload).
UPLOAD_NAME = "uploaded image"

# What PIL raises for a broken file, depending on the format plugin and where the damage is.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"}) | _SIXTEEN_BIT_MODES
_HIGH_BIT_MODES = frozenset({"I", "F"}) | _SIXTEEN_BIT_MODES
#: Where :func:`load_image` keeps the caveats of the decoded image (in ``Image.info``).
CAVEATS_INFO_KEY = "skinlesion_caveats"
#: Largest difference between colour channels (0-255) of a greyscale picture stored as colour
#: (JPEG's chroma rounding leaves a little).
_GREY_SPREAD = 3
#: Side (px) the colour check looks at.
_GREY_CHECK_SIDE = 64


@dataclass(frozen=True)
class ImageHeader:
    """What an image file says about itself before any pixel is decoded."""

    format: str
    mode: str
    width: int
    height: int
    frames: int
    high_bit_depth: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height
# ITU-R BT.601 luma weights: the same ones PIL uses for convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class _WatchedBytes(io.BytesIO):
    """In-memory file that records a sized read hitting the end of the data.

    PIL's decoders ask for more bytes when an image is cut short; with
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` switched on anywhere in the process they then silently fill
    the rest with grey. Watching the reads catches truncation whatever that process-wide switch says.
    """

    read_past_end = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        if size is not None and size > 0 and not data:
            self.read_past_end = True
        return data


def load_image(source: Path | str | bytes, *, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> Image.Image:
    """Read ``source`` (a file path or the file's bytes) into a fully decoded 8-bit RGB image.

    ``name`` is what errors call the image (default: the path, or "uploaded image" for bytes).
    Raises :class:`ImageError` (``source`` = that name) when the file is missing, empty, larger than
    ``max_bytes``, not an image, truncated or corrupt, has more than ``max_pixels`` pixels (a
    decompression bomb: a small file that would expand to gigabytes), or a side under ``min_side``.
    Alpha is composited on black (the dermatoscope's dark surround), 16-bit and float images are
    rescaled to 8 bits, and the EXIF orientation tag is applied.
    """
    label = name or (UPLOAD_NAME if isinstance(source, bytes | bytearray) else str(source))
    data = _read_bytes(source, label, max_bytes)
    stream = _WatchedBytes(data)
    img = _open(stream, label, max_pixels)
    header = _header(img)
    try:
        img.load()  # force the full decode: Image.open only reads the header
    except _DECODE_ERRORS as err:
        raise ImageError(f"the image data is truncated or corrupt ({err}); re-export or re-upload "
                         "the original file", source=label) from err
    if stream.read_past_end:
        raise ImageError("the image file is truncated (it ends before the image data does); "
                         "re-export or re-upload the complete file", source=label)
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no second full-size copy
    except _DECODE_ERRORS as err:
        raise ImageError(f"the EXIF orientation data is corrupt ({err}); re-export the image "
                         "without EXIF data", source=label) from err
    rgb = _to_rgb(img)
    if min(rgb.size) < min_side:
        raise ImageError(f"the image is {rgb.width}x{rgb.height} pixels; at least {min_side} pixels "
                         "per side are needed to show a lesion, send the full-resolution image",
                         source=label)
    rgb.info[CAVEATS_INFO_KEY] = tuple(_caveats(header, rgb))
    return rgb


def read_header(data: bytes, *, name: str = UPLOAD_NAME,
                max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """The header of the image file ``data``, no pixel decoded. Raises what :func:`load_image`
    raises for a file that is not an image, in a format not accepted, animated, or over
    ``max_pixels``."""
    if not data:
        raise ImageError("the file is empty (0 bytes); re-export or re-upload the image",
                         source=name)
    return _header(_open(io.BytesIO(data), name, max_pixels))


def image_caveats(img: Image.Image) -> list[str]:
    """Why an image decoded by :func:`load_image` is not what the models were trained on (a
    greyscale or high-bit-depth original); empty for an 8-bit colour image or one not from
    :func:`load_image`."""
    return list(img.info.get(CAVEATS_INFO_KEY, ()))


def _header(img: Image.Image) -> ImageHeader:
    rawmodes = " ".join(str(tile.args) for tile in getattr(img, "tile", ()) or ())
    return ImageHeader(format=_FORMAT_ALIASES.get(img.format or "", img.format or "unknown"),
                       mode=img.mode, width=img.width, height=img.height,
                       frames=int(getattr(img, "n_frames", 1)),
                       high_bit_depth=img.mode in _HIGH_BIT_MODES or ";16" in rawmodes)


def _caveats(header: ImageHeader, rgb: Image.Image) -> list[str]:
    """The caveats of a decoded image (see :func:`image_caveats`)."""
    caveats = []
    if header.mode in _GREY_MODES or _looks_grey(rgb):
        caveats.append(f"greyscale image (mode {header.mode}); the model was trained on colour "
                       "dermoscopy, send the colour original")
    if header.high_bit_depth:
        caveats.append("high-bit-depth image (16-bit or float) reduced to 8 bits; the model was "
                       "trained on 8-bit images, send an 8-bit export")
    return caveats


def _looks_grey(rgb: Image.Image) -> bool:
    """Whether a colour image holds grey pixels only (checked on a box-reduced copy)."""
    factor = max(1, min(rgb.size) // _GREY_CHECK_SIDE)
    small = np.asarray(rgb.reduce(factor), dtype=np.int16)
    return int((small.max(axis=2) - small.min(axis=2)).max()) <= _GREY_SPREAD


def _read_bytes(source: Path | str | bytes, label: str, max_bytes: int) -> bytes:
    """The file's bytes, refusing missing, unreadable, empty and oversized files."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageError(_too_big(size, max_bytes), source=label)
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ImageError("file not found; check the path", source=label) from None
        except IsADirectoryError:
            raise ImageError("this is a folder, not an image file", source=label) from None
        except PermissionError:
            raise ImageError("the file cannot be read (permission denied)", source=label) from None
    if not data:
        raise ImageError("the file is empty (0 bytes); re-export or re-upload the image",
                         source=label)
    if len(data) > max_bytes:
        raise ImageError(_too_big(len(data), max_bytes), source=label)
    return data


def _too_big(size: int, max_bytes: int) -> str:
    return (f"the file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
            "send a JPEG or PNG export of the image")


def _open(stream: io.BytesIO, label: str, max_pixels: int) -> Image.Image:
    """Read the header; refuse non-images and images with more than ``max_pixels`` pixels.

    PIL's own bomb guard (a warning above ``Image.MAX_IMAGE_PIXELS``, an error above twice that)
    is turned into our error; our lower ``max_pixels`` limit is checked from the header, before
    any pixel is decoded. (``catch_warnings`` is process-wide in Python 3.11; were another thread to
    reset the filter meanwhile, the header check below still refuses the image.)
    """
    bomb = (f"the image would decode to more than {max_pixels:,} pixels (a decompression bomb or "
            "an uncompressed scan); downscale it to at most a few thousand pixels per side")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(bomb, source=label) from err
    except UnidentifiedImageError as err:
        raise ImageError(f"not an image file (or an unsupported format); send a "
                         f"{' or '.join(ACCEPTED_FORMATS)}", source=label) from err
    except _DECODE_ERRORS as err:
        raise ImageError(f"the image header is corrupt ({err}); re-export the image",
                         source=label) from err
    accepted = " or ".join(ACCEPTED_FORMATS)
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format)
    if fmt not in ACCEPTED_FORMATS:
        raise ImageFormatError(f"{img.format} images are not accepted; send a {accepted} file",
                               source=label)
    if fmt == "PNG" and getattr(img, "n_frames", 1) > 1:
        raise ImageFormatError(f"an animated PNG ({img.n_frames} frames) is not accepted; send one "
                               f"still {accepted} image", source=label)
    if img.width * img.height > max_pixels:
        raise ImageError(f"{img.width}x{img.height}: {bomb}", source=label)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (alpha on black, 16-bit scaled by 1/257, float 0-1 or 0-255)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(img, dtype=np.float32) / 257.0
        return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        scale = 255.0 if np.nanmax(grey, initial=0.0) <= 1.0 else 1.0
        grey = np.nan_to_num(grey * scale + 0.5)
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def image_stats(img: Image.Image) -> dict[str, float]:
    """Summary statistics of an image, the inputs of image-drift monitoring.

    ``width``/``height`` in pixels; ``brightness`` and ``contrast``: mean and standard deviation of
    the BT.601 luminance (0-1); ``saturation``: mean HSV saturation (0-1); ``mean_r``/``mean_g``/
    ``mean_b``: channel means (0-1); ``sharpness``: variance of the Laplacian of the luminance (blur
    lowers it). Everything but the size is measured on the image shrunk to :data:`STATS_SIZE` pixels
    on its long side, the scale the models work at: the numbers then compare across cameras of
    different resolution (blur finer than that scale does not matter to the model) and stay cheap
    for a 12-megapixel phone photo.
    """
    small = img.convert("RGB")
    small.thumbnail((STATS_SIZE, STATS_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    luma = rgb @ _LUMA
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # channel-wise: max(axis=2) is several x slower
    top = np.maximum(np.maximum(r, g), b)
    chroma = top - np.minimum(np.minimum(r, g), b)
    saturation = np.divide(chroma, top, out=np.zeros_like(top), where=top > 0)
    means = rgb.reshape(-1, 3).mean(axis=0)
    return {
        "width": float(img.width),
        "height": float(img.height),
        "brightness": float(luma.mean()),
        "contrast": float(luma.std()),
        "saturation": float(saturation.mean()),
        "mean_r": float(means[0]),
        "mean_g": float(means[1]),
        "mean_b": float(means[2]),
        "sharpness": float(ndimage.laplace(luma).var()),
    }


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's content (read in chunks)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of ``data``; equals :func:`file_sha256` of a file holding those bytes."""
    return hashlib.sha256(data).hexdigest()
