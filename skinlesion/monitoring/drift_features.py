"""What drift compares: the monitored features (:class:`FeatureSpec`, :data:`DEFAULT_FEATURES`),
the cleaning of each side's columns, and the summaries each verdict carries for plotting (histograms
on shared edges, category shares). See :mod:`skinlesion.monitoring.drift` for how they are judged.
Pure numpy and pandas: no evidently (only :mod:`~skinlesion.monitoring.drift` imports it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, MISSING

Group = Literal["metadata", "image", "output", "embedding"]
Kind = Literal["numeric", "categorical", "embedding"]

#: Feature groups in display order.
GROUPS: tuple[str, ...] = ("metadata", "image", "output", "embedding")
#: The embedding drifted when more than this share of its components drifted (Evidently's default;

#: Bins of the numeric histograms in the summaries.
HISTOGRAM_BINS = 20
#: Numeric histograms span these percentiles of both samples together; values beyond fall in the
#: end bins, so one extreme image does not squash the plot.
HISTOGRAM_RANGE_PERCENTILES = (0.5, 99.5)
#: Prefix of the per-component columns the embedding is spread into for Evidently.


@dataclass(frozen=True)
class FeatureSpec:
    """One monitored feature: its column in the predictions table, its group and its kind."""

    name: str
    group: Group
    kind: Kind


def _specs(names: Iterable[str], group: Group, kind: Kind) -> tuple[FeatureSpec, ...]:
    return tuple(FeatureSpec(n, group, kind) for n in names)


METADATA_FEATURES = (FeatureSpec("age_approx", "metadata", "numeric"),
                     *_specs(("sex", "anatom_site_general"), "metadata", "categorical"))
#: The image statistics, and the OOD gate's texture distance (``predictions.texture_distance``: what
#: compression and resampling move, which the statistics barely see). A version whose gate has no
#: texture check logs none; the feature is then untested and the score rests on the other 15.
IMAGE_FEATURES = _specs(("width", "height", "brightness", "contrast", "saturation", "mean_r", "mean_g",
                         "mean_b", "sharpness", "texture_distance"), "image", "numeric")
OUTPUT_FEATURES = (FeatureSpec("predicted_class", "output", "categorical"),
                   FeatureSpec("p_malignant", "output", "numeric"))
#: Per-class probabilities: not in :data:`DEFAULT_FEATURES` (eight strongly related columns would
#: outweigh the inputs in the share of drifted features); add them through ``features=``.
CLASS_PROBABILITY_FEATURES = _specs((f"p_{c}" for c in CLASSES), "output", "numeric")
EMBEDDING_FEATURES = (FeatureSpec("embedding", "embedding", "embedding"),)
#: What :func:`compute_drift` compares unless told otherwise (16 features; 15 tested for a version
#: without the texture check).
DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    *METADATA_FEATURES, *IMAGE_FEATURES, *OUTPUT_FEATURES, *EMBEDDING_FEATURES)
_KNOWN_FEATURES = {f.name: f for f in (*DEFAULT_FEATURES, *CLASS_PROBABILITY_FEATURES)}


# --- summaries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericSummary:
    """One side's distribution of a numeric feature, ready to plot: ``density`` over the bins between
    consecutive ``edges`` (the same edges on both sides; it integrates to 1), ``n`` values used,
    the ``missing`` share of rows and the ``mean``. For the embedding, the values summarised are
    each row's Euclidean distance to the reference mean embedding."""

    edges: tuple[float, ...]
    density: tuple[float, ...]
    n: int
    missing: float
    mean: float


@dataclass(frozen=True)
class CategoricalSummary:
    """One side's category shares (reference categories first, in the reference's frequency order,
    then categories seen only in the current data; both sides list the same categories)."""

    shares: dict[str, float]
    n: int


Summary = NumericSummary | CategoricalSummary





def resolve_features(features: Iterable[FeatureSpec | str]) -> tuple[FeatureSpec, ...]:
    """Feature specs from specs or names of known features (:data:`DEFAULT_FEATURES` and
    :data:`CLASS_PROBABILITY_FEATURES`); an unknown name is a ValueError listing the known ones."""
    specs = []
    for f in features:
        if isinstance(f, FeatureSpec):
            specs.append(f)
        elif f in _KNOWN_FEATURES:
            specs.append(_KNOWN_FEATURES[f])
        else:
            raise ValueError(f"unknown drift feature {f!r}; known: {', '.join(_KNOWN_FEATURES)} "
                             "(or pass a FeatureSpec)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"drift features repeat a name: {names}")
    return tuple(specs)


def sample_rows(df: pd.DataFrame, sample_size: int, seed: int) -> pd.DataFrame:
    """``df`` itself when it has at most ``sample_size`` rows, else a seeded random sample of them."""
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    return df if len(df) <= sample_size else df.sample(n=sample_size, random_state=seed)


def numeric_column(df: pd.DataFrame, column: str, side: str) -> pd.Series:
    try:
        return pd.to_numeric(df[column], errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the {side} data's column must be numeric ({exc}); fix the values or leave "
                        "the feature out with features=", source=side, field=column) from None


def categorical_column(df: pd.DataFrame, column: str) -> pd.Series:
    values = df[column].astype(object)
    blank = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())
    return values.mask(blank, MISSING).astype(str)


def has_embedding(value: object) -> bool:
    """Whether a cell of the ``embedding`` column holds one (not None, NaN or empty)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and np.size(value) > 0


def embedding_matrix(values: pd.Series, side: str) -> np.ndarray:
    """Rows with an embedding as a float (n, d) array; rows without one (None/NaN/empty) are left
    out. An embedding of another length than the first is a DataError naming its (1-based) row."""
    rows: list[np.ndarray] = []
    for i, value in enumerate(values):
        if not has_embedding(value):
            continue
        row = np.asarray(value, dtype=float)
        if row.ndim != 1 or (rows and row.shape != rows[0].shape):
            raise DataError(f"embedding has shape {row.shape}, the first one {rows[0].shape if rows else '-'}"
                            ": all rows must come from one embedding model; compare one model version",
                            source=side, row=i + 1, field=str(values.name))
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, 0))


# --- summaries ----------------------------------------------------------------------------------------


def histogram_edges(reference: np.ndarray, current: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Shared bin edges over the central range of both samples (see HISTOGRAM_RANGE_PERCENTILES)."""
    both = np.concatenate([reference, current])
    lo, hi = np.percentile(both, HISTOGRAM_RANGE_PERCENTILES)
    if hi <= lo:  # (nearly) constant: one bin around the value
        lo, hi = lo - 0.5, hi + 0.5
        bins = 1
    return np.linspace(lo, hi, bins + 1)


def numeric_summary(values: np.ndarray, edges: np.ndarray, n_rows: int) -> NumericSummary:
    """Density of ``values`` (NaN already removed) over ``edges``, values outside in the end bins."""
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    widths = np.diff(edges)
    density = counts / (counts.sum() * widths) if counts.sum() else np.zeros_like(widths)
    return NumericSummary(edges=tuple(edges.tolist()), density=tuple(density.tolist()), n=len(values),
                          missing=1.0 - len(values) / n_rows if n_rows else 0.0,
                          mean=float(values.mean()) if len(values) else math.nan)


def categorical_summaries(reference: pd.Series, current: pd.Series
                          ) -> tuple[CategoricalSummary, CategoricalSummary]:
    """Category shares of both sides over the same categories (reference order, then new ones)."""
    ref_counts = reference.value_counts()
    cur_counts = current.value_counts()
    order = [*ref_counts.index, *(c for c in cur_counts.index if c not in ref_counts.index)]

    def shares(counts: pd.Series, n: int) -> CategoricalSummary:
        return CategoricalSummary({str(c): float(counts.get(c, 0)) / n if n else 0.0 for c in order}, n)

    return shares(ref_counts, len(reference)), shares(cur_counts, len(current))
