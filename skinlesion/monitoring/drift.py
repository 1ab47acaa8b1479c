"""Data drift of a window of logged predictions against the model version's reference answers.

The reference is the version's validation-split answers (``registry.read_reference``), the current
data a window of the predictions table (``Store.query_predictions(..., include_embedding=True)``);
both carry the predictions-table columns. Each monitored feature gets one statistical comparison:

* ``metadata`` — ``age_approx`` (numeric, NaN = missing), ``sex``, ``anatom_site_general``;
* ``image`` — the image statistics of ``data.images.image_stats``;
* ``output`` — ``predicted_class`` (the class mix) and ``p_malignant``; the per-class probabilities
  (:data:`CLASS_PROBABILITY_FEATURES`) can be added through ``features=``;
* ``embedding`` — the projected image embedding, one feature for the whole vector.

Tabular features run through one Evidently 0.7 ``Report`` of ``ValueDrift`` metrics (with tests on,
whose pass/fail is the drift verdict). Evidently chooses the statistical test per column, as in its
``DataDriftPreset``: with at most 1,000 reference rows K-S (numeric) or chi-square / Z-test
(categorical, or numeric with <= 5 distinct values), all p-values against 0.05; with more
reference rows the normed Wasserstein distance (numeric) or the Jensen-Shannon distance
(categorical), distances against 0.1. Missing values are left out of numeric tests; a missing
category (NaN or blank) is the ``"missing"`` category of :mod:`skinlesion.schema`. A category the
reference never saw is compared like any other (share 0 in the reference), so many of them drift.

The embedding goes through Evidently's ``RatioDriftMethod`` (the share of embedding components
that drifted, each component compared with the test Evidently picks for a numeric column; the
embedding drifted when more than 20% of its components did). Evidently's ``EmbeddingsDrift``
report metric is not used here: it always computes a t-SNE view (minutes for a few thousand rows)
and its default classifier method flags noise on held-out data; ``drift_report_html`` can still
include it on demand.

The data-drift score of the health policy (``drift_score``) is :attr:`DriftResult.share_drifted`:
the share of drifted features among those that could be tested. Evidently's distance tests have a
fixed threshold, so with a large reference and a very small window (a few hundred rows or fewer)
sampling noise alone can approach it; the monitoring runner judges small windows with care.

Windows larger than ``sample_size`` rows are sampled (seeded) on each side, so a run over 100k
predictions takes seconds. This module is the only one in the project that imports evidently; what
it returns is the project's own dataclasses.
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
from evidently.legacy.calculations.stattests import get_stattest
from evidently.legacy.core import ColumnType
from evidently.metrics import ValueDrift
from evidently.metrics.embeddings import EmbeddingsDrift, RatioDriftMethod
from evidently.presets import DataDriftPreset

from skinlesion.errors import DataError
from skinlesion.schema import CLASSES, MISSING

Group = Literal["metadata", "image", "output", "embedding"]
Kind = Literal["numeric", "categorical", "embedding"]

#: Feature groups in display order.
GROUPS: tuple[str, ...] = ("metadata", "image", "output", "embedding")
#: The embedding drifted when more than this share of its components drifted (Evidently's default).
EMBEDDING_RATIO_THRESHOLD = 0.2
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

    ``stattest`` names the test Evidently used and ``score`` its value: a p-value (names ending in
    "p_value"; drift when below ``threshold``) or a distance / share (drift when at or above
    ``threshold``, as Evidently decides). A feature that could not be tested (no values on one side)
    has ``stattest`` ``""``, NaN score and threshold, ``drifted`` False and says why in ``note``.
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
    the tested ones; NaN when none could be tested, e.g. an empty window). ``n_reference`` /
    ``n_current`` count the rows given, ``n_reference_used`` / ``n_current_used`` the rows compared
    after sampling (``sampled`` says whether either side was sampled). ``notes`` explain what was
    skipped.
    """

    features: tuple[FeatureDrift, ...]
    share_drifted: float
    n_reference: int
    n_current: int
    sampled: bool
    n_reference_used: int = 0
    n_current_used: int = 0
    notes: tuple[str, ...] = ()

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

    def definition(self) -> DataDefinition:
        return DataDefinition(numerical_columns=self.numeric, categorical_columns=self.categorical)


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


def _run_value_drift(tab: _Tabular) -> dict[str, tuple[str, float, float, bool]]:
    """Evidently ValueDrift per column: name -> (stattest, score, threshold, drifted)."""
    if not tab.columns:
        return {}
    report = Report([ValueDrift(column=c) for c in tab.columns], include_tests=True)
    definition = tab.definition()
    with warnings.catch_warnings():
        # chi-square against a category the reference never saw divides by a zero expectation:
        # scipy warns and returns p = 0, the right verdict (drift)
        warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)
        snapshot = report.run(Dataset.from_pandas(tab.current[tab.columns], data_definition=definition),
                              Dataset.from_pandas(tab.reference[tab.columns], data_definition=definition))
    results = snapshot.dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in results["tests"]}
    out = {}
    for metric in results["metrics"]:
        config = metric["config"]
        out[config["column"]] = (str(config["method"]), float(metric["value"]), float(config["threshold"]),
                                 failed[metric["id"]])
    return out


def _tabular_drift(tab: _Tabular, specs: Sequence[FeatureSpec]) -> dict[str, FeatureDrift]:
    verdicts = _run_value_drift(tab)
    out = {}
    for spec in specs:
        if spec.kind == "embedding":
            continue
        ref_summary: Summary | None = None
        cur_summary: Summary | None = None
        if spec.name in tab.reference.columns:
            ref, cur = tab.reference[spec.name], tab.current[spec.name]
            if spec.kind == "categorical":
                ref_summary, cur_summary = categorical_summaries(ref, cur)
            else:
                ref_values, cur_values = ref.dropna().to_numpy(), cur.dropna().to_numpy()
                if len(ref_values) or len(cur_values):  # an empty side plots as all missing
                    edges = histogram_edges(ref_values, cur_values)
                    ref_summary = numeric_summary(ref_values, edges, len(ref))
                    cur_summary = numeric_summary(cur_values, edges, len(cur))
        if spec.name in tab.skipped:
            out[spec.name] = _untested(spec, tab.skipped[spec.name], ref_summary, cur_summary)
        else:
            stattest, score, threshold, drifted = verdicts[spec.name]
            out[spec.name] = FeatureDrift(spec.name, spec.group, spec.kind, stattest, score, threshold,
                                          drifted, ref_summary, cur_summary)
    return out


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


def _embedding_drift(spec: FeatureSpec, reference: pd.DataFrame, current: pd.DataFrame) -> FeatureDrift:
    absent = [side for side, df in (("reference", reference), ("current", current)) if spec.name not in df]
    if absent:
        return _untested(spec, f"not tested: no column {spec.name!r} in the {' and '.join(absent)} data")
    ref = embedding_matrix(reference[spec.name], "reference")
    cur = embedding_matrix(current[spec.name], "current")
    empty = [side for side, m in (("reference", ref), ("current", cur)) if len(m) < 2]
    if empty:
        return _untested(spec, f"not tested: fewer than 2 embeddings in the {' and '.join(empty)} data")
    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"reference embeddings have {ref.shape[1]} components, current ones "
                        f"{cur.shape[1]}: compare a window with its own model version's reference",
                        field=spec.name)
    method, name = embedding_method(ref, cur)
    columns = [f"{_EMBEDDING_PREFIX}{i}" for i in range(ref.shape[1])]
    score, drifted, _ = method(pd.DataFrame(cur, columns=columns), pd.DataFrame(ref, columns=columns))
    centre = ref.mean(axis=0)
    ref_dist = np.linalg.norm(ref - centre, axis=1)
    cur_dist = np.linalg.norm(cur - centre, axis=1)
    edges = histogram_edges(ref_dist, cur_dist)
    note = ("summaries: distance of each embedding to the reference mean embedding"
            + (f"; {len(current) - len(cur)} current rows without an embedding left out"
               if len(cur) < len(current) else ""))
    return FeatureDrift(spec.name, spec.group, spec.kind, name, float(score), EMBEDDING_RATIO_THRESHOLD,
                        bool(drifted), numeric_summary(ref_dist, edges, len(reference)),
                        numeric_summary(cur_dist, edges, len(current)), note)


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, *, sample_size: int = 5000,
                  seed: int = 0, features: Iterable[FeatureSpec | str] = DEFAULT_FEATURES) -> DriftResult:
    """Per-feature drift of ``current`` (a window of logged predictions) against ``reference`` (the
    model version's validation answers), both with predictions-table columns.

    Each side is sampled to at most ``sample_size`` rows (seeded by ``seed``). ``features`` are
    :class:`FeatureSpec` or names of known features; a feature whose column is absent, or which has
    no values on one side, is reported untested with a note. An empty ``current`` gives a result
    with ``n_current=0``, no features and a note; an empty ``reference`` is a DataError.
    """
    specs = resolve_features(features)
    if len(reference) == 0:
        raise DataError("the reference has no rows: drift needs the model version's validation answers; "
                        "register the version with its reference (registry.register)", source="reference")
    if len(current) == 0:
        return DriftResult((), math.nan, len(reference), 0, False, 0, 0,
                           ("the current window has no predictions: nothing to compare",))
    ref, cur = sample_rows(reference, sample_size, seed), sample_rows(current, sample_size, seed)
    tabular = _tabular_drift(_tabular(ref, cur, specs), specs)
    verdicts = [tabular[s.name] if s.kind != "embedding" else _embedding_drift(s, ref, cur) for s in specs]
    tested = [f for f in verdicts if f.tested]
    share = sum(f.drifted for f in tested) / len(tested) if tested else math.nan
    sampled = len(ref) < len(reference) or len(cur) < len(current)
    notes = [f"{f.name}: {f.note}" for f in verdicts if not f.tested]
    if sampled:
        notes.append(f"sampled {len(ref)} of {len(reference)} reference and {len(cur)} of {len(current)} "
                     f"current rows (seed {seed})")
    return DriftResult(tuple(verdicts), share, len(reference), len(current), sampled, len(ref), len(cur),
                       tuple(notes))


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
