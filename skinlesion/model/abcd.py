"""The dermoscopy ABCD-rule features of the rule-based fallback (skinlesion.model.fallback).

:func:`abcd_features` measures a segmented lesion (skinlesion.model.lesion_segmentation) by the ABCD
rule of Stolz (Asymmetry, Border, Colours, Differential structures), each as continuous measures and
as the classic scores, plus the Total Dermoscopy Score ``TDS = 1.3*A + 0.1*B + 0.5*C + 0.5*D``;
:func:`extract_features` gives the feature matrix of many images (names and meanings in
:data:`FEATURE_DOCS`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image, ImageCms
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from skimage import feature, measure
from tqdm.auto import tqdm

from skinlesion.data.images import load_image
from skinlesion.model.lesion_segmentation import (
    Segmentation, as_rgb, field_of_view, resize_mask, rim, segment_work, stand_in, to_work,
)

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
    keep = ~rim(fov, 2)  # where the image or the view cuts the lesion there is no border to judge

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
    pil = as_rgb(img)
    mask = np.asarray(mask, bool)
    if mask.shape != (pil.height, pil.width):
        raise ValueError(f"mask shape {mask.shape} does not match the image ({pil.height}, "
                         f"{pil.width}); pass the mask segment_lesion returned for this image")
    rgb = to_work(pil)
    h, w = rgb.shape[:2]
    work_mask = resize_mask(mask, (w, h))
    fov = field_of_view(rgb)
    if not work_mask.any():
        return features_work(rgb, stand_in(fov))
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
