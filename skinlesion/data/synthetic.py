"""A seeded synthetic dermoscopy dataset with a planted, learnable signal, in the ISIC 2019 layout.

Tests, demos and CI need data that behaves like the real thing without shipping patient images.
:func:`write_synthetic_dataset` writes ``ISIC_2019_Training_Input/<image>.jpg``, a one-hot ground
truth with the ``UNK`` column and a metadata file with ``lesion_id`` (some lesions are photographed
twice), readable by :func:`skinlesion.data.readers.read_dataset` like a real release.

What makes it learnable (and how each class looks) follows the dermoscopy textbook, exaggerated:

====  ======================================================================================
MEL   large, elongated, asymmetric lobed border; 3-5 colours (browns, black dots, blue-grey,
      red, white regression); irregular pigment network
NV    small, round, sharp border; one or two similar browns; regular pigment network
BCC   pink/pearly, blurred border; blue-grey ovoid nests; red branching (arborising) vessels
AK    reddish, diffuse faint border; white scale speckles
BKL   light brown/tan, sharp "stuck-on" border; waxy texture; white milia-like dots
DF    small, soft border; light-brown ring around a pale white centre
VASC  red/purple, sharp border; dark red and purple lacunae
SCC   pink/red, ragged border; white-yellow keratin mass in the centre; dotted red vessels
====  ======================================================================================

Skin tone, lighting, hairs, noise and the dermatoscope's vignette vary independently of the class
(confounders a model must ignore). Metadata follows the real associations: BCC, AK and SCC in older
patients and on the head/neck, NV in younger ones, DF on the legs; about 3% of ages, 2% of sexes and
15% of sites are missing. Class frequencies follow ISIC 2019 (NV 40-50%) with the rare classes
raised to 4% of the images, so every class is present: at least 2 lesions each from 32 images on.

Everything is drawn with vectorised numpy at the final resolution, so 400 images of 200x150 take a
few seconds, and is fully determined by the seed.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, MISSING, SITES

RGB = tuple[int, int, int]

#: Images per class in the ISIC 2019 training set (UNK has none): the class frequencies we imitate.
ISIC2019_COUNTS: dict[str, int] = {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624,
                                   "DF": 239, "VASC": 253, "SCC": 628}
CLASS_FREQUENCY: dict[str, float] = {
    c: ISIC2019_COUNTS[c] / sum(ISIC2019_COUNTS.values()) for c in CLASSES}
#: Smallest share of images per class (DF and VASC are under 1% of ISIC 2019).
MIN_SHARE = 0.04
#: Share of images that are a second photograph of a lesion already in the set.
REPEAT_SHARE = 0.12
#: Share of missing values per metadata field.
MISSING_SHARE: dict[str, float] = {"age_approx": 0.03, "sex": 0.02, "anatom_site_general": 0.15}
MARKER = "SYNTHETIC.json"
INPUT_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
JPEG_QUALITY = 90
_BORDER_STEPS = 720  # angular resolution of the lesion border

# --- metadata ----------------------------------------------------------------------------------

#: Age (mean, sd) in years and share of men, per class (rounded from ISIC 2019).
_AGE: dict[str, tuple[float, float]] = {"MEL": (60, 15), "NV": (40, 14), "BCC": (67, 12),
                                        "AK": (70, 10), "BKL": (62, 14), "DF": (45, 14),
                                        "VASC": (50, 20), "SCC": (72, 11)}
_MALE: dict[str, float] = {"MEL": 0.58, "NV": 0.50, "BCC": 0.58, "AK": 0.64, "BKL": 0.55,
                           "DF": 0.40, "VASC": 0.48, "SCC": 0.62}
#: Relative frequency of each known site (SITES order, without "missing") per class.
_SITE_WEIGHTS: dict[str, tuple[float, ...]] = {
    #       ant. torso, post. torso, lat. torso, upper, lower ext., head/neck, palms/soles, oral/gen.
    "MEL": (0.15, 0.25, 0.02, 0.15, 0.20, 0.20, 0.02, 0.01),
    "NV": (0.20, 0.30, 0.02, 0.12, 0.26, 0.05, 0.04, 0.01),
    "BCC": (0.12, 0.15, 0.02, 0.08, 0.07, 0.55, 0.005, 0.005),
    "AK": (0.04, 0.03, 0.005, 0.20, 0.07, 0.65, 0.005, 0.0),
    "BKL": (0.20, 0.25, 0.02, 0.12, 0.14, 0.25, 0.01, 0.01),
    "DF": (0.06, 0.05, 0.01, 0.20, 0.65, 0.02, 0.005, 0.005),
    "VASC": (0.20, 0.15, 0.02, 0.15, 0.30, 0.15, 0.02, 0.01),
    "SCC": (0.06, 0.05, 0.02, 0.25, 0.15, 0.45, 0.01, 0.01),
}
_KNOWN_SITES = tuple(s for s in SITES if s != MISSING)


def sample_metadata(cls: str, rng: np.random.Generator) -> dict[str, object]:
    """Age, sex and site of a patient with a ``cls`` lesion, as the dataset table holds them:
    ``age_approx`` a multiple of 5 in 0-85 or None, ``sex`` and ``anatom_site_general`` in the
    schema vocabulary ("missing" when unknown). Accepted by ``Metadata.from_raw(**...)``."""
    mean, sd = _AGE[cls]
    age = float(np.clip(5 * round(rng.normal(mean, sd) / 5), 0, 85))
    sex = "male" if rng.random() < _MALE[cls] else "female"
    weights = np.asarray(_SITE_WEIGHTS[cls])
    site = _KNOWN_SITES[rng.choice(len(_KNOWN_SITES), p=weights / weights.sum())]
    missing = rng.random(3) < [MISSING_SHARE[f] for f in ("age_approx", "sex", "anatom_site_general")]
    return {"age_approx": None if missing[0] else age, "sex": MISSING if missing[1] else sex,
            "anatom_site_general": MISSING if missing[2] else site}


# --- how each class looks ------------------------------------------------------------------------

LIGHT_BROWN: RGB = (176, 122, 80)
BROWN: RGB = (133, 85, 52)
DARK_BROWN: RGB = (84, 50, 32)
BLACK: RGB = (30, 22, 22)
BLUE_GREY: RGB = (98, 112, 138)
RED: RGB = (185, 55, 60)
DARK_RED: RGB = (115, 22, 35)
PURPLE: RGB = (112, 45, 88)
PINK: RGB = (224, 150, 150)
PEARL: RGB = (230, 196, 192)
RED_PINK: RGB = (205, 112, 104)
WHITE: RGB = (238, 232, 226)
TAN: RGB = (196, 158, 112)
KERATIN: RGB = (232, 218, 172)
VESSEL: RGB = (165, 28, 40)


@dataclass(frozen=True)
class _Look:
    """Ranges a lesion of one class is drawn from (sizes in half image heights, or lesion radii)."""

    radius: tuple[float, float]
    elongation: tuple[float, float]  # long / short axis
    irregularity: tuple[float, float]  # amplitude of the low-order border harmonics (lobes)
    raggedness: tuple[float, float]  # amplitude of the high-order harmonics (ragged edge)
    softness: tuple[float, float]  # border blur, in lesion radii
    opacity: tuple[float, float]
    bases: tuple[RGB, ...]  # one is the lesion's main colour
    accents: tuple[RGB, ...]  # blotch colours drawn from
    n_accents: tuple[int, int]  # distinct accent colours (inclusive range)
    n_blotches: tuple[int, int]
    network: float = 0.0  # pigment network strength
    structures: tuple[str, ...] = ()  # names in _STRUCTURES
    vessels: bool = False  # branching (arborising) vessels drawn over the lesion


_LOOKS: dict[str, _Look] = {
    "MEL": _Look((0.55, 0.85), (1.1, 1.7), (0.10, 0.22), (0.015, 0.04), (0.04, 0.12), (0.85, 1.0),
                 (BROWN, DARK_BROWN, LIGHT_BROWN), (DARK_BROWN, BLACK, BLUE_GREY, RED, WHITE,
                                                    LIGHT_BROWN), (3, 5), (6, 10), 0.14, ("dots",)),
    "NV": _Look((0.28, 0.48), (1.0, 1.25), (0.0, 0.04), (0.0, 0.008), (0.02, 0.06), (0.7, 0.95),
                (BROWN, LIGHT_BROWN), (DARK_BROWN,), (1, 1), (1, 2), 0.10),
    "BCC": _Look((0.35, 0.6), (1.0, 1.5), (0.05, 0.12), (0.0, 0.02), (0.08, 0.14), (0.6, 0.8),
                 (PINK, PEARL), (BLUE_GREY,), (1, 1), (2, 5), vessels=True),
    "AK": _Look((0.4, 0.7), (1.0, 1.5), (0.06, 0.14), (0.01, 0.03), (0.12, 0.22), (0.45, 0.7),
                (RED_PINK,), (PINK, RED), (1, 2), (2, 4), 0.0, ("scale",)),
    "BKL": _Look((0.4, 0.65), (1.0, 1.6), (0.04, 0.1), (0.01, 0.03), (0.01, 0.03), (0.8, 0.95),
                 (TAN, LIGHT_BROWN), (BROWN, TAN), (1, 2), (2, 4), 0.0, ("waxy", "milia")),
    "DF": _Look((0.2, 0.34), (1.0, 1.25), (0.02, 0.06), (0.0, 0.01), (0.1, 0.16), (0.6, 0.85),
                (LIGHT_BROWN, BROWN), (), (0, 0), (0, 0), 0.05, ("pale_centre",)),
    "VASC": _Look((0.25, 0.45), (1.0, 1.4), (0.03, 0.08), (0.0, 0.01), (0.02, 0.05), (0.9, 1.0),
                  (RED, PURPLE), (DARK_RED, PURPLE, RED), (2, 3), (0, 0), 0.0, ("lacunae",)),
    "SCC": _Look((0.35, 0.6), (1.0, 1.5), (0.08, 0.16), (0.02, 0.05), (0.05, 0.1), (0.7, 0.9),
                 (PINK, RED_PINK), (RED,), (1, 1), (1, 3), 0.0, ("keratin", "dotted_vessels")),
}

#: Lightest and darkest skin tones drawn (dermoscopy data is mostly light skin: Beta(2, 5) between).
_SKIN_LIGHT: RGB = (238, 204, 186)
_SKIN_DARK: RGB = (140, 96, 72)


@dataclass(frozen=True)
class LesionParams:
    """One lesion (and its patient's skin): everything two photographs of it share."""

    cls: str
    radius: float
    elongation: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]  # (order, amplitude, phase) of the border
    softness: float
    opacity: float
    base: RGB
    accents: tuple[RGB, ...]
    n_blotches: int
    skin: RGB
    texture_seed: int


def sample_lesion(cls: str, rng: np.random.Generator) -> LesionParams:
    """Draw the parameters of a ``cls`` lesion (see the module docstring for how classes look)."""
    if cls not in _LOOKS:
        raise ValueError(f"unknown class {cls!r}; allowed: {', '.join(CLASSES)}")
    look = _LOOKS[cls]
    irregular, ragged = rng.uniform(*look.irregularity), rng.uniform(*look.raggedness)
    low = [(k, irregular * rng.uniform(0.4, 1.0) / math.sqrt(k), rng.uniform(0, 2 * math.pi))
           for k in range(1, 6)]
    high = [(int(k), ragged * rng.uniform(0.5, 1.0), rng.uniform(0, 2 * math.pi))
            for k in rng.choice(np.arange(9, 24), size=3, replace=False)]
    n_accents = int(rng.integers(look.n_accents[0], look.n_accents[1] + 1))
    accents = tuple(look.accents[i] for i in rng.choice(len(look.accents), n_accents,
                                                         replace=False)) if n_accents else ()
    tone = rng.beta(2, 5)
    skin = tuple(int(round(lo + (hi - lo) * tone)) for lo, hi in zip(_SKIN_LIGHT, _SKIN_DARK))
    return LesionParams(
        cls=cls, radius=rng.uniform(*look.radius), elongation=rng.uniform(*look.elongation),
        angle=rng.uniform(0, math.pi), harmonics=tuple(low + high),
        softness=rng.uniform(*look.softness), opacity=rng.uniform(*look.opacity),
        base=look.bases[rng.integers(len(look.bases))], accents=accents,
        n_blotches=int(rng.integers(look.n_blotches[0], look.n_blotches[1] + 1)),
        skin=skin, texture_seed=int(rng.integers(2**31)))  # type: ignore[arg-type]


def render_lesion(cls: str, rng: np.random.Generator, width: int = 200) -> Image.Image:
    """A new ``cls`` lesion photographed once: an RGB image ``width`` x 3/4 ``width``."""
    return draw_lesion(sample_lesion(cls, rng), rng, width)


class _Frame:
    """Pixel grid of one photograph and the lesion's own coordinates on it.

    Lesion coordinates ``(A, B)`` put the lesion's base ellipse on the unit disc, rotated with the
    lesion, so a structure placed in them follows the lesion from one photograph to the next."""

    def __init__(self, p: LesionParams, rng: np.random.Generator, width: int):
        self.w, self.h = width, max(1, round(width * 3 / 4))
        self.scale = self.h / 2  # pixels per unit of image coordinates
        self.cx = self.w / 2 + rng.normal(0, 0.08) * self.scale
        self.cy = self.h / 2 + rng.normal(0, 0.08) * self.scale
        self.theta = p.angle + rng.normal(0, 0.25)
        self.r, self.e = p.radius, p.elongation
        self.y, self.x = _grid(self.h, self.w)
        u, v = (self.x - self.cx) / self.scale, (self.y - self.cy) / self.scale
        c, s = math.cos(self.theta), math.sin(self.theta)
        self.A = (c * u + s * v) / self.r
        self.B = (-s * u + c * v) * self.e / self.r
        self.px = 1.0 / (self.scale * self.r)  # one pixel, in lesion units along A

    def to_pixels(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Lesion coordinates -> ``(n, 2)`` pixel positions (x, y)."""
        aa, bb = np.asarray(a) * self.r, np.asarray(b) * self.r / self.e
        c, s = math.cos(self.theta), math.sin(self.theta)
        return np.stack([self.cx + self.scale * (c * aa - s * bb),
                         self.cy + self.scale * (s * aa + c * bb)], axis=-1)

    def window(self, a: float, b: float, sigma: float) -> tuple[slice, slice]:
        """The pixels within 3.5 ``sigma`` (lesion units) of (a, b): where a bump is not ~0."""
        x, y = self.to_pixels(np.array(a), np.array(b))
        reach = 3.5 * sigma * self.r * self.scale + 2  # a lesion unit is at most r*scale pixels
        return (slice(min(max(int(y - reach), 0), self.h), min(max(int(y + reach) + 1, 0), self.h)),
                slice(min(max(int(x - reach), 0), self.w), min(max(int(x + reach) + 1, 0), self.w)))

    def gauss(self, a: float, b: float, sigma: float,
              where: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """A Gaussian bump centred at (a, b) in lesion coordinates (float32, peak 1), on the
        pixels ``where``."""
        da, db = self.A[where] - np.float32(a), self.B[where] - np.float32(b)
        return np.exp((da * da + db * db) * np.float32(-0.5 / (sigma * sigma)))

    def bumps(self, a: np.ndarray, b: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """The sum of Gaussian bumps (one per point), each computed only near its centre."""
        total = np.zeros((self.h, self.w), dtype=np.float32)
        for ai, bi, si in zip(a, b, sigma):
            where = self.window(ai, bi, si)
            total[where] += self.gauss(ai, bi, si, where)
        return total


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only pixel row and column coordinates (float32), shared by all images of a size."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise (about ``cells`` bumps across the height), roughly unit variance."""
    grid = rng.standard_normal((cells + 1, max(2, round((cells + 1) * w / h)))).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))


def _mix(img: np.ndarray, colour: RGB | np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Alpha-blend ``colour`` (an RGB triple or a (3, H, W) image) over ``img`` (3, H, W, channels
    first: numpy broadcasts that several times faster than channels last) with ``weight`` (H, W)."""
    paint = np.asarray(colour, dtype=np.float32)
    if paint.ndim == 1:
        paint = paint[:, None, None]
    return img + (paint - img) * np.clip(weight, 0.0, 1.0, dtype=np.float32)


def _points_in_disc(rng: np.random.Generator, n: int, r_min: float, r_max: float,
                    sector: float = 2 * math.pi) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points at radius r_min..r_max (uniform in area) within an angular ``sector``."""
    rad = np.sqrt(rng.uniform(r_min**2, r_max**2, n))
    ang = rng.uniform(0, sector, n) + rng.uniform(0, 2 * math.pi)
    return rad * np.cos(ang), rad * np.sin(ang)


def draw_lesion(p: LesionParams, rng: np.random.Generator, width: int = 200) -> Image.Image:
    """Photograph lesion ``p``: pose, lighting, hairs, noise and vignette come from ``rng``, the
    lesion's own look from ``p`` (so two calls with one ``p`` show the same lesion twice)."""
    f = _Frame(p, rng, width)
    texture = np.random.default_rng(p.texture_seed)
    look = _LOOKS[p.cls]

    # Shape: a unit disc in lesion coordinates with a harmonic border, soft by `softness`.
    angles = np.linspace(-math.pi, math.pi, _BORDER_STEPS + 1)
    border = 1 + sum(amp * np.cos(k * angles + phase) for k, amp, phase in p.harmonics)
    step = ((np.arctan2(f.B, f.A) + math.pi) * (_BORDER_STEPS / (2 * math.pi))).astype(np.intp)
    dist = np.hypot(f.A, f.B) / np.maximum(border, 0.3).astype(np.float32)[step]
    inside = 1.0 / (1.0 + np.exp(np.clip((dist - 1.0) / max(p.softness, f.px), -30, 30)))

    # Colour: the base colour, blotches of the accent colours, then the class's structures.
    lesion = np.empty((3, f.h, f.w), dtype=np.float32)  # channels first throughout
    lesion[:] = np.asarray(p.base, dtype=np.float32)[:, None, None]
    sector = math.pi if p.cls == "MEL" else 2 * math.pi  # melanoma: colours crowd one half
    for i in range(p.n_blotches if p.accents else 0):
        a, b = _points_in_disc(texture, 1, 0.0, 0.75, sector=sector)
        sigma = texture.uniform(0.15, 0.35) if p.cls != "BCC" else texture.uniform(0.06, 0.12)
        where = (slice(None), *f.window(a[0], b[0], sigma))
        lesion[where] = _mix(lesion[where], p.accents[i % len(p.accents)],
                             texture.uniform(0.7, 1.0) * f.gauss(a[0], b[0], sigma, where[1:]))
    if look.network:
        warp = 0.15 * np.sin(3 * f.B + texture.uniform(0, 6)) if p.cls == "MEL" else 0.0
        freq = 2 * math.pi / (texture.uniform(5, 7) * f.px * f.w / 200)  # a 5-7 px mesh at 200 px
        lines = np.maximum(np.abs(np.cos(freq * (f.A + warp))), np.abs(np.cos(freq * f.B)))
        lines *= lines
        lines *= lines
        lesion *= 1 - look.network * lines * lines  # cos^8: thin dark lines
    fine = ndimage.gaussian_filter(rng.standard_normal((f.h, f.w), dtype=np.float32), 1.0)
    lesion *= 1 + 0.08 * fine
    for structure in look.structures:
        lesion = _STRUCTURES[structure](lesion, f, texture, inside)

    # Skin with uneven lighting and a little redness, then the lesion over it.
    skin = np.empty_like(lesion)
    skin[:] = (np.asarray(p.skin) * rng.uniform(0.88, 1.06, 3)).astype(np.float32)[:, None, None]
    skin *= 1 + 0.04 * _smooth_noise(rng, f.h, f.w, 3)
    skin = _mix(skin, RED_PINK, 0.12 * np.clip(_smooth_noise(rng, f.h, f.w, 4), 0, None))
    img = _mix(skin, lesion, p.opacity * inside)

    # The photograph: vessels/hairs on top, sensor noise, the dermatoscope's vignette.
    img = _draw_overlays(img, p, f, texture, rng)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0))
    img = _vignette(img, f, rng)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def _dots(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
          ) -> np.ndarray:
    """MEL: black/dark-brown dots and globules, crowded in one half (asymmetry)."""
    a, b = _points_in_disc(texture, int(texture.integers(5, 14)), 0.45, 0.95, sector=math.pi)
    return _mix(lesion, BLACK, 0.9 * f.bumps(a, b, texture.uniform(0.03, 0.06, len(a))))


def _pale_centre(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
                 ) -> np.ndarray:
    """DF: a white scar-like centre inside a light-brown ring."""
    return _mix(lesion, WHITE, 0.85 * f.gauss(0.0, 0.0, texture.uniform(0.3, 0.42)))


def _lacunae(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
             ) -> np.ndarray:
    """VASC: round dark-red and purple lacunae."""
    n = int(texture.integers(5, 11))
    a, b = _points_in_disc(texture, n, 0.0, 0.75)
    sigma, purple = texture.uniform(0.1, 0.18, n), texture.random(n) < 0.5
    for colour, chosen in ((DARK_RED, ~purple), (PURPLE, purple)):
        blobs = f.bumps(a[chosen], b[chosen], sigma[chosen])
        lesion = _mix(lesion, colour, np.clip(2.5 * blobs - 0.6, 0, 0.95))
    return lesion


def _keratin(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
             ) -> np.ndarray:
    """SCC: a white-yellow crusted keratin mass in the centre."""
    crust = f.gauss(texture.uniform(-0.15, 0.15), texture.uniform(-0.15, 0.15),
                    texture.uniform(0.3, 0.42))
    return _mix(lesion, KERATIN, np.clip(1.2 * crust - 0.15, 0, 0.9))


def _scale(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
           ) -> np.ndarray:
    """AK: white scale speckles over the lesion."""
    speck = ndimage.gaussian_filter(texture.standard_normal(inside.shape, dtype=np.float32), 0.8)
    return _mix(lesion, WHITE, np.clip((speck - 0.35) * 3.0, 0, 0.8))


def _waxy(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
          ) -> np.ndarray:
    """BKL: coarse waxy, ridged (cerebriform) texture."""
    ridges = ndimage.gaussian_filter(texture.standard_normal(inside.shape, dtype=np.float32), 2.0)
    return lesion * (1 + 0.9 * ridges)


def _milia(lesion: np.ndarray, f: _Frame, texture: np.random.Generator, inside: np.ndarray
           ) -> np.ndarray:
    """BKL: a few white milia-like cysts."""
    a, b = _points_in_disc(texture, int(texture.integers(2, 7)), 0.0, 0.8)
    return _mix(lesion, WHITE, 0.9 * f.bumps(a, b, texture.uniform(0.03, 0.05, len(a))))


def _dotted_vessels(lesion: np.ndarray, f: _Frame, texture: np.random.Generator,
                    inside: np.ndarray) -> np.ndarray:
    """SCC: dotted/glomerular vessels around the keratin mass."""
    a, b = _points_in_disc(texture, int(texture.integers(10, 25)), 0.4, 0.9)
    return _mix(lesion, VESSEL, 0.9 * f.bumps(a, b, texture.uniform(0.02, 0.035, len(a))))


_STRUCTURES = {"dots": _dots, "pale_centre": _pale_centre, "lacunae": _lacunae,
               "keratin": _keratin, "scale": _scale, "waxy": _waxy, "milia": _milia,
               "dotted_vessels": _dotted_vessels}


def _draw_overlays(img: np.ndarray, p: LesionParams, f: _Frame, texture: np.random.Generator,
                   rng: np.random.Generator) -> np.ndarray:
    """BCC's branching vessels (in lesion coordinates) and hairs (anywhere), as thin lines."""
    line_width = max(1, round(f.w / 160))
    if _LOOKS[p.cls].vessels:
        mask = Image.new("L", (f.w, f.h), 0)
        draw = ImageDraw.Draw(mask)
        for _ in range(int(texture.integers(2, 5))):
            a, b = _points_in_disc(texture, 1, 0.2, 0.7)
            _branch(draw, f, texture, float(a[0]), float(b[0]), texture.uniform(0, 2 * math.pi),
                    0.35, 3, line_width)
        weight = np.asarray(mask, dtype=np.float32) / 255.0
        img = _mix(img, VESSEL, 0.85 * ndimage.gaussian_filter(weight, 0.5))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    draw = ImageDraw.Draw(out)
    for _ in range(min(int(rng.poisson(1.2)), 6)):
        ends = rng.uniform(0, 1, (3, 2)) * [f.w, f.h]
        t = np.linspace(0, 1, 24)[:, None]
        curve = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * ends[1] + t**2 * ends[2]
        shade = int(rng.integers(20, 60))
        draw.line([tuple(pt) for pt in curve], fill=(shade, int(shade * 0.8), int(shade * 0.6)),
                  width=line_width + int(rng.integers(0, 2)))
    return np.asarray(out, dtype=np.float32).transpose(2, 0, 1)


def _branch(draw: ImageDraw.ImageDraw, f: _Frame, texture: np.random.Generator, a: float, b: float,
            angle: float, length: float, depth: int, width: int) -> None:
    """A vessel segment from (a, b) that forks into two thinner, shorter ones ``depth`` times."""
    a2, b2 = a + length * math.cos(angle), b + length * math.sin(angle)
    ends = f.to_pixels(np.array([a, a2]), np.array([b, b2]))
    draw.line([tuple(ends[0]), tuple(ends[1])], fill=255, width=width + (depth > 2))
    if depth > 1:
        for turn in (-1, 1):
            _branch(draw, f, texture, a2, b2, angle + turn * texture.uniform(0.3, 0.9),
                    length * texture.uniform(0.55, 0.8), depth - 1, width)


def _vignette(img: np.ndarray, f: _Frame, rng: np.random.Generator) -> np.ndarray:
    """The dermatoscope: a dark circular border (contact lens) or soft darkening to the corners."""
    dist = np.hypot(f.x - f.w / 2, f.y - f.h / 2) / math.hypot(f.w / 2, f.h / 2)  # 1 at corners
    if rng.random() < 0.4:
        edge = rng.uniform(0.8, 0.98)
        dark = np.clip((dist - edge) / 0.04, 0, 1)
        return _mix(img, (rng.integers(5, 25),) * 3, dark)  # type: ignore[arg-type]
    return img * (1 - np.float32(rng.uniform(0.05, 0.3)) * dist**2)


# --- the dataset -----------------------------------------------------------------------------------


def class_counts(n: int) -> dict[str, int]:
    """Images per class for an ``n``-image dataset, summing to ``n``: ISIC 2019 frequencies with
    the rare classes raised to :data:`MIN_SHARE` of the images, so that a small set still has
    enough of each class to learn from and to split (at least 2 images and 2 lesions per class from
    ``n = 32``, 3 from ``n = 63``; 1 image per class below 32)."""
    if n < len(CLASSES):
        raise ValueError(f"a synthetic dataset needs at least {len(CLASSES)} images (one per "
                         f"class), got n={n}")
    floor = max(2, round(MIN_SHARE * n)) if n >= 32 else 1
    raw = np.array([CLASS_FREQUENCY[c] for c in CLASSES]) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    short = np.maximum(floor - counts, 0)
    counts += short
    for _ in range(int(short.sum())):  # give back from the largest class
        counts[np.argmax(counts)] -= 1
    return dict(zip(CLASSES, counts.tolist()))


def _plan(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per image: class, lesion number and view (0 = first photograph), shuffled."""
    rows: list[tuple[str, int, int]] = []
    lesion = 0
    for cls, count in class_counts(n).items():
        # second photographs never leave a class with fewer than 3 lesions (or than its images)
        repeats = min(int(count * REPEAT_SHARE), max(count - 3, 0))
        lesions = count - repeats
        for k in range(lesions):
            rows += [(cls, lesion + k, view) for view in range(1 + (k < repeats))]
        lesion += lesions
    plan = pd.DataFrame(rows, columns=["cls", "lesion", "view"])
    return plan.iloc[rng.permutation(len(plan))].reset_index(drop=True)


def _prepare(out: Path) -> None:
    """Make ``out`` ready: new, empty, or holding an earlier synthetic dataset (which is replaced).
    Anything else is refused so that a wrong path never overwrites real data."""
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder; choose a folder for the dataset",
                        source=str(out))
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DataError(f"the folder is not empty and holds no synthetic dataset ({MARKER}); "
                            "choose an empty or new folder", source=str(out))
        shutil.rmtree(out / INPUT_DIR, ignore_errors=True)
        for name in (GROUND_TRUTH, METADATA, MARKER):
            (out / name).unlink(missing_ok=True)
    (out / INPUT_DIR).mkdir(parents=True, exist_ok=True)


def write_synthetic_dataset(out: Path | str, n: int = 400, seed: int = 0, width: int = 200) -> Path:
    """Write an ``n``-image synthetic dataset in the ISIC 2019 layout into ``out``; returns ``out``.

    Images are ``width`` x 3/4 ``width`` JPEGs named ``SYN_0000000.jpg`` ...; lesions ``SYNL_...``
    (about 12% of images are a second photograph of a lesion: same lesion and patient, new pose,
    lighting and hairs). ``out`` must be new, empty, or hold an earlier synthetic dataset (replaced);
    a ``SYNTHETIC.json`` records the generator's arguments. Same arguments, same files."""
    if width < 32:
        raise ValueError(f"width must be at least 32 pixels, got {width}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    plan = _plan(n, rng)
    _prepare(out)
    lesion_order = plan["lesion"].drop_duplicates().tolist()  # numbered by first appearance
    lesion_name = {lesion: f"SYNL_{k:07d}" for k, lesion in enumerate(lesion_order)}
    lesion_cls = plan.drop_duplicates("lesion").set_index("lesion")["cls"]
    params = {lesion: sample_lesion(lesion_cls[lesion], rng) for lesion in lesion_order}
    patient = {lesion: sample_metadata(lesion_cls[lesion], rng) for lesion in lesion_order}
    truth, meta = [], []
    for i, row in enumerate(tqdm(plan.itertuples(index=False), total=len(plan), disable=None,
                                 leave=False, desc="synthetic images", unit="img")):
        image = f"SYN_{i:07d}"
        img = draw_lesion(params[row.lesion], rng, width)
        img.save(out / INPUT_DIR / f"{image}.jpg", format="JPEG", quality=JPEG_QUALITY)
        truth.append({"image": image, **{c: float(c == row.cls) for c in (*CLASSES, "UNK")}})
        m = patient[row.lesion]
        meta.append({"image": image, "age_approx": m["age_approx"],
                     "anatom_site_general": "" if m["anatom_site_general"] == MISSING
                     else m["anatom_site_general"],
                     "lesion_id": lesion_name[row.lesion],
                     "sex": "" if m["sex"] == MISSING else m["sex"]})
    pd.DataFrame(truth).to_csv(out / GROUND_TRUTH, index=False)
    pd.DataFrame(meta).to_csv(out / METADATA, index=False)
    (out / MARKER).write_text(json.dumps({
        "generator": "skinlesion.data.synthetic.write_synthetic_dataset", "n": n, "seed": seed,
        "width": width, "classes": class_counts(n), "note": "synthetic images, no patient data"},
        indent=2) + "\n")
    return out
