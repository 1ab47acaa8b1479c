"""The out-of-distribution gate: is an image unlike the images a version was trained on?

Three checks, each a Mahalanobis distance to the version's *training* images (their mean and a
Ledoit-Wolf shrunk covariance, scikit-learn):

* the **embedding**: the monitoring embedding every neural answer already computes (the upright
  view's pooled backbone features through a fixed random projection, :mod:`skinlesion.model.neural`)
  — what the network makes of the image — taken as its *direction* (the unit vector) and the
  logarithm of its length (:func:`embedding_features`). The direction is what tells a degraded
  image: on the real data a JPEG re-encoded at quality 3 keeps the embedding's components within
  their training spread but turns it away from the training images, which the raw components'
  distance did not see (README, monitoring validation: the gate's flags by check);
* the **image statistics** (:data:`GATE_STATS`: brightness, contrast, saturation, channel means,
  log sharpness) — an acquisition the network may be blind to (a strong colour cast, under-exposure,
  heavy blur) but a clinician would not trust — taken jointly (a Mahalanobis distance) and one by
  one (:class:`Extremes`: the largest number of training standard deviations any one statistic
  lies from the training mean; a heavily blurred image is far off in sharpness alone, which the
  joint distance, spread over seven dimensions, lets through about half the time);
* the **texture** (:class:`Texture`; versions registered since it exists): the per-channel mean and
  standard deviation of the upright view's activations after each of the backbone's first
  :data:`~skinlesion.model.neural.TEXTURE_BLOCKS` blocks, computed in the answer's own forward
  (:class:`~skinlesion.model.neural.ViewsNet`), standardised by the training images' mean and
  standard deviation and projected on their first :data:`TEXTURE_COMPONENTS` principal components
  (scikit-learn PCA). Early blocks see edges, colour and grain before the network has decided it
  looks at a lesion: a drawn lesion, a colour cast, heavy blur or JPEG blocks change them even when
  the pooled embedding stays inside the training spread. Its arrays (standardisation, components,
  mean and precision) are a sidecar file of the version folder (:data:`TEXTURE_FILE`), the card
  holds its bound.

An image beyond any bound is out of distribution. The bounds sit at one quantile of the distances
of the version's *validation* answers (images it never trained on), the quantile chosen so that
the checks together flag :data:`OOD_VALIDATION_SHARE` of them (:func:`union_quantile`).
The gate is fitted once when a version is registered and stored in its card (``ood``);
:func:`card_gate` rebuilds it (a card of an earlier form, raw embedding components or no texture
check, still reads: its answers have no texture distance).
The Predictor answers ``uncertain`` with the reason; monitoring reuses it for the share of a
window's answers out of distribution. Pure numpy + scikit-learn: no torch, SQL or streamlit.

On the shipped reference (its test split, synthetic lesions, strong and moderate acquisition
shifts of its test images; README, monitoring validation) the texture check is what flags drawn
lesions (:mod:`skinlesion.data.synthetic`: their embeddings fall inside the training spread) and
most of a strong colour cast or blur; it also flags images re-encoded at JPEG quality 20 or below,
which are then answered ``uncertain``.

What it does not catch: moderate acquisition shifts (a colour cast x1.10/x0.90, a 1.5 px blur, a
3x upsampling pass nearly all images: they are drift's to tell), and images that happen to look
like the training images down to their early activations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

#: Share of the validation answers the checks together flag (each check's bound is one quantile
#: of its validation distances, the same for all, chosen to flag this share in all).
OOD_VALIDATION_SHARE = 0.01
#: The bounds' quantile is searched on this grid (a finer one would chase single images).
QUANTILE_GRID = tuple(round(1 - k / 2000, 4) for k in range(1, 41))  # 0.9995 .. 0.98
#: How the embedding check reads an embedding: ``direction`` (unit vector and log length,
#: :func:`embedding_features`) or ``raw`` (its components; cards written before the direction).
EMBEDDING_FORMS = ("direction", "raw")
#: The gate needs at least this many training and validation images.
MIN_EMBEDDINGS = 20
#: The image statistics the gate checks jointly (sharpness on a log scale).
GATE_STATS = ("brightness", "contrast", "saturation", "mean_r", "mean_g", "mean_b", "sharpness")
#: The texture check's principal components (of the standardised texture statistics; fewer when
#: there are fewer statistics or training images). On the real data (the reference's 352 statistics,
#: its 2,000 training and 1,211 validation images), with the bound at the 99.8 % quantile the four
#: checks share, 64 components flagged 56 % of 100 synthetic lesions, 128 all of them (as all 352
#: do), with a sidecar a third the size.
TEXTURE_COMPONENTS = 128
#: The texture check's arrays, beside the card in the version folder.
TEXTURE_FILE = "ood_texture.npz"


def embedding_features(embeddings: object, form: str = "direction") -> np.ndarray:
    """The embedding check's rows (n, d + 1 for ``direction``) of embeddings (n, d): each one's unit
    vector and the logarithm of its length (``direction``), or the embeddings as they are (``raw``)."""
    x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    if form == "raw":
        return x
    if form != "direction":
        raise ValueError(f"unknown embedding form {form!r}; known: {', '.join(EMBEDDING_FORMS)}")
    length = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.hstack([x / length, np.log(length)])


def stats_matrix(stats: pd.DataFrame | Sequence[Mapping[str, float]]) -> np.ndarray:
    """The :data:`GATE_STATS` of each row (a table, or one mapping per image) as an (n, 7) array,
    sharpness as its logarithm."""
    if isinstance(stats, pd.DataFrame):
        x = stats.loc[:, list(GATE_STATS)].to_numpy(dtype=np.float64).copy()
    else:  # one answer's mappings on the serving path: no table built (a hundredth of the time)
        x = np.array([[row[name] for name in GATE_STATS] for row in stats],
                     dtype=np.float64).reshape(-1, len(GATE_STATS))
    x[:, -1] = np.log(np.maximum(x[:, -1], 1e-6))
    return x


@dataclass(frozen=True)
class Check:
    """One Mahalanobis check: ``mean`` and ``precision`` (inverse shrunk covariance) of the
    training rows, and the ``bound`` beyond which a row is out of distribution."""

    mean: np.ndarray
    precision: np.ndarray
    bound: float

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if self.mean.ndim != 1 or self.precision.shape != (d, d):
            raise ValueError(f"an OOD check needs a mean (d,) and a precision (d, d), got "
                             f"{self.mean.shape} and {self.precision.shape}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"the OOD bound must be a positive number, got {self.bound}")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, rows: object) -> np.ndarray:
        """Mahalanobis distance of each row of ``rows`` (n, d) to the training rows."""
        x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if x.shape[1] != self.dim:
            raise ValueError(f"rows have {x.shape[1]} components, the gate {self.dim}: "
                             "use the gate of the version that computed them")
        centred = x - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "precision": self.precision.tolist(), "bound": self.bound}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["precision"], dtype=np.float64),
                   float(data["bound"]))


def fit_check(train: np.ndarray, validation: np.ndarray, quantile: float) -> Check:
    """A :class:`Check` fitted on ``train`` rows and bound at ``quantile`` of ``validation``'s."""
    covariance = LedoitWolf().fit(train)
    check = Check(covariance.location_, covariance.precision_, 1.0)
    return Check(check.mean, check.precision, float(np.quantile(check.distance(validation), quantile)))


def union_quantile(distances: Sequence[np.ndarray], share: float) -> float:
    """The smallest quantile of :data:`QUANTILE_GRID` at which bounding each check's validation
    ``distances`` at that quantile flags at most ``share`` of the images with any check (the
    grid's largest when none does)."""
    fitting = [q for q in QUANTILE_GRID
               if np.any([d > np.quantile(d, q) for d in distances], axis=0).mean() <= share]
    return min(fitting) if fitting else max(QUANTILE_GRID)


@dataclass(frozen=True)
class Extremes:
    """The one-by-one statistics check: training ``mean`` and standard deviation ``scale`` of each
    of :data:`GATE_STATS`, and the ``bound`` on the largest ``|x - mean| / scale`` of a row."""

    mean: np.ndarray
    scale: np.ndarray
    bound: float

    def __post_init__(self) -> None:
        if self.mean.shape != (len(GATE_STATS),) or self.scale.shape != self.mean.shape or (self.scale <= 0).any():
            raise ValueError(f"the extremes check needs a mean and a positive scale for each of {len(GATE_STATS)} "
                             f"statistics, got {self.mean.shape} and {self.scale.shape}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"the OOD bound must be a positive number, got {self.bound}")

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """``|x - mean| / scale`` of each statistic of each row of a :func:`stats_matrix`."""
        return np.abs((np.atleast_2d(rows) - self.mean) / self.scale)

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """The largest score of each row."""
        return self.scores(rows).max(axis=1)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "bound": self.bound}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Extremes:
        return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["scale"], dtype=np.float64),
                   float(data["bound"]))


@dataclass(frozen=True)
class Texture:
    """The texture check: each row of texture statistics standardised by the training images'
    ``mean`` and ``scale`` (standard deviation), projected on ``components`` (k, F: principal
    directions of the standardised training rows), and its Mahalanobis distance (``check``, k-d)."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    check: Check

    def __post_init__(self) -> None:
        f = self.mean.shape[0]
        if (self.mean.ndim != 1 or self.scale.shape != (f,) or (self.scale <= 0).any()
                or self.components.shape != (self.check.dim, f)):
            raise ValueError(f"the texture check needs a mean and a positive scale (F,) and components "
                             f"(k, F) for a k-d check, got {self.mean.shape}, {self.scale.shape}, "
                             f"{self.components.shape} and a {self.check.dim}-d check")

    @property
    def width(self) -> int:
        """How many texture statistics the check reads (F)."""
        return int(self.mean.shape[0])

    @property
    def bound(self) -> float:
        return self.check.bound

    def distance(self, rows: object) -> np.ndarray:
        """Mahalanobis distance of each row of texture statistics (n, F) to the training rows."""
        x = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        if x.shape[1] != self.width:
            raise ValueError(f"rows have {x.shape[1]} texture statistics, the gate {self.width}: "
                             "use the gate of the version that computed them")
        return self.check.distance(((x - self.mean) / self.scale) @ self.components.T)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the sidecar file (:data:`TEXTURE_FILE`)."""
        return {"mean": self.mean, "scale": self.scale, "components": self.components,
                "check_mean": self.check.mean, "check_precision": self.check.precision}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], bound: float) -> Texture:
        return cls(np.asarray(arrays["mean"], dtype=np.float64), np.asarray(arrays["scale"], dtype=np.float64),
                   np.asarray(arrays["components"], dtype=np.float64),
                   Check(np.asarray(arrays["check_mean"], dtype=np.float64),
                         np.asarray(arrays["check_precision"], dtype=np.float64), float(bound)))


def fit_texture(train: np.ndarray) -> Texture:
    """A :class:`Texture` check fitted on training rows of texture statistics (n, F), bound at 1
    (:func:`fit_ood_gate` sets the bound)."""
    mean = train.mean(axis=0)
    scale = np.maximum(train.std(axis=0), 1e-6)
    z = (train - mean) / scale
    k = min(TEXTURE_COMPONENTS, z.shape[1], z.shape[0] - 1)
    components = PCA(k, random_state=0).fit(z).components_
    covariance = LedoitWolf().fit(z @ components.T)
    return Texture(mean, scale, components, Check(covariance.location_, covariance.precision_, 1.0))


@dataclass(frozen=True)
class OODGate:
    """The ``embedding`` and image-``stats`` checks (see the module docstring), each bound at
    ``quantile`` of ``n_validation`` validation images, fitted on ``n_train`` training images;
    ``embedding_form`` says how the embedding check reads an embedding (:data:`EMBEDDING_FORMS`);
    ``extremes`` is the one-by-one statistics check (None in cards written before it);
    ``texture`` the texture check (None in cards written before it: answers then have no texture
    distance)."""

    embedding: Check
    stats: Check
    quantile: float
    n_train: int
    n_validation: int
    embedding_form: str = "direction"
    extremes: Extremes | None = None
    texture: Texture | None = None

    def __post_init__(self) -> None:
        if self.embedding_form not in EMBEDDING_FORMS:
            raise ValueError(f"unknown embedding form {self.embedding_form!r}; known: {', '.join(EMBEDDING_FORMS)}")
        extra = 1 if self.embedding_form == "direction" else 0
        if self.embedding.dim <= extra:
            raise ValueError(f"an embedding check of form {self.embedding_form!r} needs more than {extra} "
                             f"components, got {self.embedding.dim}")

    @property
    def dim(self) -> int:
        """Length of the embeddings the gate checks."""
        return self.embedding.dim - (1 if self.embedding_form == "direction" else 0)

    def embedding_distance(self, embeddings: object) -> np.ndarray:
        """The embedding check's distance of each embedding (n, :attr:`dim`)."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if x.shape[1] != self.dim:
            raise ValueError(f"rows have {x.shape[1]} components, the gate {self.dim}: "
                             "use the gate of the version that computed them")
        return self.embedding.distance(embedding_features(x, self.embedding_form))

    def flags_by_check(self, embeddings: object, stats: pd.DataFrame | Sequence[Mapping[str, float]]
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Which images each check (embedding, image statistics jointly or one by one) finds out of
        distribution."""
        x = stats_matrix(stats)
        by_stats = self.stats.distance(x) > self.stats.bound
        if self.extremes is not None:
            by_stats |= self.extremes.distance(x) > self.extremes.bound
        return self.embedding_distance(embeddings) > self.embedding.bound, by_stats

    @property
    def texture_bound(self) -> float | None:
        """The texture check's bound on :meth:`texture_distance` (None without a texture check)."""
        return None if self.texture is None else self.texture.bound

    def texture_distance(self, texture: object) -> np.ndarray:
        """The texture check's distance of each row of texture statistics (n, F), what an answer
        records as ``texture_distance``."""
        if self.texture is None:
            raise ValueError("this gate has no texture check (a card written before it); "
                             "refit the gate to get one")
        return self.texture.distance(texture)

    def texture_flags(self, distances: object) -> np.ndarray:
        """Which texture distances (as answers record them; NaN or None: not measured, not
        flagged) lie beyond the texture check's bound; none without a texture check."""
        d = np.ravel(np.asarray(distances, dtype=np.float64))  # None becomes NaN
        if self.texture is None:
            return np.zeros(d.shape, dtype=bool)
        return np.nan_to_num(d, nan=-np.inf) > self.texture.bound

    def flags(self, embeddings: object, stats: pd.DataFrame | Sequence[Mapping[str, float]],
              texture_distances: object = None) -> np.ndarray:
        """Which images (rows of ``embeddings`` and of ``stats``, with their texture distances
        where given) are out of distribution."""
        by_embedding, by_stats = self.flags_by_check(embeddings, stats)
        if texture_distances is None:
            return by_embedding | by_stats
        return by_embedding | by_stats | self.texture_flags(texture_distances)

    def reasons(self, embedding: Sequence[float], stats: Mapping[str, float],
                texture_distance: float | None = None) -> list[str]:
        """Why one image is out of distribution (empty when it is not); ``texture_distance`` is
        its :meth:`texture_distance` (None: not measured)."""
        out = []
        if (self.texture is not None and texture_distance is not None
                and texture_distance > self.texture.bound):
            out.append(f"out of distribution: colour, grain and texture unlike the training images "
                       f"(texture distance {texture_distance:.0f} > {self.texture.bound:.0f})")
        distance = float(self.embedding_distance(embedding)[0])
        if distance > self.embedding.bound:
            out.append(f"out of distribution: the image is unlike the training images (embedding distance "
                       f"{distance:.1f} > {self.embedding.bound:.1f}, the {self.quantile:.2%} quantile of "
                       "validation images)")
        x = stats_matrix([stats])
        distance = float(self.stats.distance(x)[0])
        if distance > self.stats.bound:
            out.append(f"out of distribution: colour, exposure or sharpness unlike the training images "
                       f"(statistics distance {distance:.1f} > {self.stats.bound:.1f})")
        if self.extremes is not None and float(self.extremes.distance(x)[0]) > self.extremes.bound:
            scores = self.extremes.scores(x)[0]
            worst = int(scores.argmax())
            out.append(f"out of distribution: {GATE_STATS[worst]} unlike the training images ({scores[worst]:.1f} "
                       f"standard deviations from their mean > {self.extremes.bound:.1f})")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the model card (the texture check's bound and sizes; its arrays go to
        :data:`TEXTURE_FILE`: :meth:`save_arrays`); :meth:`from_dict` reads it."""
        texture = None if self.texture is None else {
            "file": TEXTURE_FILE, "bound": self.texture.bound, "statistics": self.texture.width,
            "components": self.texture.check.dim}
        return {"method": "mahalanobis", "embedding": self.embedding.as_dict(), "stats": self.stats.as_dict(),
                "stats_names": list(GATE_STATS), "quantile": self.quantile, "n_train": self.n_train,
                "n_validation": self.n_validation, "embedding_form": self.embedding_form,
                "extremes": None if self.extremes is None else self.extremes.as_dict(), "texture": texture}

    def save_arrays(self, directory: Path) -> None:
        """Write the texture check's arrays into the version folder ``directory`` (nothing without
        a texture check)."""
        if self.texture is not None:
            np.savez(Path(directory) / TEXTURE_FILE,  # float32: half the size, same distances to 1e-5
                     **{name: array.astype(np.float32) for name, array in self.texture.arrays().items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], directory: Path | None = None) -> OODGate:
        """The gate of a card's ``ood`` section; its texture check is read from ``directory`` (the
        version folder; without it, the gate has no texture check)."""
        if data.get("method") != "mahalanobis" or "stats" not in data:
            raise ValueError("unknown OOD gate in the card; re-register the version (known: mahalanobis "
                             "over the embedding and the image statistics)")
        texture = None
        if data.get("texture") and directory is not None:
            path = Path(directory) / str(data["texture"]["file"])
            if not path.is_file():
                raise ValueError(f"the card's OOD gate has a texture check but {path} is missing; "
                                 "refit the gate (python -m skinlesion.reference --recalibrate)")
            with np.load(path) as arrays:
                texture = Texture.from_arrays(arrays, float(data["texture"]["bound"]))
        return cls(Check.from_dict(data["embedding"]), Check.from_dict(data["stats"]), float(data["quantile"]),
                   int(data["n_train"]), int(data["n_validation"]), str(data.get("embedding_form", "raw")),
                   Extremes.from_dict(data["extremes"]) if data.get("extremes") else None, texture)


def card_gate(card_extra: Mapping[str, Any] | None, directory: Path | None = None) -> OODGate | None:
    """The gate stored in a model card's extra keys (``ood``), or None for a version without one;
    pass the version folder as ``directory`` to get its texture check (:data:`TEXTURE_FILE`)."""
    data = (card_extra or {}).get("ood")
    return OODGate.from_dict(data, directory) if data else None


def fit_ood_gate(train_embeddings: object, train_stats: pd.DataFrame, validation_embeddings: object,
                 validation_stats: pd.DataFrame, *, share: float = OOD_VALIDATION_SHARE,
                 train_texture: object = None, validation_texture: object = None) -> OODGate:
    """The gate of a version from its training and validation images' embeddings (n, d) and
    image statistics (tables with :data:`GATE_STATS`), and their texture statistics (n, F) where
    given (the texture check), its checks bound to flag ``share`` of the validation images together
    (:func:`union_quantile`)."""
    x_train = np.asarray(train_embeddings, dtype=np.float64)
    x_val = np.asarray(validation_embeddings, dtype=np.float64)
    if x_train.ndim != 2 or x_val.ndim != 2 or x_train.shape[1] != x_val.shape[1]:
        raise ValueError(f"training and validation embeddings must be (n, d) with the same d, got "
                         f"{x_train.shape} and {x_val.shape}")
    if len(train_stats) != len(x_train) or len(validation_stats) != len(x_val):
        raise ValueError("one row of image statistics per embedding, on each side")
    if min(len(x_train), len(x_val)) < MIN_EMBEDDINGS:
        raise ValueError(f"an OOD gate needs at least {MIN_EMBEDDINGS} training and validation "
                         f"images, got {len(x_train)} and {len(x_val)}")
    if not 0 < share < 0.5:
        raise ValueError(f"the share of validation images flagged must be in (0, 0.5), got {share}")
    checks = [(embedding_features(x_train), embedding_features(x_val)),
              (stats_matrix(train_stats), stats_matrix(validation_stats))]
    fitted = [fit_check(train, validation, 0.5) for train, validation in checks]
    stats_train, stats_val = checks[1]
    extremes = Extremes(stats_train.mean(axis=0), np.maximum(stats_train.std(axis=0), 1e-12), 1.0)
    distances = [check.distance(validation) for check, (_, validation) in zip(fitted, checks, strict=True)]
    distances.append(extremes.distance(stats_val))
    texture = _texture_check(train_texture, validation_texture, len(x_train), len(x_val))
    if texture is not None:
        distances.append(texture.distance(validation_texture))
    quantile = union_quantile(distances, share)
    bounds = [float(np.quantile(d, quantile)) for d in distances]
    embedding, stats = (Check(check.mean, check.precision, bound) for check, bound in zip(fitted, bounds, strict=False))
    return OODGate(embedding, stats, quantile, len(x_train), len(x_val), "direction",
                   Extremes(extremes.mean, extremes.scale, bounds[2]),
                   None if texture is None else Texture(texture.mean, texture.scale, texture.components,
                                                        Check(texture.check.mean, texture.check.precision,
                                                              bounds[3])))


def _texture_check(train: object, validation: object, n_train: int, n_validation: int) -> Texture | None:
    """The texture check fitted on ``train`` rows (None when no texture statistics are given)."""
    if train is None and validation is None:
        return None
    t_train = np.asarray(train, dtype=np.float64)
    t_val = np.asarray(validation, dtype=np.float64)
    if (t_train.ndim != 2 or t_val.ndim != 2 or t_train.shape[1] != t_val.shape[1]
            or len(t_train) != n_train or len(t_val) != n_validation):
        raise ValueError(f"texture statistics must be one row (n, F) per training and validation image, "
                         f"with the same F, got {t_train.shape} and {t_val.shape} for {n_train} and "
                         f"{n_validation} images")
    return fit_texture(t_train)
