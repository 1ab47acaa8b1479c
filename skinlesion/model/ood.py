"""The out-of-distribution gate: is an image unlike the images a version was trained on?

It works on the monitoring embedding every neural answer already computes (the upright view's
pooled backbone features through a fixed random projection, :mod:`skinlesion.model.neural`): the
Mahalanobis distance of an answer's embedding to the version's *training* embeddings (their mean
and a Ledoit-Wolf shrunk covariance, scikit-learn), bounded at the :data:`OOD_QUANTILE` quantile of
the distances of its *validation* answers (images it never trained on). So about 1% of images like
the validation split are flagged, and an image unlike the training data (another modality, a
synthetic image, a strongly shifted acquisition) lands far beyond the bound.

The gate is fitted once when a version is registered and stored in its card (``ood``);
:class:`OODGate` rebuilds it from there. The Predictor answers ``uncertain`` with the reason when an
image is beyond the bound; monitoring reuses it for the share of a window's answers out of
distribution. Pure numpy + scikit-learn: no torch, SQL or streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

#: The gate's bound: this quantile of the validation answers' distances.
OOD_QUANTILE = 0.99
#: The gate needs at least this many training and validation embeddings.
MIN_EMBEDDINGS = 20


@dataclass(frozen=True)
class OODGate:
    """Mahalanobis distance to the training embeddings (``mean``, ``precision``: the inverse of their
    shrunk covariance) and the ``bound`` beyond which an image is out of distribution (the
    ``quantile`` of ``n_validation`` validation distances; ``n_train`` training embeddings)."""

    mean: np.ndarray
    precision: np.ndarray
    bound: float
    quantile: float
    n_train: int
    n_validation: int

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if self.mean.ndim != 1 or self.precision.shape != (d, d):
            raise ValueError(f"an OOD gate needs a mean (d,) and a precision (d, d), got "
                             f"{self.mean.shape} and {self.precision.shape}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"the OOD bound must be a positive number, got {self.bound}")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, embeddings: object) -> np.ndarray:
        """Mahalanobis distance of each row of ``embeddings`` (n, d) to the training embeddings."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if x.shape[1] != self.dim:
            raise ValueError(f"embeddings have {x.shape[1]} components, the gate {self.dim}: "
                             "use the gate of the version that computed them")
        centred = x - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def flags(self, embeddings: object) -> np.ndarray:
        """Which rows of ``embeddings`` are out of distribution (distance beyond the bound)."""
        return self.distance(embeddings) > self.bound

    def reason(self, distance: float) -> str:
        """The decision reason of an image flagged at ``distance``."""
        return (f"out of distribution: the image is unlike the training images (embedding distance "
                f"{distance:.1f} > {self.bound:.1f}, the {self.quantile:.0%} bound of validation images)")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the model card; :meth:`from_dict` reads it."""
        return {"method": "mahalanobis", "mean": self.mean.tolist(), "precision": self.precision.tolist(),
                "bound": self.bound, "quantile": self.quantile, "n_train": self.n_train,
                "n_validation": self.n_validation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OODGate:
        if data.get("method", "mahalanobis") != "mahalanobis":
            raise ValueError(f"unknown OOD gate method {data['method']!r}; known: mahalanobis")
        return cls(mean=np.asarray(data["mean"], dtype=np.float64),
                   precision=np.asarray(data["precision"], dtype=np.float64), bound=float(data["bound"]),
                   quantile=float(data["quantile"]), n_train=int(data["n_train"]),
                   n_validation=int(data["n_validation"]))


def card_gate(card_extra: dict[str, Any] | None) -> OODGate | None:
    """The gate stored in a model card's extra keys (``ood``), or None for a version without one."""
    data = (card_extra or {}).get("ood")
    return OODGate.from_dict(data) if data else None


def fit_ood_gate(train: object, validation: object, *, quantile: float = OOD_QUANTILE) -> OODGate:
    """The gate of a version from its training and validation embeddings (n, d) each."""
    x_train = np.asarray(train, dtype=np.float64)
    x_val = np.asarray(validation, dtype=np.float64)
    if x_train.ndim != 2 or x_val.ndim != 2 or x_train.shape[1] != x_val.shape[1]:
        raise ValueError(f"training and validation embeddings must be (n, d) with the same d, got "
                         f"{x_train.shape} and {x_val.shape}")
    if min(len(x_train), len(x_val)) < MIN_EMBEDDINGS:
        raise ValueError(f"an OOD gate needs at least {MIN_EMBEDDINGS} training and validation "
                         f"embeddings, got {len(x_train)} and {len(x_val)}")
    if not 0.5 < quantile < 1:
        raise ValueError(f"the OOD quantile must be in (0.5, 1), got {quantile}")
    covariance = LedoitWolf().fit(x_train)
    gate = OODGate(mean=covariance.location_, precision=covariance.precision_, bound=1.0,
                   quantile=quantile, n_train=len(x_train), n_validation=len(x_val))
    bound = float(np.quantile(gate.distance(x_val), quantile))
    return OODGate(mean=gate.mean, precision=gate.precision, bound=bound, quantile=quantile,
                   n_train=len(x_train), n_validation=len(x_val))
