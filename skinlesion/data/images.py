"""Image loading with clear errors, content hashes, and the image statistics drift monitoring uses."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from skinlesion.errors import ImageError

MAX_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 16


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(source: str | Path | bytes, name: str, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError("image file not found", source=name)
        if path.stat().st_size > max_bytes:
            raise ImageError(f"image file is {path.stat().st_size / 2**20:.1f} MiB, over the "
                             f"{max_bytes / 2**20:.0f} MiB limit", source=name)
        data = path.read_bytes()
    if not data:
        raise ImageError("the image is empty (0 bytes)", source=name)
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                         "limit", source=name)
    return data


def load_image(source: str | Path | bytes, *, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> Image.Image:
    """Decode an image fully into RGB, or raise :class:`ImageError` naming the file and the problem.

    Empty, not-an-image, truncated or corrupt files, decompression bombs (more than ``max_pixels``),
    oversized files and images smaller than ``min_side`` pixels are all refused. EXIF orientation is
    applied; palette, grey, RGBA, CMYK and 16-bit images are converted to RGB."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    data = _read(source, name, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageError(f"image is {img.width}x{img.height} pixels, over the "
                                 f"{max_pixels / 1e6:.0f} megapixel limit (decompression bomb?)",
                                 source=name)
            img.load()  # full decode: a truncated file fails here, not later inside the model
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image exceeds the {max_pixels / 1e6:.0f} megapixel limit "
                         "(decompression bomb?)", source=name) from None
    except UnidentifiedImageError:
        raise ImageError("not an image PIL can read (send JPEG or PNG)", source=name) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"the image is truncated or corrupt ({err})", source=name) from None
    if min(img.size) < min_side:
        raise ImageError(f"image is {img.width}x{img.height} pixels; at least {min_side} pixels per "
                         "side are needed", source=name)
    img = ImageOps.exif_transpose(img)
    if img.mode == "I;16" or img.mode.startswith("I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((255 * arr / max(arr.max(), 1)).astype(np.uint8))
    return img.convert("RGB")


def image_stats(img: Image.Image) -> dict[str, float]:
    """Size, brightness, contrast, saturation, mean colour (0-1) and sharpness of an RGB image.

    Sharpness is the variance of the Laplacian of the luminance (0-1 scale), measured on the image
    resized to 256 pixels on its long side so that it does not depend on resolution."""
    w, h = img.size
    small = img.copy()
    small.thumbnail((256, 256))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255.0
    return {
        "width": float(w),
        "height": float(h),
        "brightness": float(lum.mean()),
        "contrast": float(lum.std()),
        "saturation": float(hsv[..., 1].mean()),
        "mean_r": float(rgb[..., 0].mean()),
        "mean_g": float(rgb[..., 1].mean()),
        "mean_b": float(rgb[..., 2].mean()),
        "sharpness": float(ndimage.laplace(lum).var()),
    }
