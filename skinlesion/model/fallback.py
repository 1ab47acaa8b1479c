"""The rule-based fallback model: dermoscopy ABCD features + metadata -> logistic regression.

What clinicians fall back to when the neural model turns red: no neural network, a few dozen
interpretable numbers per image, and an operating threshold chosen for sensitivity.

Pipeline (all at a fixed working resolution, long side :data:`WORK_SIZE` px, so features mean the
same thing whatever the camera resolution):

1. :func:`segment_lesion` — remove the dark vignette of the dermatoscope, suppress hairs (grey
   closing), Otsu-threshold a darkness channel inside the field of view, clean with morphology and
   keep the largest component nearest the centre; a central ellipse (flagged) when that fails.
2. :func:`abcd_features` — the dermoscopy ABCD rule of Stolz (Asymmetry, Border, Colours,
   Differential structures), each as continuous measures and as the classic scores, plus the Total
   Dermoscopy Score ``TDS = 1.3*A + 0.1*B + 0.5*C + 0.5*D``.
3. :class:`ABCDFallback` — standardised features + encoded metadata -> class-balanced multinomial
   logistic regression over the 8 classes; probabilities are put back on the training prevalence
   and temperature-scaled on validation data so they are calibrated; the threshold on p_malignant
   is chosen on validation data for a target sensitivity (0.95 by default).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from PIL import Image, ImageCms
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from skimage import feature, filters, measure, morphology
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from skinlesion import metrics
from skinlesion.calibration import apply_temperature, fit_temperature, threshold_for_sensitivity
from skinlesion.data.images import load_image
from skinlesion.data.metadata import MetadataEncoder
from skinlesion.errors import DataError, SkinLesionError
from skinlesion.metrics import p_malignant
from skinlesion.schema import (
    CLASSES, DEFAULT_MALIGNANT, METADATA_FIELDS, class_index, malignant_mask,
)

#: Long side (px) of the working resolution every feature is computed at.
WORK_SIZE = 256
#: File the fitted state is written to (plain JSON: no pickle is ever loaded).
STATE_FILE = "fallback.json"
ARCHITECTURE = "abcd_rule"

#: Reference colours of the ABCD rule, normalised RGB (Kasmi & Mokrani, IET Image Process. 2016).
ABCD_COLOURS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "red": (0.8, 0.2, 0.2),
    "light_brown": (0.6, 0.4, 0.0),
    "dark_brown": (0.2, 0.0, 0.0),
    "blue_grey": (0.2, 0.6, 0.6),
    "black": (0.0, 0.0, 0.0),
}
COLOUR_SHARE = 0.05  # a colour counts as present when it covers at least 5% of the lesion
N_SECTORS = 8

#: One line per feature, in the order of :func:`abcd_features` (the model's ABCD input columns).
FEATURE_DOCS: dict[str, str] = {
    "seg_fallback": "1 when segmentation failed and a central ellipse stands in for the lesion",
    "asym_major": "shape mismatch (0-1) of the lesion with its mirror image about the major axis",
    "asym_minor": "shape mismatch (0-1) of the lesion with its mirror image about the minor axis",
    "asym_colour": "largest CIELAB distance (/100) between the mean colours of the two halves",
    "A_score": "Stolz asymmetry 0-2: axes with shape mismatch > 0.15 or colour distance > 0.10",
    "border_compactness": "perimeter^2 / (4*pi*area): 1 for a circle, larger for irregular borders",
    "border_solidity": "lesion area / convex-hull area: below 1 for notched or lobed borders",
    "border_gradient": "mean edge sharpness (L* gradient / lesion-skin L* contrast) on the border",
    "border_gradient_cv": "coefficient of variation of the edge sharpness over the 8 sectors",
    "B_score": "Stolz border 0-8: sectors whose pigment stops abruptly (edge width < 5 px)",
    **{f"colour_{name}": f"share of lesion pixels nearest the ABCD reference colour {name}"
       for name in ABCD_COLOURS},
    "C_score": "Stolz colour 1-6: ABCD colours covering at least 5% of the lesion",
    "colour_std_L": "standard deviation of L* (lightness) inside the lesion",
    "colour_std_a": "standard deviation of a* (green-red) inside the lesion",
    "colour_std_b": "standard deviation of b* (blue-yellow) inside the lesion",
    "contrast_L": "mean L* of the surrounding skin minus mean L* of the lesion",
    "contrast_ab": "CIELAB chroma distance between the lesion's and the skin's mean colours",
    "area_frac": "lesion area as a share of the field of view",
    "diameter_rel": "equivalent-circle diameter of the lesion / image long side",
    "eccentricity": "eccentricity of the lesion's best-fit ellipse (0 = circle)",
    "glcm_contrast": "GLCM contrast of lesion lightness (32 levels, distances 1-2 px, 4 angles)",
    "glcm_homogeneity": "GLCM homogeneity of lesion lightness",
    "glcm_energy": "GLCM energy (uniformity) of lesion lightness",
    "glcm_correlation": "GLCM correlation of lesion lightness",
    "dots_density": "dark dots/globules (black top-hat blobs) per 1000 lesion pixels",
    "structureless_frac": "share of the lesion with low local texture (structureless areas)",
    "D_score": "differential structures 1-4: network, dots, globules, structureless (at least 1)",
    "TDS": "Total Dermoscopy Score 1.3*A + 0.1*B + 0.5*C + 0.5*D (> 5.45 suspicious of melanoma)",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DOCS)


# --- working resolution ---------------------------------------------------------------------------


def _as_rgb(img: Image.Image | np.ndarray) -> Image.Image:
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
    pil = _as_rgb(img)
    return np.asarray(pil.resize(_work_shape(*pil.size), Image.BILINEAR))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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


def _rim(fov: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` px of the edge of the field of view or of the image."""
    padded = np.pad(fov, 1)
    return (ndi.distance_transform_cdt(padded, metric="chessboard") <= width)[1:-1, 1:-1]


def central_ellipse(shape: tuple[int, int]) -> np.ndarray:
    """A centred ellipse spanning the middle half of each axis: the stand-in lesion."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return ((yy - (h - 1) / 2) / (h / 4)) ** 2 + ((xx - (w - 1) / 2) / (w / 4)) ** 2 <= 1.0


def _stand_in(fov: np.ndarray) -> Segmentation:
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
        return _stand_in(np.ones((h, w), bool))
    dark = _darkness(rgb)
    values = dark[fov]
    if float(values.max() - values.min()) < 0.05:  # flat image: nothing stands out
        return _stand_in(fov)
    candidate = (dark > filters.threshold_otsu(values)) & fov
    candidate = _fill_holes(ndi.binary_opening(candidate, structure=morphology.disk(2)))
    labels, n = ndi.label(candidate)
    if n == 0:
        return _stand_in(fov)
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    yy, xx = np.mgrid[:h, :w]
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:] / areas
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:] / areas
    dist = np.hypot((cy - (h - 1) / 2) / h, (cx - (w - 1) / 2) / w) / np.hypot(0.5, 0.5)
    # share of each component's outline on the rim of the view (image edge or vignette): a darker
    # periphery or shading runs along the rim, a lesion mostly does not
    outline = labels * (candidate & ~ndi.binary_erosion(candidate))
    on_rim = np.bincount(outline[_rim(fov, 2)], minlength=n + 1)[1:]
    touch = on_rim / np.maximum(np.bincount(outline.ravel(), minlength=n + 1)[1:], 1)
    best = 1 + int(np.argmax(areas * (1.0 - dist) ** 2 * (1.0 - touch) ** 2))
    mask = labels == best
    share = areas[best - 1] / fov_area
    if share < 0.005 or share > 0.9:
        return _stand_in(fov)
    return Segmentation(mask, fov, False)


def segment_lesion(img: Image.Image | np.ndarray) -> np.ndarray:
    """Boolean lesion mask of a dermoscopy image, same height and width as the image.

    Runs at the working resolution (long side 256 px; ~10-20 ms an image): vignette removal, hair
    closing, Otsu on inverted blue, opening + hole filling, then the largest component nearest the
    centre and away from the rim. When nothing plausible is found (no lesion, < 0.5% or > 90% of the
    view) a central ellipse stands in; :func:`segment_work` also says whether that happened."""
    pil = _as_rgb(img)
    return _resize_mask(segment_work(to_work(pil)).mask, pil.size)


# --- ABCD features --------------------------------------------------------------------------------

_SRGB_TO_LAB = ImageCms.buildTransform(ImageCms.createProfile("sRGB"),
                                       ImageCms.createProfile("LAB"), "RGB", "LAB")


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of a uint8 RGB image (LittleCMS via Pillow; 8-bit precision), float32 (h, w, 3)."""
    out = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb), _SRGB_TO_LAB))
    lab = np.empty(out.shape, np.float32)
    lab[..., 0] = out[..., 0] * np.float32(100.0 / 255.0)
    lab[..., 1:] = out[..., 1:].view(np.int8)
    return lab


_POWER6 = (np.arange(256) / 255.0) ** 6


def _shades_of_grey(rgb: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Colour constancy (shades of grey, Minkowski p=6; Barata et al. 2015): divide out the
    illuminant estimated inside the field of view, so colours compare across cameras and lamps.
    uint8 in, uint8 out."""
    inside = rgb[fov]
    # (mean x^6)^(1/6) per channel, from each channel's histogram of 8-bit values
    power = np.array([np.bincount(inside[:, c], minlength=256) @ _POWER6 for c in range(3)])
    illuminant = np.power(power / len(inside), 1.0 / 6.0)
    illuminant = illuminant / max(float(np.linalg.norm(illuminant)), 1e-6) * np.sqrt(3.0)
    # one lookup table per channel: value / illuminant, clipped to 0-255
    tables = np.clip(np.arange(256)[:, None] / np.maximum(illuminant, 1e-3), 0, 255)
    tables = tables.astype(np.uint8)
    return np.stack([tables[rgb[..., c], c] for c in range(3)], axis=-1)


def _principal_frame(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lesion pixel coordinates relative to the centroid, the centroid, the major/minor unit axes
    (as columns) and their variances (descending)."""
    coords = np.argwhere(mask).astype(np.float64)
    centre = coords.mean(axis=0)
    rel = coords - centre
    cov = np.cov(rel.T) if len(rel) > 2 else np.eye(2)
    variances, axes = np.linalg.eigh(cov)
    return rel, centre, axes[:, ::-1], variances[::-1]


def _mirror_mismatch(mask: np.ndarray, rel: np.ndarray, centre: np.ndarray,
                     normal: np.ndarray) -> float:
    """Share of lesion pixels whose mirror image about the axis with unit ``normal`` falls outside
    the lesion (0 = perfectly symmetric)."""
    mirrored = np.rint(rel - 2.0 * np.outer(rel @ normal, normal) + centre).astype(int)
    h, w = mask.shape
    inside = ((mirrored[:, 0] >= 0) & (mirrored[:, 0] < h)
              & (mirrored[:, 1] >= 0) & (mirrored[:, 1] < w))
    hits = np.zeros(len(rel), bool)
    hits[inside] = mask[mirrored[inside, 0], mirrored[inside, 1]]
    return float(1.0 - hits.mean())


def _asymmetry(mask: np.ndarray, lab: np.ndarray, frame: tuple) -> dict[str, float]:
    rel, centre, axes, _ = frame
    lesion_lab = lab[mask]
    shape, colour = [], []
    for normal in (axes[:, 1], axes[:, 0]):  # mirror about the major axis, then the minor axis
        shape.append(_mirror_mismatch(mask, rel, centre, normal))
        side = rel @ normal > 0
        if side.all() or not side.any():
            colour.append(0.0)
        else:
            delta = lesion_lab[side].mean(axis=0) - lesion_lab[~side].mean(axis=0)
            colour.append(float(np.linalg.norm(delta)) / 100.0)
    a_score = sum(s > 0.15 or c > 0.10 for s, c in zip(shape, colour, strict=True))
    return {"asym_major": shape[0], "asym_minor": shape[1], "asym_colour": max(colour),
            "A_score": float(a_score)}


def _solidity(mask: np.ndarray, outline: np.ndarray) -> float:
    """Lesion area / area of its convex hull (hull of the outline pixels, in whole pixels)."""
    points = np.argwhere(outline)
    if len(points) < 3 or np.linalg.matrix_rank(points - points[0]) < 2:
        return 1.0
    hull = ConvexHull(points)
    return float(min(1.0, mask.sum() / (hull.volume + hull.area / 2.0 + 1.0)))


def _border(mask: np.ndarray, fov: np.ndarray, lightness: np.ndarray, d_in: np.ndarray,
            d_out: np.ndarray) -> dict[str, float]:
    area = float(mask.sum())
    outline = d_in == 1
    gy, gx = np.gradient(ndi.gaussian_filter(lightness, 1.0))
    gradient = np.hypot(gy, gx)
    cy, cx = np.argwhere(mask).mean(axis=0)
    keep = ~_rim(fov, 2)  # where the image or the view cuts the lesion there is no border to judge

    def per_sector(region: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(region & keep)
        sector = ((np.arctan2(ys - cy, xs - cx) + np.pi) / (2 * np.pi) * N_SECTORS).astype(int)
        sector %= N_SECTORS
        count = np.bincount(sector, minlength=N_SECTORS)
        total = np.bincount(sector, weights=values[ys, xs], minlength=N_SECTORS)
        return total / np.maximum(count, 1), count

    edge_grad, n_edge = per_sector(outline | (d_out == 1), gradient)
    inner_l, n_inner = per_sector((d_in >= 1) & (d_in <= 6), lightness)
    outer_l, n_outer = per_sector((d_out >= 1) & (d_out <= 6) & fov, lightness)
    judged = (n_edge > 0) & (n_inner > 0) & (n_outer > 0)
    # edge sharpness = gradient / lesion-skin contrast = 1 / width of the transition in px
    sharpness = edge_grad[judged] / np.maximum(np.abs(outer_l - inner_l)[judged], 5.0)
    mean = float(sharpness.mean()) if len(sharpness) else 0.0
    return {
        "border_compactness": float(measure.perimeter(mask) ** 2 / (4.0 * np.pi * area)),
        "border_solidity": _solidity(mask, outline),
        "border_gradient": mean,
        "border_gradient_cv": float(sharpness.std() / mean) if mean > 0 else 0.0,
        "B_score": float((sharpness > 0.2).sum()),
    }


def _colours(mask: np.ndarray, fov: np.ndarray, rgb: np.ndarray, lab: np.ndarray,
             d_out: np.ndarray) -> dict[str, float]:
    refs = np.array(list(ABCD_COLOURS.values()), dtype=np.float32)
    pixels = rgb[mask].astype(np.float32) / 255.0
    # nearest reference colour: argmin |p - r|^2 = argmin (|r|^2 - 2 p.r)
    nearest = np.argmin((refs * refs).sum(axis=1) - 2.0 * pixels @ refs.T, axis=1)
    shares = np.bincount(nearest, minlength=len(refs)) / len(pixels)
    lesion = lab[mask]
    skin_ring = (d_out >= 1) & (d_out <= 10) & fov
    if skin_ring.sum() >= 10:
        skin = lab[skin_ring].mean(axis=0)
        contrast_l = float(skin[0] - lesion[:, 0].mean())
        contrast_ab = float(np.hypot(*(skin[1:] - lesion[:, 1:].mean(axis=0))))
    else:  # the lesion fills the view: no skin to compare with
        contrast_l = contrast_ab = 0.0
    std = lesion.std(axis=0)
    return {
        **{f"colour_{name}": float(share)
           for name, share in zip(ABCD_COLOURS, shares, strict=True)},
        "C_score": float(max(1, int((shares >= COLOUR_SHARE).sum()))),
        "colour_std_L": float(std[0]), "colour_std_a": float(std[1]), "colour_std_b": float(std[2]),
        "contrast_L": contrast_l, "contrast_ab": contrast_ab,
    }


def _glcm(mask: np.ndarray, lightness: np.ndarray) -> dict[str, float]:
    """GLCM statistics of the lesion only: background gets grey level 0, whose row and column are
    dropped before normalising."""
    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    levels = np.clip(lightness[box] / 100.0 * 31, 0, 30).astype(np.uint8) + 1
    levels[~mask[box]] = 0
    glcm = feature.graycomatrix(levels, [1, 2], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                levels=32, symmetric=True).astype(np.float64)
    glcm[0, :] = 0
    glcm[:, 0] = 0
    total = glcm.sum(axis=(0, 1), keepdims=True)
    glcm = np.divide(glcm, total, out=np.zeros_like(glcm), where=total > 0)
    return {f"glcm_{prop}": float(np.nan_to_num(feature.graycoprops(glcm, prop)).mean())
            for prop in ("contrast", "homogeneity", "energy", "correlation")}


def _structures(mask: np.ndarray, lightness: np.ndarray, d_in: np.ndarray,
                glcm_contrast: float) -> dict[str, float]:
    """Proxies for Stolz's differential structures: dots and globules (small dark blobs from a black
    top-hat), structureless areas (flat local texture) and pigment network (fine-scale contrast)."""
    blobs = (ndi.grey_closing(lightness, size=(7, 7)) - lightness > 8.0) & (d_in > 2)
    labels, n = ndi.label(blobs)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    dots, globules = int(((sizes >= 2) & (sizes < 12)).sum()), int((sizes >= 12).sum())
    mean = ndi.uniform_filter(lightness, 7)
    local_var = ndi.uniform_filter(lightness * lightness, 7) - mean * mean
    structureless = float((local_var[mask] < 2.5 ** 2).mean())
    present = [glcm_contrast > 1.0, dots >= 3, globules >= 2, structureless > 0.10]
    return {"dots_density": 1000.0 * (dots + globules) / float(mask.sum()),
            "structureless_frac": structureless, "D_score": float(max(1, sum(present)))}


def features_work(rgb: np.ndarray, seg: Segmentation) -> dict[str, float]:
    """ABCD features of a working-resolution uint8 image and its segmentation (see
    :func:`abcd_features`)."""
    mask, fov = seg.mask, seg.field_of_view
    rgb_cc = _shades_of_grey(rgb, fov)
    lab = _lab(rgb_cc)
    lightness = lab[..., 0]
    d_in = ndi.distance_transform_cdt(mask, metric="chessboard")
    d_out = ndi.distance_transform_cdt(~mask, metric="chessboard")
    frame = _principal_frame(mask)
    h, w = mask.shape
    area = float(mask.sum())
    variances = frame[3]
    out: dict[str, float] = {"seg_fallback": float(seg.fallback)}
    out |= _asymmetry(mask, lab, frame)
    out |= _border(mask, fov, lightness, d_in, d_out)
    out |= _colours(mask, fov, rgb, lab, d_out)
    out |= {
        "area_frac": area / max(float(fov.sum()), 1.0),
        "diameter_rel": float(np.sqrt(4.0 * area / np.pi)) / max(h, w),
        "eccentricity": float(np.sqrt(max(0.0, 1.0 - variances[1] / max(variances[0], 1e-9)))),
    }
    out |= _glcm(mask, lightness)
    out |= _structures(mask, lightness, d_in, out["glcm_contrast"])
    out["TDS"] = (1.3 * out["A_score"] + 0.1 * out["B_score"] + 0.5 * out["C_score"]
                  + 0.5 * out["D_score"])
    return {name: out[name] for name in FEATURES}


def abcd_features(img: Image.Image | np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The ABCD-rule features of a lesion (names and one-line meanings in :data:`FEATURE_DOCS`).

    ``mask`` is a boolean lesion mask of the image's size (e.g. from :func:`segment_lesion`); both
    are brought to the working resolution first so the numbers do not depend on the camera. An
    empty mask is replaced by the central ellipse and flagged (``seg_fallback`` = 1)."""
    pil = _as_rgb(img)
    mask = np.asarray(mask, bool)
    if mask.shape != (pil.height, pil.width):
        raise ValueError(f"mask shape {mask.shape} does not match the image ({pil.height}, "
                         f"{pil.width}); pass the mask segment_lesion returned for this image")
    rgb = to_work(pil)
    h, w = rgb.shape[:2]
    work_mask = _resize_mask(mask, (w, h))
    fov = field_of_view(rgb)
    if not work_mask.any():
        return features_work(rgb, _stand_in(fov))
    return features_work(rgb, Segmentation(work_mask, fov, False))


def image_features(img: Image.Image | np.ndarray) -> np.ndarray:
    """Segmentation + ABCD features of one image as a float64 vector in :data:`FEATURES` order."""
    rgb = to_work(img)
    return np.fromiter(features_work(rgb, segment_work(rgb)).values(), np.float64, len(FEATURES))


def _path_features(path: str) -> np.ndarray:
    """Features of the image file at ``path`` (loaded with the project's checks)."""
    return image_features(load_image(path))


def extract_features(images: Sequence[Image.Image | np.ndarray | str | Path], *, n_jobs: int = 1,
                     progress: bool = False) -> np.ndarray:
    """ABCD feature matrix (n, len(FEATURES)) of images or image paths, in input order.

    Paths are loaded inside the workers (:func:`skinlesion.data.images.load_image`: a bad file
    raises ImageError naming it). ``n_jobs`` > 1 spreads images over processes; ``progress`` shows
    a tqdm bar on stderr."""
    work = [_path_features if isinstance(item, str | Path) else image_features for item in images]
    items = [str(item) if isinstance(item, str | Path) else item for item in images]
    out = np.empty((len(items), len(FEATURES)), dtype=np.float64)
    bar = tqdm(total=len(items), desc="ABCD features", unit="img", file=sys.stderr,
               disable=not progress)
    with bar:
        if n_jobs == 1:
            results = (fn(item) for fn, item in zip(work, items, strict=True))
        else:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(fn)(item) for fn, item in zip(work, items, strict=True))
        for i, row in enumerate(results):
            out[i] = row
            bar.update()
    return out


# --- the classifier -------------------------------------------------------------------------------

#: logit standing in for a class never seen in training (probability ~1e-22, finite for the maths)
_ABSENT_LOGIT = -50.0


def _as_class_indices(y: object, n: int) -> np.ndarray:
    """Class indices (n,) from integer indices or diagnosis labels; ValueError names the problem."""
    values = np.asarray(y)
    if values.shape != (n,):
        raise ValueError(f"y must hold one diagnosis per image ({n}), got shape {values.shape}")
    if values.dtype.kind in "OUS":
        return np.array([class_index(str(v)) for v in values], dtype=np.int64)
    if values.dtype.kind not in "iu" or (n and (values.min() < 0 or values.max() >= len(CLASSES))):
        raise ValueError(f"y must hold class indices 0..{len(CLASSES) - 1} or labels "
                         f"{', '.join(CLASSES)}")
    return values.astype(np.int64)


class ABCDFallback:
    """Rule-based fallback classifier: ABCD features + encoded metadata -> class-balanced
    multinomial logistic regression (scikit-learn) over the 8 classes.

    The regression is fitted with balanced class weights so rare malignant classes shape the
    decision surface; its logits are then moved back to the training prevalence (+ log prior) and
    divided by a temperature fitted on validation data (:meth:`calibrate`), so :meth:`predict_proba`
    answers calibrated probabilities. :meth:`calibrate` also picks the operating threshold on
    p_malignant for the target sensitivity (0.95 by default: the fallback favours sensitivity).
    The fitted state is a handful of arrays, saved as JSON (no pickle)."""

    kind: ClassVar[str] = "fallback"

    def __init__(self, *, C: float = 0.3, malignant: Sequence[str] = DEFAULT_MALIGNANT,
                 n_jobs: int = 1, seed: int = 0):
        self.C = C
        self.malignant = tuple(malignant)
        self.n_jobs = n_jobs
        self.seed = seed

    # -- fitting --

    def fit(self, images: Sequence[Image.Image], metadata: pd.DataFrame, y: object, *,
            target_sensitivity: float = 0.95) -> ABCDFallback:
        """Fit on training images, their metadata (age_approx, sex, anatom_site_general) and
        diagnoses ``y`` (class indices in CLASSES order, or labels)."""
        features = extract_features(images, n_jobs=self.n_jobs)
        return self.fit_features(features, metadata, y, target_sensitivity=target_sensitivity)

    def fit_features(self, features: np.ndarray, metadata: pd.DataFrame, y: object, *,
                     target_sensitivity: float = 0.95) -> ABCDFallback:
        """:meth:`fit` from a precomputed :func:`extract_features` matrix."""
        if not 0.0 < target_sensitivity <= 1.0:
            raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
        malignant_mask(self.malignant)  # validates the malignant set
        labels = _as_class_indices(y, len(features))
        present = np.unique(labels)
        if len(present) < 2:
            raise ValueError("the training data must contain at least two diagnoses, got "
                             f"{[CLASSES[i] for i in present]}")
        self.encoder_ = MetadataEncoder().fit(metadata)
        design = self._design(features, metadata)
        scaler = StandardScaler().fit(design)
        regression = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000,
                                        random_state=self.seed)
        regression.fit(scaler.transform(design), labels)
        self.n_features_in_ = design.shape[1]
        self.scaler_mean_ = scaler.mean_
        self.scaler_scale_ = scaler.scale_
        self.classes_ = regression.classes_.astype(np.int64)
        # a two-class regression answers one logit column; spell out both classes' logits
        coef, intercept = regression.coef_, regression.intercept_
        if len(self.classes_) == 2:
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0], intercept[0]]) / 2
        self.coef_, self.intercept_ = coef, intercept
        counts = np.bincount(labels, minlength=len(CLASSES))[self.classes_]
        self.log_prior_ = np.log(counts / counts.sum())
        self.temperature_ = 1.0
        self.target_sensitivity_ = float(target_sensitivity)
        self.threshold_: float | None = None
        return self

    def calibrate(self, images: Sequence[Image.Image], metadata: pd.DataFrame, y: object, *,
                  target_sensitivity: float | None = None) -> float:
        """Fit the temperature and choose the operating threshold on validation data; returns the
        threshold (see :meth:`calibrate_features`)."""
        features = extract_features(images, n_jobs=self.n_jobs)
        return self.calibrate_features(features, metadata, y, target_sensitivity=target_sensitivity)

    def calibrate_features(self, features: np.ndarray, metadata: pd.DataFrame, y: object, *,
                           target_sensitivity: float | None = None) -> float:
        """On validation data: fit the temperature of the prevalence-corrected logits
        (:func:`skinlesion.calibration.fit_temperature`), then set ``threshold_``, the highest
        threshold on p_malignant whose validation sensitivity reaches ``target_sensitivity``
        (default: the one given to :meth:`fit`), with
        :func:`skinlesion.calibration.threshold_for_sensitivity`. Returns the threshold."""
        self._check_fitted()
        labels = _as_class_indices(y, len(features))
        logits = self._logits(features, metadata)
        self.temperature_ = fit_temperature(logits, labels)
        if target_sensitivity is not None:
            if not 0.0 < target_sensitivity <= 1.0:
                raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
            self.target_sensitivity_ = float(target_sensitivity)
        probs = apply_temperature(logits, self.temperature_)
        is_malignant = np.asarray(malignant_mask(self.malignant))[labels]
        score = p_malignant(probs, self.malignant)
        self.threshold_ = threshold_for_sensitivity(is_malignant, score,
                                                    target=self.target_sensitivity_)
        return self.threshold_

    # -- predicting --

    def predict_proba(self, images: Sequence[Image.Image], metadata: pd.DataFrame) -> np.ndarray:
        """Calibrated class probabilities (n, 8) in CLASSES order."""
        return self.predict_proba_features(extract_features(images, n_jobs=self.n_jobs), metadata)

    def predict_proba_features(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """:meth:`predict_proba` from a precomputed :func:`extract_features` matrix."""
        self._check_fitted()
        return apply_temperature(self._logits(features, metadata), self.temperature_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this ABCDFallback is not fitted yet: call fit() (or "
                                 "fit_fallback) first, or load a saved version")

    def _design(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """ABCD features next to the encoded metadata; ValueError when they do not line up."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(FEATURES):
            raise ValueError(f"features must have shape (n, {len(FEATURES)}), got {features.shape}")
        if len(metadata) != len(features):
            raise ValueError(f"metadata has {len(metadata)} rows for {len(features)} images; "
                             "give one metadata row per image")
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError("ABCD features are not finite for the image(s) at position "
                             f"{bad[:5].tolist()}")
        return np.hstack([features, self.encoder_.transform(metadata).astype(np.float64)])

    def _logits(self, features: np.ndarray, metadata: pd.DataFrame) -> np.ndarray:
        """Prevalence-corrected logits (n, 8) before temperature scaling."""
        design = (self._design(features, metadata) - self.scaler_mean_) / self.scaler_scale_
        logits = np.full((len(design), len(CLASSES)), _ABSENT_LOGIT)
        logits[:, self.classes_] = design @ self.coef_.T + self.intercept_ + self.log_prior_
        return logits

    # -- persistence --

    def _input_names(self) -> list[str]:
        return list(FEATURES) + [f"meta:{name}" for name in self.encoder_.feature_names_]

    def coefficient_summary(self, top: int = 3) -> dict[str, list[list[object]]]:
        """Per class, the ``top`` inputs with the largest standardised weights, [name, weight]."""
        self._check_fitted()
        names = self._input_names()
        return {CLASSES[c]: [[names[j], round(float(row[j]), 4)]
                             for j in np.argsort(-np.abs(row))[:top]]
                for c, row in zip(self.classes_, self.coef_, strict=True)}

    def save(self, directory: Path) -> dict:
        """Write the fitted state as JSON into ``directory``; return the card's model section."""
        self._check_fitted()
        encoder_state = self.encoder_.get_state()
        state = {
            "format": 1, "features": list(FEATURES), "work_size": WORK_SIZE,
            "classes": [CLASSES[c] for c in self.classes_], "malignant": list(self.malignant),
            "C": self.C, "seed": self.seed,
            "scaler_mean": self.scaler_mean_.tolist(), "scaler_scale": self.scaler_scale_.tolist(),
            "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist(),
            "log_prior": self.log_prior_.tolist(), "temperature": self.temperature_,
            "threshold": self.threshold_, "target_sensitivity": self.target_sensitivity_,
            "metadata_encoder": encoder_state,
        }
        (Path(directory) / STATE_FILE).write_text(json.dumps(state))
        return {
            "architecture": ARCHITECTURE, "state_file": STATE_FILE,
            "features": list(FEATURES), "metadata_features": list(self.encoder_.feature_names_),
            "preprocessing": {"work_size": WORK_SIZE, "segmentation": "otsu_inverted_blue",
                              "colour_constancy": "shades_of_grey_p6"},
            "metadata_encoder": encoder_state,
            "regression": {"type": "multinomial_logistic", "class_weight": "balanced", "C": self.C,
                           "prior_corrected": True},
            "temperature": self.temperature_, "threshold": self.threshold_,
            "target_sensitivity": self.target_sensitivity_,
            "coefficients": {"n_inputs": self.n_features_in_, "classes": len(self.classes_),
                             "largest": self.coefficient_summary()},
            "n_params": int(self.coef_.size + self.intercept_.size),
        }

    @classmethod
    def load(cls, directory: Path, model_section: dict) -> ABCDFallback:
        """Rebuild a fitted fallback from its folder (the JSON state file the section names)."""
        path = Path(directory) / model_section.get("state_file", STATE_FILE)
        if not path.is_file():
            raise SkinLesionError(f"fallback state file {path} is missing; the version folder is "
                                  "incomplete: save the version again")
        state = json.loads(path.read_text())
        if state["features"] != list(FEATURES) or state["work_size"] != WORK_SIZE:
            raise SkinLesionError(f"{path} was written for other ABCD features or working size "
                                  "than this skinlesion version computes; retrain the fallback "
                                  "(`fit_fallback`) with this version")
        model = cls(C=state["C"], malignant=state["malignant"], seed=state["seed"])
        model.encoder_ = MetadataEncoder.from_state(state["metadata_encoder"])
        model.classes_ = np.array([class_index(c) for c in state["classes"]], dtype=np.int64)
        model.scaler_mean_ = np.array(state["scaler_mean"])
        model.scaler_scale_ = np.array(state["scaler_scale"])
        model.coef_ = np.array(state["coef"])
        model.intercept_ = np.array(state["intercept"])
        model.log_prior_ = np.array(state["log_prior"])
        model.n_features_in_ = model.coef_.shape[1]
        model.temperature_ = float(state["temperature"])
        model.threshold_ = state["threshold"]
        model.target_sensitivity_ = float(state["target_sensitivity"])
        return model


# --- training from a dataset table ----------------------------------------------------------------


def fit_fallback(df: pd.DataFrame, split: pd.Series, *, seed: int = 0, progress: bool = True,
                 target_sensitivity: float = 0.95, n_jobs: int = 2,
                 C: float = 0.3) -> tuple[ABCDFallback, dict]:
    """Fit the fallback on ``split == "train"``, calibrate it and choose its threshold on
    ``split == "val"``.

    ``df`` is a dataset table (:func:`skinlesion.data.readers.read_dataset`: columns path,
    diagnosis, age_approx, sex, anatom_site_general); ``split`` is aligned with it (e.g.
    :func:`skinlesion.data.splits.split_dataset`). Images are loaded from ``df["path"]`` and their
    features computed on ``n_jobs`` processes with a progress bar on stderr. Returns the model and
    an info dict: sizes, threshold, temperature, feature-extraction time, share of images whose
    segmentation fell back to the central ellipse, the validation metrics
    (:func:`skinlesion.metrics.summary` at the chosen threshold) and ``val_probs``, the calibrated
    answers on the ``val`` rows in row order (an array, as :func:`skinlesion.register.register`
    wants them)."""
    missing = [c for c in ("path", "diagnosis", *METADATA_FIELDS) if c not in df.columns]
    if missing:
        raise DataError(f"the dataset table lacks column(s) {', '.join(missing)}; read it with "
                        "skinlesion.data.readers.read_dataset")
    if not split.index.equals(df.index):
        raise ValueError("split must be aligned with df (same index), e.g. split_dataset(df)")
    rows = {name: (split == name).to_numpy() for name in ("train", "val")}
    for name, chosen in rows.items():
        if not chosen.any():
            raise DataError(f"no '{name}' rows in the split; the fallback needs train and val rows")
        unlabelled = df.loc[chosen, "diagnosis"].isna()
        if unlabelled.any():
            raise DataError(f"{int(unlabelled.sum())} '{name}' row(s) have no diagnosis (first: "
                            f"{df.loc[chosen].loc[unlabelled, 'path'].iloc[0]}); train only on a "
                            "labelled dataset", field="diagnosis")
    used = rows["train"] | rows["val"]
    start = time.perf_counter()
    features = extract_features(df.loc[used, "path"].tolist(), n_jobs=n_jobs, progress=progress)
    seconds = time.perf_counter() - start
    table = df.loc[used].reset_index(drop=True)
    part = {name: chosen[used] for name, chosen in rows.items()}
    labels = np.array([class_index(d) for d in table["diagnosis"]], dtype=np.int64)
    meta = table.loc[:, list(METADATA_FIELDS)]
    model = ABCDFallback(C=C, seed=seed, n_jobs=n_jobs)
    model.fit_features(features[part["train"]], meta[part["train"]], labels[part["train"]],
                       target_sensitivity=target_sensitivity)
    threshold = model.calibrate_features(features[part["val"]], meta[part["val"]],
                                         labels[part["val"]])
    val_probs = model.predict_proba_features(features[part["val"]], meta[part["val"]])
    info = {
        "n_train": int(part["train"].sum()), "n_val": int(part["val"].sum()),
        "threshold": threshold, "temperature": model.temperature_,
        "target_sensitivity": model.target_sensitivity_,
        "feature_seconds": round(seconds, 2),
        "ms_per_image": round(1000.0 * seconds / max(int(used.sum()), 1), 2),
        "segmentation_fallback_share": float(features[:, FEATURES.index("seg_fallback")].mean()),
        "val": metrics.summary(labels[part["val"]], val_probs, threshold=threshold,
                               malignant=model.malignant),
        "val_probs": val_probs,
    }
    return model, info
