"""Data drift of a window of logged predictions against the model version's reference answers.

**What the reference is.** The version's reference answers (``registry.read_reference``): its
answers on the whole validation split, one row per image (a lesion photographed three times counts
three times, as it would in traffic, where each photograph is one answer), lesions never shared with
the training split. Registration stores what it holds in the card (``reference``: rows, lesions,
share of images from multi-image lesions, class mix; ``register.describe_reference``). The
current data is a window of the predictions table (``Store.sample_predictions(...,
include_embedding=True)``); both carry the predictions-table columns. Monitored features:

* ``metadata`` — ``age_approx`` (numeric, NaN = missing), ``sex``, ``anatom_site_general``;
* ``image`` — the image statistics of ``data.images.image_stats``;
* ``output`` — ``predicted_class`` (the class mix) and ``p_malignant``; the per-class probabilities
  (:data:`CLASS_PROBABILITY_FEATURES`) can be added through ``features=``;
* ``embedding`` — the projected image embedding, one feature for the whole vector.

**Drift is judged by size, calibrated against null replays.** Each feature gets one *distance*,
computed by Evidently's stat tests (the engine): the normed Wasserstein distance (Wasserstein
distance over the reference's standard deviation) for a numeric feature, the Jensen-Shannon
distance of the category shares for a categorical one, and for the embedding the mean normed
Wasserstein distance over its components. A feature drifts only when its distance is

1. beyond what same-population windows of that size show: the :class:`DriftNull` of the version,
   computed once (:func:`compute_null`, on first use by :func:`version_null`, which stores it in
   the version's folder beside the reference) by splitting the reference itself, lesion
   by lesion, into a pseudo-window of ``n`` answers and the rest, many times over, for a grid of
   window sizes; the bound is the null's :data:`NULL_QUANTILE` quantile at the window's size
   (interpolated between sizes, scaled by ``sqrt(1/n + 1/N)`` beyond them); and
2. at least a practical effect size (:data:`EFFECT_SIZES`: 0.1 for each distance, Evidently's own
   drift threshold for these tests: a tenth of a standard deviation of mass moved, or a shift of
   category shares of that order).

A version without a stored null is judged by the effect size alone (the result says so). Below
:data:`MIN_ANSWERS` answers no feature is judged: the score is None and the note says "not enough
answers", which the cockpit shows as such, not as a colour.

The data-drift score of the health policy (``drift_score``) is :attr:`DriftResult.share_drifted`:
the share of drifted features among those that could be tested.

Windows larger than ``sample_size`` rows are sampled (seeded) on each side, so a run over 100k
predictions takes seconds. This module is the only one in the project that imports evidently; what
it returns is the project's own dataclasses. :func:`drift_report_html` writes Evidently's full
``DataDriftPreset`` report for a closer look.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests import (
    StatTest, get_stattest, jensenshannon_stat_test, wasserstein_stat_test)
from evidently.legacy.core import ColumnType
from evidently.metrics.embeddings import EmbeddingsDrift, RatioDriftMethod
from evidently.presets import DataDriftPreset

from skinlesion import registry
from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, MISSING

Group = Literal["metadata", "image", "output", "embedding"]
Kind = Literal["numeric", "categorical", "embedding"]

#: Feature groups in display order.
GROUPS: tuple[str, ...] = ("metadata", "image", "output", "embedding")
#: The embedding drifted when more than this share of its components drifted (Evidently's default;
#: only the full HTML report uses this method).
EMBEDDING_RATIO_THRESHOLD = 0.2
#: Evidently's stat test of each kind of feature (the embedding: the numeric one per component).
STATTESTS: dict[str, StatTest] = {"numeric": wasserstein_stat_test, "categorical": jensenshannon_stat_test,
                                  "embedding": wasserstein_stat_test}
#: What each kind's distance is called in the results.
STATTEST_NAMES = {"numeric": "Wasserstein distance (normed)", "categorical": "Jensen-Shannon distance",
                  "embedding": "mean Wasserstein distance (normed) over the components"}
#: Practical effect size of each kind: a feature drifts only at or above it (Evidently's default
#: drift threshold of these distances).
EFFECT_SIZES: dict[str, float] = {"numeric": 0.1, "categorical": 0.1, "embedding": 0.1}
#: Below this many answers in a window no feature is judged ("not enough answers").
MIN_ANSWERS = 50
#: Window sizes the null distribution is computed for (those up to half the reference).
NULL_SIZES: tuple[int, ...] = (50, 100, 200, 300, 500, 1000, 2000)
#: Null replicates per window size, and the quantile of the null that bounds a feature's distance.
NULL_REPLICATES = 200
NULL_QUANTILE = 0.99
#: A reference needs this many rows for a null distribution.
MIN_NULL_ROWS = 20
#: The reference column that groups rows of one lesion (a null pseudo-window takes whole lesions).
GROUP_COLUMN = "lesion_id"
#: Bins of the numeric histograms in the summaries.
HISTOGRAM_BINS = 20
#: Numeric histograms span these percentiles of both samples together; values beyond fall in the
#: end bins, so one extreme image does not squash the plot.
HISTOGRAM_RANGE_PERCENTILES = (0.5, 99.5)
#: Prefix of the per-component columns the embedding is spread into for Evidently.
_EMBEDDING_PREFIX = "embedding_"


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
IMAGE_FEATURES = _specs(("width", "height", "brightness", "contrast", "saturation", "mean_r", "mean_g",
                         "mean_b", "sharpness"), "image", "numeric")
OUTPUT_FEATURES = (FeatureSpec("predicted_class", "output", "categorical"),
                   FeatureSpec("p_malignant", "output", "numeric"))
#: Per-class probabilities: not in :data:`DEFAULT_FEATURES` (eight strongly related columns would
#: outweigh the inputs in the share of drifted features); add them through ``features=``.
CLASS_PROBABILITY_FEATURES = _specs((f"p_{c}" for c in CLASSES), "output", "numeric")
EMBEDDING_FEATURES = (FeatureSpec("embedding", "embedding", "embedding"),)
#: What :func:`compute_drift` compares unless told otherwise (15 features).
DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    *METADATA_FEATURES, *IMAGE_FEATURES, *OUTPUT_FEATURES, *EMBEDDING_FEATURES)
_KNOWN_FEATURES = {f.name: f for f in (*DEFAULT_FEATURES, *CLASS_PROBABILITY_FEATURES)}


# --- results ------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one feature.

    ``stattest`` names the distance Evidently computed and ``score`` its value; ``null_bound`` is
    the version's null bound at this window's size (NaN without a stored null), ``effect_size`` the
    practical effect size, and ``threshold`` the larger of the two: the feature drifted when its
    score is at or above ``threshold`` (and the window had enough answers to be judged). A feature
    that could not be tested (no values on one side) has ``stattest`` ``""``, NaN score and
    threshold, ``drifted`` False and says why in ``note``. (Results stored by earlier releases may
    hold p-values: names ending in "p_value", drift when below ``threshold``.)
    """

    name: str
    group: str
    kind: str
    stattest: str
    score: float
    threshold: float
    drifted: bool
    reference_summary: Summary | None
    current_summary: Summary | None
    note: str = ""
    null_bound: float = math.nan
    effect_size: float = math.nan

    @property
    def tested(self) -> bool:
        """Whether a test ran (False for a feature without values on one side)."""
        return not math.isnan(self.score)

    @property
    def is_p_value(self) -> bool:
        """Whether ``score`` is a p-value (small = drift) rather than a distance (large = drift)."""
        return self.stattest.endswith("p_value")

    @property
    def severity(self) -> float:
        """How far past its threshold the score is (1 = at the threshold, larger = more drift),
        comparable across tests: ``-log10(p) / -log10(threshold)`` for p-values, ``score /
        threshold`` for distances; NaN when untested."""
        if not self.tested:
            return math.nan
        if self.is_p_value:
            return -math.log10(max(self.score, 1e-300)) / -math.log10(self.threshold)
        return self.score / self.threshold


@dataclass(frozen=True)
class DriftResult:
    """Drift of a window against the reference.

    ``share_drifted`` is the data-drift score of the health policy (share of drifted features among
    the tested ones; NaN when none could be tested, e.g. an empty window, or when the window has
    fewer than ``min_answers`` answers: :attr:`enough_answers` is then False). ``n_reference`` /
    ``n_current`` count the rows given, ``n_reference_used`` / ``n_current_used`` the rows compared
    after sampling (``sampled`` says whether either side was sampled). ``null`` says how the
    features were bounded (the version's null, or the effect size alone). ``notes`` explain what
    was skipped.
    """

    features: tuple[FeatureDrift, ...]
    share_drifted: float
    n_reference: int
    n_current: int
    sampled: bool
    n_reference_used: int = 0
    n_current_used: int = 0
    notes: tuple[str, ...] = ()
    min_answers: int = MIN_ANSWERS
    null: str = ""

    @property
    def enough_answers(self) -> bool:
        """Whether the window had enough answers for its features to be judged."""
        return self.n_current >= self.min_answers

    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features, most drifted first (for the playbook's hints)."""
        drifted = sorted((f for f in self.features if f.drifted), key=lambda f: -f.severity)
        return tuple(f.name for f in drifted)

    def by_group(self) -> dict[str, tuple[FeatureDrift, ...]]:
        """The features of each group present, groups in :data:`GROUPS` order."""
        return {g: tuple(f for f in self.features if f.group == g)
                for g in GROUPS if any(f.group == g for f in self.features)}

    def feature(self, name: str) -> FeatureDrift:
        """The verdict for feature ``name``; KeyError listing the features otherwise."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r} in this drift result; features: "
                       f"{', '.join(f.name for f in self.features)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN as None) for stored health snapshots; :meth:`from_dict` reads it."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Rebuild a result written by :meth:`as_dict`."""
        features = tuple(FeatureDrift(**{
            **f, "score": _none_to_nan(f["score"]), "threshold": _none_to_nan(f["threshold"]),
            "null_bound": _none_to_nan(f.get("null_bound")),
            "effect_size": _none_to_nan(f.get("effect_size")),
            "reference_summary": _summary_from_dict(f["reference_summary"]),
            "current_summary": _summary_from_dict(f["current_summary"])}) for f in data["features"])
        return cls(**{**data, "features": features, "share_drifted": _none_to_nan(data["share_drifted"]),
                      "notes": tuple(data.get("notes", ()))})


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _summary_from_dict(data: Mapping[str, Any] | None) -> Summary | None:
    if data is None:
        return None
    if "shares" in data:
        return CategoricalSummary(shares=dict(data["shares"]), n=data["n"])
    return NumericSummary(edges=tuple(data["edges"]), density=tuple(data["density"]), n=data["n"],
                          missing=data["missing"], mean=_none_to_nan(data["mean"]))


# --- inputs -------------------------------------------------------------------------------------------


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


def _numeric(df: pd.DataFrame, column: str, side: str) -> pd.Series:
    try:
        return pd.to_numeric(df[column], errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the {side} data's column must be numeric ({exc}); fix the values or leave "
                        "the feature out with features=", source=side, field=column) from None


def _categorical(df: pd.DataFrame, column: str) -> pd.Series:
    values = df[column].astype(object)
    blank = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())
    return values.mask(blank, MISSING).astype(str)


def _has_embedding(value: object) -> bool:
    """Whether a cell of the ``embedding`` column holds one (not None, NaN or empty)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and np.size(value) > 0


def embedding_matrix(values: pd.Series, side: str) -> np.ndarray:
    """Rows with an embedding as a float (n, d) array; rows without one (None/NaN/empty) are left
    out. An embedding of another length than the first is a DataError naming its (1-based) row."""
    rows: list[np.ndarray] = []
    for i, value in enumerate(values):
        if not _has_embedding(value):
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


# --- the comparison -----------------------------------------------------------------------------------


def _untested(spec: FeatureSpec, note: str, reference_summary: Summary | None = None,
              current_summary: Summary | None = None) -> FeatureDrift:
    return FeatureDrift(spec.name, spec.group, spec.kind, "", math.nan, math.nan, False,
                        reference_summary, current_summary, note)


@dataclass
class _Tabular:
    """The tabular part of a comparison: the cleaned feature columns of both sides, the names of
    those to test by kind, and why the others are skipped."""

    reference: pd.DataFrame
    current: pd.DataFrame
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def _tabular(reference: pd.DataFrame, current: pd.DataFrame, specs: Sequence[FeatureSpec]) -> _Tabular:
    """Clean the tabular feature columns; note the ones that cannot be tested and why."""
    out = _Tabular(pd.DataFrame(index=reference.index), pd.DataFrame(index=current.index))
    for spec in specs:
        if spec.kind == "embedding":
            continue
        absent = [side for side, df in (("reference", reference), ("current", current))
                  if spec.name not in df.columns]
        if absent:
            out.skipped[spec.name] = f"not tested: no column {spec.name!r} in the {' and '.join(absent)} data"
            continue
        if spec.kind == "numeric":
            ref, cur = _numeric(reference, spec.name, "reference"), _numeric(current, spec.name, "current")
            empty = [side for side, s in (("reference", ref), ("current", cur)) if s.notna().sum() == 0]
            if empty:
                out.skipped[spec.name] = f"not tested: no values in the {' and '.join(empty)} data"
            else:
                out.numeric.append(spec.name)
        else:
            ref, cur = _categorical(reference, spec.name), _categorical(current, spec.name)
            out.categorical.append(spec.name)
        out.reference[spec.name], out.current[spec.name] = ref.to_numpy(), cur.to_numpy()
    return out


def _summaries(spec: FeatureSpec, tab: _Tabular) -> tuple[Summary | None, Summary | None]:
    """Both sides' summaries of a tabular feature (None when its column is absent)."""
    if spec.name not in tab.reference.columns:
        return None, None
    ref, cur = tab.reference[spec.name], tab.current[spec.name]
    if spec.kind == "categorical":
        return categorical_summaries(ref, cur)
    ref_values, cur_values = ref.dropna().to_numpy(), cur.dropna().to_numpy()
    if not (len(ref_values) or len(cur_values)):
        return None, None
    edges = histogram_edges(ref_values, cur_values)  # an empty side plots as all missing
    return numeric_summary(ref_values, edges, len(ref)), numeric_summary(cur_values, edges, len(cur))


def embedding_method(reference: np.ndarray, current: np.ndarray) -> tuple[RatioDriftMethod, str]:
    """Evidently's ratio method with the component test Evidently would pick for a numeric column of
    this size (the first component stands for all), and a readable name for it."""
    component = get_stattest(pd.Series(reference[:, 0]), pd.Series(current[:, 0]), ColumnType.Numerical,
                             None)
    method = RatioDriftMethod(component_stattest=component.name,
                              component_stattest_threshold=component.default_threshold,
                              threshold=EMBEDDING_RATIO_THRESHOLD)
    name = (f"share of drifted components ({component.display_name} per component, "
            f"threshold {component.default_threshold:g})")
    return method, name


def _embedding_rows(df: pd.DataFrame, column: str, side: str) -> np.ndarray:
    """The embedding of each row as a float (n, d) array, NaN rows where a row has none."""
    values = df[column]
    matrix = embedding_matrix(values, side)
    present = values.map(_has_embedding).to_numpy(dtype=bool)
    out = np.full((len(df), matrix.shape[1] if matrix.size else 0), np.nan)
    out[present] = matrix
    return out


def _prepare(df: pd.DataFrame, specs: Sequence[FeatureSpec], side: str) -> dict[str, Any]:
    """Each feature's cleaned values, row-aligned with ``df`` (absent columns left out)."""
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in df.columns:
            continue
        if spec.kind == "numeric":
            out[spec.name] = _numeric(df, spec.name, side).to_numpy()
        elif spec.kind == "categorical":
            out[spec.name] = _categorical(df, spec.name).to_numpy()
        else:
            out[spec.name] = _embedding_rows(df, spec.name, side)
    return out


def feature_distance(kind: str, reference: np.ndarray, current: np.ndarray) -> float:
    """The drift distance of one feature between two samples of its cleaned values (see the module
    docstring), computed by Evidently's stat test of its kind; NaN when a side has no values (an
    embedding: fewer than 2 rows)."""
    test = STATTESTS[kind]
    if kind == "categorical":
        return float(test(pd.Series(reference), pd.Series(current), ColumnType.Categorical,
                          EFFECT_SIZES[kind]).drift_score)
    if kind == "numeric":
        ref, cur = reference[~np.isnan(reference)], current[~np.isnan(current)]
        if not (len(ref) and len(cur)):
            return math.nan
        return float(test(pd.Series(ref), pd.Series(cur), ColumnType.Numerical,
                          EFFECT_SIZES[kind]).drift_score)
    ref = reference[~np.isnan(reference).any(axis=1)] if reference.size else reference
    cur = current[~np.isnan(current).any(axis=1)] if current.size else current
    if len(ref) < 2 or len(cur) < 2:
        return math.nan
    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"reference embeddings have {ref.shape[1]} components, current ones "
                        f"{cur.shape[1]}: compare a window with its own model version's reference",
                        field="embedding")
    return float(np.mean([test(pd.Series(ref[:, k]), pd.Series(cur[:, k]), ColumnType.Numerical,
                               EFFECT_SIZES[kind]).drift_score for k in range(ref.shape[1])]))


# --- the null distribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftNull:
    """A version's null distribution of each feature's drift distance: for windows of each of
    ``sizes`` answers drawn from the reference population, the ``quantile`` of the distance between
    such a window and the rest of the reference (``bounds[feature][i]`` for ``sizes[i]``; NaN
    where the feature could not be measured). ``n_reference`` rows were split ``replicates`` times
    per size (seed ``seed``), whole lesions at a time when ``grouped_by`` names the lesion column."""

    sizes: tuple[int, ...]
    bounds: dict[str, tuple[float, ...]]
    n_reference: int
    quantile: float = NULL_QUANTILE
    replicates: int = NULL_REPLICATES
    seed: int = 0
    grouped_by: str = ""

    def __post_init__(self) -> None:
        if not self.sizes or any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise ValueError(f"null sizes must be increasing and not empty, got {self.sizes}")
        if any(s >= self.n_reference for s in self.sizes):
            raise ValueError(f"null sizes {self.sizes} must be below the reference's {self.n_reference} rows")
        for name, bounds in self.bounds.items():
            if len(bounds) != len(self.sizes):
                raise ValueError(f"feature {name!r} has {len(bounds)} null bounds for {len(self.sizes)} sizes")

    def _scale(self, n: float, n_reference: float) -> float:
        return math.sqrt(1 / n + 1 / n_reference)

    def bound(self, feature: str, n: int, n_reference: int | None = None) -> float:
        """The null bound of ``feature`` for a window of ``n`` answers compared with
        ``n_reference`` reference rows (default: the reference the null was computed on): the
        sampling scale ``sqrt(1/n + 1/N)`` times the median, over the computed sizes, of each
        size's bound over its own scale (one quantile per size is noisy; pooling the sizes on
        the scale they share steadies it); NaN for a feature without a null."""
        if feature not in self.bounds or n < 1:
            return math.nan
        scales = np.array([self._scale(s, self.n_reference - s) for s in self.sizes])
        ratios = np.array(self.bounds[feature], dtype=float) / scales
        return float(np.nanmedian(ratios) * self._scale(n, n_reference or self.n_reference)) \
            if np.isfinite(ratios).any() else math.nan

    def describe(self) -> str:
        """One line for the result's notes."""
        return (f"null: {self.quantile:.0%} quantile of {self.replicates} same-population windows "
                f"of {', '.join(map(str, self.sizes))} answers split from {self.n_reference} "
                f"reference answers{' by ' + self.grouped_by if self.grouped_by else ''}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN as None); :meth:`from_dict` reads it."""
        return _nan_to_none(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftNull:
        return cls(**{**data, "sizes": tuple(int(s) for s in data["sizes"]),
                      "bounds": {k: tuple(_none_to_nan(v) for v in vs) for k, vs in data["bounds"].items()}})


def _group_codes(reference: pd.DataFrame) -> tuple[np.ndarray, str]:
    """A group number per row: its lesion where the reference says, else the row itself."""
    if GROUP_COLUMN in reference.columns:
        ids = reference[GROUP_COLUMN].astype(object)
        ids = ids.where(ids.notna(), pd.Series([f"row-{i}" for i in range(len(ids))], index=ids.index))
        return pd.factorize(ids)[0], GROUP_COLUMN
    return np.arange(len(reference)), ""


def group_split(codes: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a pseudo-window of ``size`` rows made of whole groups in a random order (the
    last group taken may be cut) and of the rest: the rows of the groups not taken."""
    rank = rng.permutation(int(codes.max()) + 1)[codes]
    order = np.argsort(rank, kind="stable")
    window = order[:size]
    return window, np.flatnonzero(rank > rank[window[-1]])


def compute_null(reference: pd.DataFrame, *, features: Iterable[FeatureSpec | str] = DEFAULT_FEATURES,
                 sizes: Sequence[int] = NULL_SIZES, replicates: int = NULL_REPLICATES,
                 quantile: float = NULL_QUANTILE, seed: int = 0) -> DriftNull:
    """The :class:`DriftNull` of ``reference`` (a version's reference answers): for each size up to
    half the reference, ``replicates`` times, split it into a pseudo-window of that many answers
    (whole lesions, see :func:`group_split`) and the rest, and measure each feature's distance.
    A reference smaller than twice the smallest size gets one size, half its rows."""
    specs = resolve_features(features)
    if replicates < 20 or not 0.5 < quantile < 1:
        raise ValueError(f"a null needs at least 20 replicates and a quantile in (0.5, 1); got "
                         f"{replicates} and {quantile}")
    n = len(reference)
    usable = tuple(s for s in sizes if s <= n // 2) or ((n // 2,) if n >= MIN_NULL_ROWS else ())
    if not usable:
        raise DataError(f"the reference has {n} rows: a null distribution needs at least {MIN_NULL_ROWS}",
                        source="reference")
    values = _prepare(reference.reset_index(drop=True), specs, "reference")
    codes, grouped_by = _group_codes(reference)
    rng = np.random.default_rng(seed)
    bounds: dict[str, list[float]] = {s.name: [] for s in specs if s.name in values}
    for size in usable:
        draws = {name: [] for name in bounds}
        for _ in range(replicates):
            window, rest = group_split(codes, size, rng)
            for spec in specs:
                if spec.name in values:
                    column = values[spec.name]
                    draws[spec.name].append(feature_distance(spec.kind, column[rest], column[window]))
        for name, d in draws.items():
            finite = np.asarray(d)[np.isfinite(d)]
            bounds[name].append(float(np.quantile(finite, quantile)) if len(finite) else math.nan)
    return DriftNull(sizes=usable, bounds={k: tuple(v) for k, v in bounds.items()}, n_reference=n,
                     quantile=quantile, replicates=replicates, seed=seed, grouped_by=grouped_by)


def version_null(models_dir: Path, version: str, reference: pd.DataFrame) -> DriftNull | None:
    """The null distribution of ``version``'s ``reference``: the one stored in its folder, else
    computed now (:func:`compute_null`, seconds to a minute) and stored for every later run. A
    stored null of another reference size (the reference was replaced) is computed again. None for
    a reference too small to split (fewer than :data:`MIN_NULL_ROWS` rows): drift is then judged
    by the effect size alone, and says so."""
    if len(reference) < MIN_NULL_ROWS:
        return None
    stored = registry.read_drift_null(models_dir, version)
    if stored is not None and stored.get("n_reference") == len(reference):
        return DriftNull.from_dict(stored)
    null = compute_null(reference)
    registry.write_drift_null(models_dir, version, null.as_dict())
    return null


# --- the comparison ---------------------------------------------------------------------------------


def _verdict(spec: FeatureSpec, score: float, n_current: int, n_reference: int, null: DriftNull | None,
             judged: bool, summaries: tuple[Summary | None, Summary | None], note: str = "") -> FeatureDrift:
    if math.isnan(score):
        return _untested(spec, note or "not tested: no values on one side", *summaries)
    effect = EFFECT_SIZES[spec.kind]
    bound = null.bound(spec.name, n_current, n_reference) if null is not None else math.nan
    threshold = effect if math.isnan(bound) else max(effect, bound)
    drifted = judged and score >= threshold and (math.isnan(bound) or score > bound)
    return FeatureDrift(spec.name, spec.group, spec.kind, STATTEST_NAMES[spec.kind], score, threshold,
                        drifted, *summaries, note, null_bound=bound, effect_size=effect)


def _embedding_summaries(reference: np.ndarray, current: np.ndarray, n_ref: int,
                         n_cur: int) -> tuple[Summary, Summary]:
    centre = reference.mean(axis=0)
    ref_dist = np.linalg.norm(reference - centre, axis=1)
    cur_dist = np.linalg.norm(current - centre, axis=1)
    edges = histogram_edges(ref_dist, cur_dist)
    return numeric_summary(ref_dist, edges, n_ref), numeric_summary(cur_dist, edges, n_cur)


def _embedding_drift(spec: FeatureSpec, reference: pd.DataFrame, current: pd.DataFrame,
                     null: DriftNull | None, judged: bool) -> FeatureDrift:
    absent = [side for side, df in (("reference", reference), ("current", current)) if spec.name not in df]
    if absent:
        return _untested(spec, f"not tested: no column {spec.name!r} in the {' and '.join(absent)} data")
    ref = embedding_matrix(reference[spec.name], "reference")
    cur = embedding_matrix(current[spec.name], "current")
    empty = [side for side, m in (("reference", ref), ("current", cur)) if len(m) < 2]
    if empty:
        return _untested(spec, f"not tested: fewer than 2 embeddings in the {' and '.join(empty)} data")
    score = feature_distance(spec.kind, ref, cur)
    note = ("summaries: distance of each embedding to the reference mean embedding"
            + (f"; {len(current) - len(cur)} current rows without an embedding left out"
               if len(cur) < len(current) else ""))
    return _verdict(spec, score, len(current), len(reference), null, judged,
                    _embedding_summaries(ref, cur, len(reference), len(current)), note)


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, *, null: DriftNull | None = None,
                  min_answers: int = MIN_ANSWERS, sample_size: int = 5000, seed: int = 0,
                  features: Iterable[FeatureSpec | str] = DEFAULT_FEATURES) -> DriftResult:
    """Per-feature drift of ``current`` (a window of logged predictions) against ``reference`` (the
    model version's reference answers), both with predictions-table columns, judged against the
    version's ``null`` and the practical effect sizes (see the module docstring).

    Each side is sampled to at most ``sample_size`` rows (seeded by ``seed``). ``features`` are
    :class:`FeatureSpec` or names of known features; a feature whose column is absent, or which has
    no values on one side, is reported untested with a note. A window of fewer than
    ``min_answers`` answers has its distances measured but none judged (``share_drifted`` NaN, the
    note "not enough answers"). An empty ``current`` gives a result with ``n_current=0``, no
    features and a note; an empty ``reference`` is a DataError.
    """
    specs = resolve_features(features)
    if len(reference) == 0:
        raise DataError("the reference has no rows: drift needs the model version's validation answers; "
                        "register the version with its reference (registry.register)", source="reference")
    if len(current) == 0:
        return DriftResult((), math.nan, len(reference), 0, False, 0, 0,
                           ("the current window has no predictions: nothing to compare",), min_answers)
    ref, cur = sample_rows(reference, sample_size, seed), sample_rows(current, sample_size, seed)
    judged = len(current) >= min_answers
    tab = _tabular(ref, cur, specs)
    verdicts = []
    for spec in specs:
        if spec.kind == "embedding":
            verdicts.append(_embedding_drift(spec, ref, cur, null, judged))
        elif spec.name in tab.skipped:
            verdicts.append(_untested(spec, tab.skipped[spec.name], *_summaries(spec, tab)))
        else:
            score = feature_distance(spec.kind, tab.reference[spec.name].to_numpy(),
                                     tab.current[spec.name].to_numpy())
            verdicts.append(_verdict(spec, score, len(cur), len(ref), null, judged, _summaries(spec, tab)))
    tested = [f for f in verdicts if f.tested]
    share = sum(f.drifted for f in tested) / len(tested) if tested and judged else math.nan
    sampled = len(ref) < len(reference) or len(cur) < len(current)
    notes = [f"{f.name}: {f.note}" for f in verdicts if not f.tested]
    if not judged:
        notes.insert(0, f"not enough answers ({len(current)} of {min_answers}): drift not judged")
    if sampled:
        notes.append(f"sampled {len(ref)} of {len(reference)} reference and {len(cur)} of {len(current)} "
                     f"current rows (seed {seed})")
    how = (null.describe() if null is not None
           else "no null distribution stored with this version: judged by the practical effect size alone")
    return DriftResult(tuple(verdicts), share, len(reference), len(current), sampled, len(ref), len(cur),
                       tuple(notes), min_answers, how)


# --- the full report ----------------------------------------------------------------------------------


def _with_embedding_columns(df: pd.DataFrame, column: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``df`` that have an embedding, with it spread into one column per component."""
    df = df[df[column].map(_has_embedding)].reset_index(drop=True)
    matrix = embedding_matrix(df[column], column)
    columns = [f"{_EMBEDDING_PREFIX}{i}" for i in range(matrix.shape[1])]
    return pd.concat([df, pd.DataFrame(matrix, columns=columns)], axis=1), columns


def drift_report_html(reference: pd.DataFrame, current: pd.DataFrame, path: Path | str, *,
                      sample_size: int = 5000, seed: int = 0,
                      features: Iterable[FeatureSpec | str] = DEFAULT_FEATURES,
                      embeddings: bool = False) -> Path:
    """Write Evidently's full data-drift report (``DataDriftPreset``: dataset drift summary and a
    per-column table with distributions) of the tabular ``features`` to ``path``; return the path.

    Sampling as in :func:`compute_drift`. With ``embeddings=True`` and embeddings on both sides the
    report adds Evidently's ``EmbeddingsDrift`` (same ratio method, with its t-SNE view: slow, up to
    minutes) and the whole report is limited to the rows that have an embedding. An empty
    ``current`` or ``reference``, or no comparable feature, is a DataError (nothing to report).
    """
    specs = resolve_features(features)
    for side, df in (("reference", reference), ("current", current)):
        if len(df) == 0:
            raise DataError(f"the {side} data has no rows: no drift report to write", source=side)
    ref, cur = sample_rows(reference, sample_size, seed), sample_rows(current, sample_size, seed)
    embedding = next((s.name for s in specs if s.kind == "embedding"), None)
    emb_columns: list[str] = []
    if (embeddings and embedding is not None and embedding in ref and embedding in cur
            and ref[embedding].map(_has_embedding).sum() >= 2 and cur[embedding].map(_has_embedding).sum() >= 2):
        ref, emb_columns = _with_embedding_columns(ref, embedding)
        cur, cur_columns = _with_embedding_columns(cur, embedding)
        if cur_columns != emb_columns:
            raise DataError(f"reference embeddings have {len(emb_columns)} components, current ones "
                            f"{len(cur_columns)}: compare a window with its own model version's reference",
                            field=embedding)
    tab = _tabular(ref, cur, specs)
    if not tab.columns:
        raise DataError("none of the features can be compared (columns absent or empty): "
                        f"{'; '.join(f'{k}: {v}' for k, v in tab.skipped.items())}", source="current")
    metrics: list[Any] = [DataDriftPreset(columns=tab.columns)]
    if emb_columns:
        method, _ = embedding_method(ref[emb_columns].to_numpy(), cur[emb_columns].to_numpy())
        metrics.append(EmbeddingsDrift(embeddings_name=embedding, drift_method=method))
    definition = DataDefinition(numerical_columns=tab.numeric, categorical_columns=tab.categorical,
                                embeddings={embedding: emb_columns} if emb_columns else None)
    reference_data = pd.concat([tab.reference[tab.columns], ref[emb_columns]], axis=1)
    current_data = pd.concat([tab.current[tab.columns], cur[emb_columns]], axis=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)
        snapshot = Report(metrics).run(Dataset.from_pandas(current_data, data_definition=definition),
                                       Dataset.from_pandas(reference_data, data_definition=definition))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
