"""Data drift of a window of logged predictions against the model version's reference answers.

**What the reference is.** The version's reference answers (``registry.read_reference``): its
answers on the whole validation split, one row per image (a lesion photographed three times counts
three times, as it would in traffic, where each photograph is one answer), lesions never shared with
the training split. Registration stores what it holds in the card (``reference``: rows, lesions,
share of images from multi-image lesions, class mix; ``register.describe_reference``). The
current data is a window of the predictions table (``Store.sample_predictions(...,
include_embedding=True)``); both carry the predictions-table columns. Monitored features:

* ``metadata`` — ``age_approx`` (numeric, NaN = missing), ``sex``, ``anatom_site_general``;
* ``image`` — the image statistics of ``data.images.image_stats`` and the OOD gate's
  ``texture_distance`` (tested only where both the reference and the window carry values: a
  version whose gate has no texture check has it untested, its score over the other features);
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from skinlesion.monitoring.drift_features import (
    CLASS_PROBABILITY_FEATURES, DEFAULT_FEATURES, EMBEDDING_FEATURES, GROUPS, IMAGE_FEATURES,
    METADATA_FEATURES, OUTPUT_FEATURES, CategoricalSummary, FeatureSpec, NumericSummary, Summary,
    categorical_column, categorical_summaries, embedding_matrix, has_embedding, histogram_edges,
    numeric_column, numeric_summary, resolve_features, sample_rows)
from skinlesion.monitoring.drift_results import (
    MIN_ANSWERS, NULL_QUANTILE, NULL_REPLICATES, DriftNull, DriftResult, FeatureDrift)

__all__ = [  # the drift API, wherever each part is defined
    "CLASS_PROBABILITY_FEATURES", "DEFAULT_FEATURES", "EMBEDDING_FEATURES", "GROUPS", "IMAGE_FEATURES",
    "METADATA_FEATURES", "MIN_ANSWERS", "OUTPUT_FEATURES", "CategoricalSummary", "DriftNull",
    "DriftResult", "FeatureDrift", "FeatureSpec", "NumericSummary", "Summary", "compute_drift",
    "compute_null", "drift_report_html", "feature_distance", "group_split", "resolve_features",
    "version_null"]

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
#: Window sizes the null distribution is computed for (those up to half the reference).
NULL_SIZES: tuple[int, ...] = (50, 100, 200, 300, 500, 1000, 2000)
#: A reference needs this many rows for a null distribution.
MIN_NULL_ROWS = 20
#: The reference column that groups rows of one lesion (a null pseudo-window takes whole lesions).
GROUP_COLUMN = "lesion_id"
#: Prefix of the per-component columns the embedding is spread into for Evidently.
_EMBEDDING_PREFIX = "embedding_"


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
            ref, cur = numeric_column(reference, spec.name, "reference"), numeric_column(current, spec.name, "current")
            empty = [side for side, s in (("reference", ref), ("current", cur)) if s.notna().sum() == 0]
            if empty:
                out.skipped[spec.name] = f"not tested: no values in the {' and '.join(empty)} data"
            else:
                out.numeric.append(spec.name)
        else:
            ref, cur = categorical_column(reference, spec.name), categorical_column(current, spec.name)
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
    present = values.map(has_embedding).to_numpy(dtype=bool)
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
            out[spec.name] = numeric_column(df, spec.name, side).to_numpy()
        elif spec.kind == "categorical":
            out[spec.name] = categorical_column(df, spec.name).to_numpy()
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
    stored null of another reference size (the reference was replaced), or without a feature the
    reference now carries (e.g. ``texture_distance`` added by a refit), is computed again. None for
    a reference too small to split (fewer than :data:`MIN_NULL_ROWS` rows): drift is then judged
    by the effect size alone, and says so."""
    if len(reference) < MIN_NULL_ROWS:
        return None
    stored = registry.read_drift_null(models_dir, version)
    carried = {s.name for s in DEFAULT_FEATURES if s.name in reference.columns}
    if (stored is not None and stored.get("n_reference") == len(reference)
            and carried <= set(stored.get("bounds", {}))):
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
    df = df[df[column].map(has_embedding)].reset_index(drop=True)
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
            and ref[embedding].map(has_embedding).sum() >= 2 and cur[embedding].map(has_embedding).sum() >= 2):
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
