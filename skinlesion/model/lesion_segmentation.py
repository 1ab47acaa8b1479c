"""Lesion segmentation for the rule-based fallback (skinlesion.model.fallback), at a fixed working
resolution (long side :data:`WORK_SIZE` px) so that the ABCD features computed on it
(skinlesion.model.abcd) mean the same thing whatever the camera resolution.

:func:`segment_lesion` removes the dark vignette of the dermatoscope, suppresses hairs (grey
closing), Otsu-thresholds a darkness channel inside the field of view, cleans with morphology and
keeps the largest component nearest the centre; a central ellipse (flagged) stands in when that
fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, morphology

#: Long side (px) of the working resolution every feature is computed at.
WORK_SIZE = 256


# --- working resolution ---------------------------------------------------------------------------


def as_rgb(img: Image.Image | np.ndarray) -> Image.Image:
    """A PIL RGB image from a PIL image or a uint8 array (h, w) or (h, w, 3)."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 RGB (0-255), got dtype {img.dtype}; "
                             "pass a PIL image or convert with (x * 255).astype(np.uint8)")
        return Image.fromarray(np.ascontiguousarray(img)).convert("RGB")
    return img.convert("RGB")


def _work_shape(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the working image: long side WORK_SIZE, aspect kept."""
    scale = WORK_SIZE / max(width, height)
    return max(8, round(width * scale)), max(8, round(height * scale))


def to_work(img: Image.Image | np.ndarray) -> np.ndarray:
    """The image at working resolution as uint8 RGB, shape (h, w, 3)."""
    pil = as_rgb(img)
    return np.asarray(pil.resize(_work_shape(*pil.size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to ``size`` = (width, height)."""
    if mask.shape[::-1] == size:
        return mask.astype(bool)
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)
    return np.asarray(resized) > 127


# --- segmentation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segmentation:
    """A lesion mask at working resolution, the dermatoscope's field of view, and whether the
    central-ellipse fallback stood in for a failed segmentation."""

    mask: np.ndarray
    field_of_view: np.ndarray
    fallback: bool


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """Pixels inside the dermatoscope's field of view: everything but the near-black vignette that
    touches the image corners (grown a little to drop its dim rim). ``rgb`` is uint8."""
    dark = rgb.max(axis=2) < 38
    labels, _ = ndi.label(dark)
    h, w = dark.shape
    k = max(2, min(h, w) // 40)
    corners = np.concatenate([labels[:k, :k].ravel(), labels[:k, -k:].ravel(),
                              labels[-k:, :k].ravel(), labels[-k:, -k:].ravel()])
    vignette = np.isin(labels, np.unique(corners[corners > 0]))
    if not vignette.any():
        return np.ones((h, w), bool)
    grow = max(3, min(h, w) // 30)
    return ndi.distance_transform_cdt(~vignette, metric="chessboard") > grow


def rim(fov: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px of the edge of the field of view or of the image."""
    padded = np.pad(fov, 1)
    return (ndi.distance_transform_cdt(padded, metric="chessboard") <= width)[1:-1, 1:-1]


def central_ellipse(shape: tuple[int, int]) -> np.ndarray:
    """A centred ellipse spanning the middle half of each axis: the stand-in lesion."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return ((yy - (h - 1) / 2) / (h / 4)) ** 2 + ((xx - (w - 1) / 2) / (w / 4)) ** 2 <= 1.0


def stand_in(fov: np.ndarray) -> Segmentation:
    """The flagged central-ellipse segmentation, clipped to the field of view when they overlap."""
    ellipse = central_ellipse(fov.shape)
    clipped = ellipse & fov
    return Segmentation(clipped if clipped.any() else ellipse, fov, True)


def _darkness(rgb: np.ndarray) -> np.ndarray:
    """Channel in which the lesion is bright: inverted blue (pigment absorbs blue light most),
    after a grey closing that erases thin dark hairs, lightly smoothed."""
    blue = ndi.grey_closing(rgb[..., 2], size=(7, 7)).astype(np.float32) / 255.0
    return ndi.gaussian_filter(1.0 - blue, 1.0)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: background components that do not reach the image edge
    (same result as ``ndi.binary_fill_holes``, by one labelling instead of iterated dilations)."""
    background, _ = ndi.label(~mask)
    edge = np.unique(np.concatenate([background[0], background[-1], background[:, 0],
                                     background[:, -1]]))
    return mask | ~np.isin(background, edge)


def segment_work(rgb: np.ndarray) -> Segmentation:
    """Segment the lesion in a working-resolution uint8 RGB image (see :func:`segment_lesion`)."""
    h, w = rgb.shape[:2]
    fov = field_of_view(rgb)
    fov_area = int(fov.sum())
    if fov_area < 0.2 * h * w:  # (almost) all black: no usable field of view
        return stand_in(np.ones((h, w), bool))
    dark = _darkness(rgb)
    values = dark[fov]
    if float(values.max() - values.min()) < 0.05:  # flat image: nothing stands out
        return stand_in(fov)
    candidate = (dark > filters.threshold_otsu(values)) & fov
    candidate = _fill_holes(ndi.binary_opening(candidate, structure=morphology.disk(2)))
    labels, n = ndi.label(candidate)
    if n == 0:
        return stand_in(fov)
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    yy, xx = np.mgrid[:h, :w]
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:] / areas
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:] / areas
    dist = np.hypot((cy - (h - 1) / 2) / h, (cx - (w - 1) / 2) / w) / np.hypot(0.5, 0.5)
    # share of each component's outline on the rim of the view (image edge or vignette): a darker
    # periphery or shading runs along the rim, a lesion mostly does not
    outline = labels * (candidate & ~ndi.binary_erosion(candidate))
    on_rim = np.bincount(outline[rim(fov, 2)], minlength=n + 1)[1:]
    touch = on_rim / np.maximum(np.bincount(outline.ravel(), minlength=n + 1)[1:], 1)
    best = 1 + int(np.argmax(areas * (1.0 - dist) ** 2 * (1.0 - touch) ** 2))
    mask = labels == best
    share = areas[best - 1] / fov_area
    if share < 0.005 or share > 0.9:
        return stand_in(fov)
    return Segmentation(mask, fov, False)


def segment_lesion(img: Image.Image | np.ndarray) -> np.ndarray:
    """Boolean lesion mask of a dermoscopy image, same height and width as the image.

    Runs at the working resolution (long side 256 px; ~10-20 ms an image): vignette removal, hair
    closing, Otsu on inverted blue, opening + hole filling, then the largest component nearest the
    centre and away from the rim. When nothing plausible is found (no lesion, < 0.5% or > 90% of the
    view) a central ellipse stands in; :func:`segment_work` also says whether that happened."""
    pil = as_rgb(img)
    return resize_mask(segment_work(to_work(pil)).mask, pil.size)
