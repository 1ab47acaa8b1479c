"""The out-of-distribution gate: is an image unlike the images a version was trained on?

Two checks, each a Mahalanobis distance to the version's *training* images (their mean and a
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
  joint distance, spread over seven dimensions, lets through about half the time).

An image beyond any bound is out of distribution. The bounds sit at one quantile of the distances
of the version's *validation* answers (images it never trained on), the quantile chosen so that
the checks together flag :data:`OOD_VALIDATION_SHARE` of them (:func:`union_quantile`).
The gate is fitted once when a version is registered and stored in its card (``ood``);
:func:`card_gate` rebuilds it (a card of the earlier form, raw embedding components, still reads).
The Predictor answers ``uncertain`` with the reason; monitoring reuses it for the share of a
window's answers out of distribution. Pure numpy + scikit-learn: no torch, SQL or streamlit.

What it does not catch: synthetic lesions drawn by :mod:`skinlesion.data.synthetic` look like
lesions to the network's pooled features (their embeddings fall inside the training spread); the
image statistics flag a part of them (README, monitoring validation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.covariance import LedoitWolf

#: Share of the validation answers the two checks together flag (each check's bound is one
#: quantile of its validation distances, the same for both, chosen to flag this share in all).
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
class OODGate:
    """The ``embedding`` and image-``stats`` checks (see the module docstring), each bound at
    ``quantile`` of ``n_validation`` validation images, fitted on ``n_train`` training images;
    ``embedding_form`` says how the embedding check reads an embedding (:data:`EMBEDDING_FORMS`);
    ``extremes`` is the one-by-one statistics check (None in cards written before it)."""

    embedding: Check
    stats: Check
    quantile: float
    n_train: int
    n_validation: int
    embedding_form: str = "direction"
    extremes: Extremes | None = None

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

    def flags(self, embeddings: object, stats: pd.DataFrame | Sequence[Mapping[str, float]]) -> np.ndarray:
        """Which images (rows of ``embeddings`` and of ``stats``) are out of distribution."""
        by_embedding, by_stats = self.flags_by_check(embeddings, stats)
        return by_embedding | by_stats

    def reasons(self, embedding: Sequence[float], stats: Mapping[str, float]) -> list[str]:
        """Why one image is out of distribution (empty when it is not)."""
        out = []
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
        """JSON-able form for the model card; :meth:`from_dict` reads it."""
        return {"method": "mahalanobis", "embedding": self.embedding.as_dict(), "stats": self.stats.as_dict(),
                "stats_names": list(GATE_STATS), "quantile": self.quantile, "n_train": self.n_train,
                "n_validation": self.n_validation, "embedding_form": self.embedding_form,
                "extremes": None if self.extremes is None else self.extremes.as_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OODGate:
        if data.get("method") != "mahalanobis" or "stats" not in data:
            raise ValueError("unknown OOD gate in the card; re-register the version (known: mahalanobis "
                             "over the embedding and the image statistics)")
        return cls(Check.from_dict(data["embedding"]), Check.from_dict(data["stats"]), float(data["quantile"]),
                   int(data["n_train"]), int(data["n_validation"]), str(data.get("embedding_form", "raw")),
                   Extremes.from_dict(data["extremes"]) if data.get("extremes") else None)


def card_gate(card_extra: Mapping[str, Any] | None) -> OODGate | None:
    """The gate stored in a model card's extra keys (``ood``), or None for a version without one."""
    data = (card_extra or {}).get("ood")
    return OODGate.from_dict(data) if data else None


def fit_ood_gate(train_embeddings: object, train_stats: pd.DataFrame, validation_embeddings: object,
                 validation_stats: pd.DataFrame, *, share: float = OOD_VALIDATION_SHARE) -> OODGate:
    """The gate of a version from its training and validation images' embeddings (n, d) and
    image statistics (tables with :data:`GATE_STATS`), its checks bound to flag ``share`` of the
    validation images together (:func:`union_quantile`)."""
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
    quantile = union_quantile(distances, share)
    bounds = [float(np.quantile(d, quantile)) for d in distances]
    embedding, stats = (Check(check.mean, check.precision, bound) for check, bound in zip(fitted, bounds, strict=False))
    return OODGate(embedding, stats, quantile, len(x_train), len(x_val), "direction",
                   Extremes(extremes.mean, extremes.scale, bounds[2]))
