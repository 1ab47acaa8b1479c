"""What the dashboard's monitoring pages show, computed without streamlit: the active model's status,
the metric tiles of a health window, the threshold bands behind the charts, and one window's health
with its data drift.

The dashboard (``dashboard/``) only fetches these and renders them, so everything that decides
what a person sees (which colour, which change, whether the model is a demo) is testable here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from skinlesion import metrics
from skinlesion.errors import DataError, ModelNotFoundError
from skinlesion.monitoring.health import DRIFT_METRIC, LATENCY_METRIC, HealthReport, compute_health
from skinlesion.monitoring.ood_share import estimate_checks, version_gate
from skinlesion.monitoring.policy import Policy
from skinlesion.monitoring.runner import DRIFT_SAMPLE_SIZE
from skinlesion.registry import ModelCard, read_card, read_reference, resolve_version
from skinlesion.schema import class_index
from skinlesion.store import PROBABILITY_COLUMNS, ServingRoute, Store
from skinlesion.thresholds import Status, Threshold

if TYPE_CHECKING:  # drift imports evidently (seconds): only when a page computes drift
    from skinlesion.monitoring.drift import DriftResult, FeatureDrift

#: Words that mark a model card's data as synthetic (a demo model, not for clinical use).
SYNTHETIC_MARKERS: tuple[str, ...] = ("synthetic",)
#: Words that mark a version as part of a demo installation (its traffic and labels simulated),
#: whatever data it was trained on.
DEMO_MARKERS: tuple[str, ...] = ("demo", "simulated")


def _card_text(card: ModelCard) -> str:
    return f"{card.data.name} {card.notes or ''}".lower()


def is_synthetic(card: ModelCard) -> bool:
    """Whether ``card`` says its model was trained on synthetic data: its data name or notes say
    "synthetic", or the card carries ``synthetic: true``. A model trained on real images whose
    demo traffic is simulated is not synthetic (see :func:`is_demo`)."""
    if (card.model_extra or {}).get("synthetic") is True:
        return True
    return any(marker in _card_text(card) for marker in SYNTHETIC_MARKERS)


def is_demo(card: ModelCard) -> bool:
    """Whether ``card`` belongs to a demo installation (``skinlesion demo``): trained on synthetic
    data, or its data name or notes mention a demo or simulated traffic."""
    return is_synthetic(card) or any(marker in _card_text(card) for marker in DEMO_MARKERS)


@dataclass(frozen=True)
class ActiveModel:
    """The serving route with the card of the version answering now.

    ``serving_version`` is the fallback while it is engaged, else the active version; ``card`` is
    its model card (None when the version is not in the models folder: ``problem`` says so);
    ``synthetic`` whether that card says it was trained on synthetic data, ``demo`` whether it is
    part of a demo installation (simulated traffic)."""

    route: ServingRoute
    serving_version: str
    card: ModelCard | None
    synthetic: bool
    demo: bool = False
    problem: str = ""

    @property
    def fallback_engaged(self) -> bool:
        return self.route.fallback_engaged

    @property
    def restricted(self) -> bool:
        return self.route.restricted_to_clear_cases


def active_model(store: Store, models_dir: Path) -> ActiveModel:
    """The route (from the store) and the card of the version answering now (from ``models_dir``)."""
    route = store.get_route()
    serving = route.fallback_version if route.fallback_engaged and route.fallback_version \
        else route.active_version
    try:
        card = read_card(Path(models_dir) / resolve_version(models_dir, serving))
    except ModelNotFoundError as err:
        return ActiveModel(route, serving, None, False, problem=str(err))
    return ActiveModel(route, serving, card, is_synthetic(card), is_demo(card))


# --- one window's health, drift included ------------------------------------------------------------


@dataclass(frozen=True)
class WindowHealth:
    """The health report of a window with its data drift: ``report`` (drift score added as a
    metric when it could be computed), ``drift`` (the per-feature result, None when skipped) and
    ``drift_skipped`` (why not), ``reference_version`` (whose reference answers it compares with),
    and ``previous_volume`` (answers in the window just before, for the volume tile's change)."""

    report: HealthReport
    drift: DriftResult | None
    drift_skipped: str
    reference_version: str
    previous_volume: int | None


def reference_for(models_dir: Path, version: str) -> tuple[pd.DataFrame | None, str]:
    """The reference answers of ``version`` and, when there are none, why."""
    try:
        reference = read_reference(models_dir, version)
    except ModelNotFoundError:
        return None, f"model version {version!r} is not in {models_dir}"
    if reference is None or reference.empty:
        return None, f"model version {version!r} was saved without reference answers"
    return reference, ""


def window_health(store: Store, models_dir: Path, policy: Policy, start: datetime, end: datetime, *,
                  model_version: str | None = None, source: str | None = None,
                  drift: bool = True) -> WindowHealth:
    """:func:`~skinlesion.monitoring.health.compute_health` over ``[start, end)`` (answers of
    ``source`` only, when given) plus, with ``drift``, the data drift of the window's answers
    against the reference answers of ``model_version`` (default: the active version of the serving
    route), as the monitor computes it. The health numbers are aggregated over the whole window in
    the store; drift compares a uniform sample of at most :data:`DRIFT_SAMPLE_SIZE` answers drawn
    in the store (all of them in a smaller window), so a month of traffic is never loaded. The
    drift's change is measured against the newest stored snapshot taken at or before ``start``
    (recomputing the previous window's drift would double the cost)."""
    version = model_version or store.get_route().active_version
    returned = True if model_version is None else None
    report = compute_health(store, start, end, policy=policy, model_version=model_version, source=source)
    previous_volume = (store.count_predictions(report.previous_start, start, model_version=model_version,
                                               source=source, returned=returned)
                       if report.previous_start else None)
    if not drift:
        return WindowHealth(report, None, "not computed", version, previous_volume)
    reference, skipped = reference_for(models_dir, version)
    result = None
    current = store.sample_predictions(start, end, n=DRIFT_SAMPLE_SIZE, model_version=model_version,
                                       source=source, returned=returned, include_embedding=True)
    if reference is not None:
        if current.empty:
            skipped = "no predictions in the window"
        else:
            from skinlesion.monitoring.drift import compute_drift, version_null

            result = compute_drift(reference, current, null=version_null(models_dir, version, reference))
            if math.isnan(result.share_drifted):
                skipped = "; ".join(result.notes) or "no feature could be tested"
    before = store.query_snapshots(end=start + timedelta(seconds=1), metric=DRIFT_METRIC)
    before = before.dropna(subset=["value"])
    previous = float(before["value"].iloc[-1]) if len(before) else None
    score = None if result is None or math.isnan(result.share_drifted) else result.share_drifted
    report = report.with_drift(score, result.drifted_features() if result else (), policy=policy,
                               previous_value=previous)
    if skipped:
        metrics = dict(report.metrics)
        metrics[DRIFT_METRIC] = metrics[DRIFT_METRIC].model_copy(update={"note": f"drift: {skipped}"})
        report = report.model_copy(update={"metrics": metrics})
    checks = estimate_checks(current, reference, version_gate(models_dir, version), tuple(policy.malignant))
    report = report.with_estimate_checks(checks, policy=policy)
    return WindowHealth(report, result, skipped, version, previous_volume)


# --- versions side by side (A/B, shadow) --------------------------------------------------------------

#: The measures of :func:`compare_versions`, in display order: (metric of the health report, label).
COMPARED_MEASURES: tuple[tuple[str, str], ...] = (
    ("recall", "Recall (sensitivity)"), ("specificity", "Specificity"), ("precision", "Precision"),
    ("fnr", "False-negative rate"), ("auroc", "AUROC"), ("log_loss", "Log loss"),
    ("ece", "Calibration error (ECE)"), (DRIFT_METRIC, "Data drift (share of features)"),
    (LATENCY_METRIC, "Latency p95 (ms)"))


def comparison_versions(route: ServingRoute) -> list[str]:
    """The versions an A/B or shadow comparison sets side by side: the active version, then the
    challenger and the shadow where the route has them."""
    versions = [route.active_version, route.challenger_version, route.shadow_version]
    return list(dict.fromkeys(v for v in versions if v))


def compare_versions(store: Store, models_dir: Path, policy: Policy, start: datetime, end: datetime,
                     versions: list[str], *, drift: bool = False) -> pd.DataFrame:
    """The health of each version's answers in ``[start, end)`` side by side (every answer of the
    version, shadow answers included, as :func:`window_health` with ``model_version``): one row per
    measure — ``answers``, ``labelled``, ``label coverage``, the realised
    :data:`COMPARED_MEASURES` and, before labels arrive, the estimated recall and AUROC (CBPE) —
    with columns ``measure``, then per version its value (column named by the version) and its
    status (``<version> status``: green / yellow / red / unknown). With ``drift``, each version's
    answers are compared with its own reference answers (seconds per version)."""
    columns: dict[str, list[object]] = {"measure": []}
    for version in versions:
        health = window_health(store, models_dir, policy, start, end, model_version=version,
                               drift=drift)
        report = health.report
        rows: list[tuple[str, float | None, str]] = [
            ("answers", float(report.n_predictions), "unknown"),
            ("labelled", float(report.n_labelled), "unknown"),
            ("label coverage", report.label_coverage, "unknown")]
        for metric, label in COMPARED_MEASURES:
            m = report.metrics.get(metric)
            rows.append((label, m.value if m else None, m.status.value if m else "unknown"))
        for metric, label in (("recall", "Recall (estimated)"), ("auroc", "AUROC (estimated)")):
            m = report.metrics[metric]
            rows.append((label, m.estimated, m.estimated_status.value))
        columns["measure"] = [label for label, _, _ in rows]
        columns[version] = [value for _, value, _ in rows]
        columns[f"{version} status"] = [status for _, _, status in rows]
    return pd.DataFrame(columns)


# --- metric tiles ---------------------------------------------------------------------------------

#: The Overview's tiles in reading order: (metric, label, kind of value).
TILE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("recall", "Recall (sensitivity)", "ratio"), ("fnr", "False-negative rate", "ratio"),
    ("precision", "Precision", "ratio"), ("accuracy", "Accuracy", "ratio"),
    ("f1", "F1", "ratio"), ("auroc", "AUROC", "ratio"), ("pauc_80", "Partial AUC (>80% sens.)", "ratio"),
    ("log_loss", "Log loss", "ratio"), (DRIFT_METRIC, "Data drift (share of features)", "ratio"),
    (LATENCY_METRIC, "Latency p95", "ms"), ("volume", "Volume (answers)", "count"))
#: Lower-is-better metrics without a threshold in the policy (so their change is coloured right).
_LOWER_IS_BETTER = frozenset({"log_loss", "fnr", DRIFT_METRIC, LATENCY_METRIC, "ece"})
#: Metrics computed from labels: their tiles show the label coverage behind them.
_LABEL_BASED = frozenset({"accuracy", "precision", "recall", "f1", "fnr", "auroc", "pauc_80",
                          "log_loss", "specificity", "balanced_accuracy", "ece"})


@dataclass(frozen=True)
class Tile:
    """One metric tile: the realised ``value`` with its ``status`` (the estimated status while the
    realised value is unknown: ``status_estimated`` says so), ``change`` against the previous
    window, the ``estimated`` value, the label ``coverage``, ``n`` and median label lag
    (``lag_hours``) behind a label-based metric, a ``note`` (why a value is missing, or the
    volume's spikes and dips) and the threshold in words (``bands``). An estimate comes with its
    band (``estimated_low``, ``estimated_high``) and, while drift is yellow or red, the
    out-of-distribution share is red or the malignant share moved, ``estimate_unreliable`` (its
    status then unknown: the tile takes no colour from it)."""

    metric: str
    label: str
    kind: str
    value: float | None
    status: str
    status_estimated: bool
    change: float | None
    higher_is_better: bool
    estimated: float | None = None
    estimated_status: str = "unknown"
    coverage: float | None = None
    n: int | None = None
    lag_hours: float | None = None
    note: str = ""
    bands: str = ""
    estimated_low: float | None = None
    estimated_high: float | None = None
    estimate_unreliable: bool = False


def lag_text(hours: float) -> str:
    """A label lag for display: in hours below two days (``"5.0 h"``), in days from then on
    (``"3.2 d"``)."""
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _higher_is_better(metric: str, policy: Policy) -> bool:
    threshold = policy.thresholds.get(metric)
    return threshold.higher_is_better if threshold else metric not in _LOWER_IS_BETTER


def tiles(health: WindowHealth, policy: Policy) -> list[Tile]:
    """The tiles of :data:`TILE_METRICS` for a window (see :class:`Tile`). Volume is coloured
    yellow when the window has spike or dip hours (they do not change the report's status)."""
    report = health.report
    out = []
    for metric, label, kind in TILE_METRICS:
        if metric == "volume":
            anomalies = report.volume_anomalies
            spikes = sum(h.anomaly == "spike" for h in anomalies)
            dips = len(anomalies) - spikes
            note = f"{spikes} spike and {dips} dip hour(s)" if anomalies else "no spikes or dips"
            change = (report.n_predictions - health.previous_volume
                      if health.previous_volume is not None else None)
            out.append(Tile(metric, label, kind, float(report.n_predictions),
                            Status.YELLOW.value if anomalies else Status.GREEN.value, False, change,
                            True, note=note))
            continue
        m = report.metrics.get(metric)
        threshold: Threshold | None = policy.thresholds.get(metric)
        if m is None:
            out.append(Tile(metric, label, kind, None, Status.UNKNOWN.value, False, None,
                            _higher_is_better(metric, policy), note="not measured",
                            bands=threshold.describe() if threshold else ""))
            continue
        label_based = metric in _LABEL_BASED
        out.append(Tile(
            metric, label, kind, m.value, m.effective_status.value,
            m.status is Status.UNKNOWN and m.estimated_status is not Status.UNKNOWN, m.change,
            _higher_is_better(metric, policy), estimated=m.estimated,
            estimated_status=m.estimated_status.value,
            coverage=report.label_coverage if label_based else None,
            n=report.n_labelled if label_based else None,
            lag_hours=report.label_lag_hours if label_based else None, note=m.note,
            bands=threshold.describe() if threshold else "", estimated_low=m.estimated_low,
            estimated_high=m.estimated_high, estimate_unreliable=m.estimate_unreliable))
    return out


# --- charts ---------------------------------------------------------------------------------------


def threshold_bands(threshold: Threshold, low: float, high: float) -> pd.DataFrame:
    """The green / yellow / red bands of ``threshold`` between ``low`` and ``high`` (the chart's
    value range), as rows ``status, y0, y1`` for background rectangles; bands outside the range
    are clipped away."""
    if threshold.higher_is_better:
        bands = [("red", -math.inf, threshold.red), ("yellow", threshold.red, threshold.green),
                 ("green", threshold.green, math.inf)]
    else:
        bands = [("green", -math.inf, threshold.green), ("yellow", threshold.green, threshold.red),
                 ("red", threshold.red, math.inf)]
    rows = [(s, max(y0, low), min(y1, high)) for s, y0, y1 in bands]
    return pd.DataFrame([r for r in rows if r[2] > r[1]], columns=["status", "y0", "y1"])


def chart_range(values: pd.Series, threshold: Threshold | None, *, ratio: bool) -> tuple[float, float]:
    """The value range of a metric's chart: the values and the threshold bounds with a margin;
    ``[0, 1]``-bounded for ratios."""
    finite = [float(v) for v in values.dropna() if math.isfinite(float(v))]
    if threshold is not None:
        finite += [threshold.green, threshold.red]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    margin = (high - low) * 0.15 or abs(high) * 0.1 or 0.1
    low, high = low - margin, high + margin
    if ratio:
        low, high = max(0.0, low), min(1.0, high)
    return low, high


# --- tables for the Performance page --------------------------------------------------------------


def labelled_arrays(labelled: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, probs)`` of labelled predictions (``diagnosis`` and ``p_<CLASS>`` columns), in
    the form :mod:`skinlesion.metrics` and :mod:`skinlesion.plots` take."""
    y = np.array([class_index(d) for d in labelled["diagnosis"]], dtype=np.int64)
    return y, labelled[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)


def estimated_vs_realised(report: HealthReport) -> pd.DataFrame:
    """One row per label-based metric of ``report``: ``metric``, ``realised`` and its ``status``,
    ``estimated`` and its ``estimated_status``, ``gap`` (realised - estimated), ``n``, ``note``."""
    rows = []
    for name, m in report.metrics.items():
        if name not in _LABEL_BASED:
            continue
        gap = None if m.value is None or m.estimated is None else m.value - m.estimated
        rows.append({"metric": name, "realised": m.value, "status": m.status.value,
                     "estimated": m.estimated, "estimated_status": m.estimated_status.value,
                     "gap": gap, "n": m.n, "note": m.note})
    return pd.DataFrame(rows, columns=["metric", "realised", "status", "estimated", "estimated_status",
                                       "gap", "n", "note"])


def per_class_table(labelled: pd.DataFrame, report: HealthReport) -> pd.DataFrame:
    """Per class (one-vs-rest, :func:`skinlesion.metrics.per_class_metrics`) on the window's
    labelled predictions, with the recall of the window before and its change (``recall_change``,
    judged only with enough cases in both windows, as the playbook's hints)."""
    y, probs = labelled_arrays(labelled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        table = metrics.per_class_metrics(y, probs)
    recall = {c.cls: c for c in report.per_class}
    table["previous_recall"] = [recall[c].previous_recall if c in recall else None for c in table["class"]]
    table["recall_change"] = [recall[c].change if c in recall else None for c in table["class"]]
    return table


# --- drift details --------------------------------------------------------------------------------


def drift_table(result: DriftResult) -> pd.DataFrame:
    """One row per feature of ``result``: ``feature, group, test, score, threshold, drifted,
    severity`` (1 = at the threshold) and ``note``, most drifted first (untested last)."""
    rows = [{"feature": f.name, "group": f.group, "test": f.stattest or "—", "score": f.score,
             "threshold": f.threshold, "drifted": f.drifted, "severity": f.severity, "note": f.note}
            for f in result.features]
    frame = pd.DataFrame(rows, columns=["feature", "group", "test", "score", "threshold", "drifted",
                                        "severity", "note"])
    return frame.sort_values("severity", ascending=False, na_position="last", kind="stable")


def distribution_frame(feature: FeatureDrift) -> pd.DataFrame:
    """The reference and current distributions of one feature, ready to plot: for a numeric
    feature one row per side and bin (``side, x0, x1, density``), for a categorical one per side
    and category (``side, category, share``). Empty when a side has no summary."""
    rows: list[dict[str, object]] = []
    for side, summary in (("reference", feature.reference_summary), ("current", feature.current_summary)):
        if summary is None:
            return pd.DataFrame()
        if hasattr(summary, "edges"):
            rows += [{"side": side, "x0": lo, "x1": hi, "density": d}
                     for lo, hi, d in zip(summary.edges[:-1], summary.edges[1:], summary.density,
                                          strict=True)]
        else:
            rows += [{"side": side, "category": c, "share": s} for c, s in summary.shares.items()]
    return pd.DataFrame(rows)


def drift_report(store: Store, models_dir: Path, start: datetime, end: datetime, path: Path, *,
                 model_version: str | None = None) -> Path:
    """Write Evidently's full drift report of the answers in ``[start, end)`` (a uniform sample of
    at most :data:`DRIFT_SAMPLE_SIZE`, drawn in the store) against the reference answers of
    ``model_version`` (default: the active version) to ``path``; DataError when there is no
    reference or no answer to compare."""
    from skinlesion.monitoring.drift import drift_report_html

    version = model_version or store.get_route().active_version
    reference, skipped = reference_for(models_dir, version)
    if reference is None:
        raise DataError(f"no drift report: {skipped}", source="reference")
    current = store.sample_predictions(start, end, n=DRIFT_SAMPLE_SIZE,
                                       model_version=model_version,
                                       returned=True if model_version is None else None)
    return drift_report_html(reference, current, path)
