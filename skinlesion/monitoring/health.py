"""Health of the served model over a time window: what the cockpit's green/yellow/red rests on.

:func:`compute_health` gathers, for the predictions in ``[start, end)``:

* **label-based metrics** (positive class = malignant, each case called at its own logged
  threshold) on the window's labelled predictions, always through :mod:`skinlesion.metrics`:
  accuracy, precision, recall, F1, FNR, specificity, AUROC, raw partial AUC above 80% sensitivity,
  binary log loss, balanced multiclass accuracy and calibration error (ECE). Below
  ``policy.min_labels`` labelled cases a metric has no value and the note "not enough labels
  (n of min)";
* **estimated performance** (:mod:`~skinlesion.monitoring.estimate`, CBPE) from every
  prediction's calibrated probability, labelled or not, next to each realised value;
* label coverage (share of predictions with a label) and label lag (median hours until it came);
* **operations**, aggregated in SQL by the store: latency p50/p95/p99, hourly volume with
  spike/dip detection (:func:`flag_volume`), decision mix and uncertain share, the error rate
  (:func:`error_rate` of the failed prediction requests the API recorded); and the host's
  resource use (:func:`resource_use`);
* the same numbers for the window of the same length just before (``previous_value``), the
  per-class recall change between the two, the worst status and its playbook.

Status of the report: the worst over the metrics with a threshold. A metric without enough labels
contributes its *estimated* status instead, so a window whose labels have not arrived still turns
red when the calibrated probabilities predict it. Volume anomalies do not colour the report (a
busy clinic day is not a model fault); they are listed in the hints.

How far an estimate can be trusted (:meth:`HealthReport.with_estimate_checks`, added by the
monitoring run): each estimated metric carries a band (``estimated_low``/``estimated_high``,
:func:`~skinlesion.monitoring.estimate.estimate_band`) where its realised value should fall once
labels arrive, and colours its tile only as far as its whole band does (:func:`band_status`;
an estimate whose band cannot be drawn, the metric undefined in most draws of a window with few
cases, gives no colour: a quiet Sunday's eight answers are no verdict); the share of the window's
answers out of distribution (``ood_share``, by the version's OOD gate: its embedding and
image-statistics checks, and the texture distance each answer logged against the gate's texture
bound) is shown as a metric, judged only from
:data:`~skinlesion.monitoring.ood_share.MIN_OOD_ANSWERS` answers (a quieter window's share is
shown without a colour). While drift is off green (yellow: already two or more features beyond
their null and effect size) or the OOD share is red, CBPE's assumption (calibration holds on
these cases) is in doubt: every estimate is flagged "estimate unreliable" and gives no colour
(its estimated status is unknown). Yellow drift counts too: on the real-image replays, the shifts that stayed yellow (site mix, a change of
prevalence) were the ones whose estimates missed their realised value. So does a moved malignant
share (:mod:`~skinlesion.monitoring.label_shift`: the window's share, estimated from its
probabilities, beyond its band and 5 points from the reference's), which a change of prevalence
shows at a day's window while drift often stays green.

Which predictions count: with ``model_version=None`` the answers actually returned to callers
(active, fallback and challenger; a shadow model's answers are left out so they do not count
twice); with a version, every answer of that version, shadow included (to judge a shadow). The
error rate counts the failed requests of the same source; with a version, only the failures of
that version (a request rejected before a model answered carries none).

Nothing here speaks SQL (the store does) or imports streamlit.
"""

from __future__ import annotations

import math
import sys
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import psutil
from pydantic import BaseModel, ConfigDict, Field

from skinlesion import metrics
from skinlesion.errors import DataError
from skinlesion.monitoring.estimate import (
    ASSUMPTIONS, SCORE_DECIMALS, ScoreStats, confusion_rates, estimate)
from skinlesion.monitoring.ood_share import OOD_METRIC, EstimateChecks, ood_judged, ood_status
from skinlesion.monitoring.policy import Hints, Playbook, Policy, VolumePolicy, playbook
from skinlesion.schema import CLASSES, class_index
from skinlesion.store import ERROR_RATE_KINDS, PROBABILITY_COLUMNS, Store
from skinlesion.thresholds import SEVERITY, Status, worst

#: The label-based metrics of a window, in display order.
LABEL_METRICS: tuple[str, ...] = (
    "accuracy", "precision", "recall", "f1", "fnr", "specificity", "auroc", "pauc_80", "log_loss",
    "balanced_accuracy", "ece")
#: Why a metric can be undefined on a window that has enough labels.
UNDEFINED_WHY: dict[str, str] = {
    "precision": "no case called malignant", "recall": "no malignant case",
    "fnr": "no malignant case", "specificity": "no benign case",
    "f1": "no malignant case and none called malignant",
    "auroc": "needs both malignant and benign cases", "pauc_80": "needs both malignant and benign cases",
}
#: A class needs this many labelled cases in both windows before its recall change is judged.
MIN_CLASS_CASES = 10
LATENCY_METRIC = "latency_p95_ms"
#: Failed prediction requests (:data:`~skinlesion.store.ERROR_RATE_KINDS`) per request; DESIGN.md
#: lists it among the numbers shown without a colour, so it has a status only if the policy file
#: gives it a threshold.
ERROR_RATE_METRIC = "error_rate"
DRIFT_METRIC = "drift_score"


class MetricValue(BaseModel):
    """One metric of a window. ``value`` is the realised number (None when there are too few
    labels or it is undefined — ``note`` says which); ``status`` its colour; ``n`` the cases behind
    it; ``estimated`` the CBPE estimate from the probabilities (None where none exists) with its
    ``estimated_status``; ``previous_value`` / ``previous_estimated`` the same in the window
    before. A metric the policy sets no threshold for (F1, specificity, partial AUC, balanced
    accuracy, ECE) is shown without a colour: its statuses stay UNKNOWN."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float | None
    status: Status
    n: int
    note: str = ""
    estimated: float | None = None
    estimated_status: Status = Status.UNKNOWN
    previous_value: float | None = None
    previous_estimated: float | None = None
    estimated_low: float | None = None
    estimated_high: float | None = None
    estimate_unreliable: bool = False

    @property
    def change(self) -> float | None:
        """``value - previous_value`` (None unless both are known)."""
        if self.value is None or self.previous_value is None:
            return None
        return self.value - self.previous_value

    @property
    def effective_status(self) -> Status:
        """The realised status, or the estimated one when the realised value is unknown."""
        return self.status if self.status is not Status.UNKNOWN else self.estimated_status


class ClassRecall(BaseModel):
    """Recall (sensitivity of the top-1 call) of one class in the window and the one before."""

    model_config = ConfigDict(frozen=True)

    cls: str
    n: int
    recall: float | None
    previous_n: int = 0
    previous_recall: float | None = None

    @property
    def change(self) -> float | None:
        """Recall change against the previous window, when both have ``MIN_CLASS_CASES`` cases."""
        if (self.recall is None or self.previous_recall is None or self.n < MIN_CLASS_CASES
                or self.previous_n < MIN_CLASS_CASES):
            return None
        return self.recall - self.previous_recall


class VolumeHour(BaseModel):
    """Predictions in one UTC hour with its baseline (see :func:`flag_volume`); ``complete`` is
    False for an hour cut by the window's end, which is never judged."""

    model_config = ConfigDict(frozen=True)

    hour: datetime
    n: int
    baseline: float | None
    anomaly: Literal["spike", "dip"] | None = None
    complete: bool = True

    def describe(self) -> str:
        """e.g. ``spike at 2024-05-01 14:00 UTC: 120 predictions vs 12 expected``."""
        return (f"{self.anomaly or 'normal'} at {self.hour:%Y-%m-%d %H:%M} UTC: {self.n} predictions "
                f"vs {self.baseline:.0f} expected")


class ResourceUse(BaseModel):
    """This host's load when the report was computed; GPU memory only where torch drives a GPU."""

    model_config = ConfigDict(frozen=True)

    measured_at: datetime
    cpu_percent: float
    memory_percent: float
    memory_used_mb: float
    memory_total_mb: float
    process_rss_mb: float
    gpu_memory_used_mb: float | None = None
    gpu_memory_total_mb: float | None = None


class HealthReport(BaseModel):
    """Everything the cockpit shows about one window (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    window: str | None = None
    model_version: str | None = None
    source: str | None = None
    computed_at: datetime
    n_predictions: int
    n_labelled: int
    label_coverage: float | None
    label_lag_hours: float | None
    metrics: dict[str, MetricValue]
    latency_ms: dict[str, float | None]
    decisions: dict[str, int]
    uncertain_share: float | None
    volume: list[VolumeHour]
    per_class: list[ClassRecall]
    failures: dict[str, int] = Field(default_factory=dict)
    resources: ResourceUse | None = None
    drifted_features: tuple[str, ...] = ()
    status: Status
    hints: Hints
    playbook: Playbook
    assumptions: str = ASSUMPTIONS
    previous_start: datetime | None = None

    @property
    def volume_anomalies(self) -> list[VolumeHour]:
        """The window's hours flagged as a spike or a dip."""
        return [h for h in self.volume if h.anomaly is not None]

    def with_drift(self, drift_score: float | None, drifted_features: tuple[str, ...] | list[str],
                   *, policy: Policy, previous_value: float | None = None) -> HealthReport:
        """This report with the data-drift score (share of drifted features, from
        ``monitoring.drift``) added as a metric and in the hints; status and playbook recomputed."""
        drift = MetricValue(name=DRIFT_METRIC, value=drift_score, n=self.n_predictions,
                            status=policy.status(DRIFT_METRIC, drift_score),
                            note="" if drift_score is not None else "no drift computed",
                            previous_value=previous_value)
        metrics_ = {**self.metrics, DRIFT_METRIC: drift}
        features = tuple(drifted_features)
        status, hints = _conclude(metrics_, self.per_class, self.label_coverage, self.label_lag_hours,
                                  self.volume, features, policy)
        return self.model_copy(update={"metrics": metrics_, "drifted_features": features,
                                       "status": status, "hints": hints,
                                       "playbook": playbook(status, hints)})

    def with_estimate_checks(self, checks: EstimateChecks, *, policy: Policy) -> HealthReport:
        """This report with a band beside each estimated metric, the OOD share as a metric, and
        every estimate flagged unreliable (no colour from it) while drift is yellow or red, the OOD
        share is red or the malignant share has moved; status and playbook recomputed (see the
        module docstring)."""
        ood = MetricValue(name=OOD_METRIC, value=checks.ood_share, n=self.n_predictions,
                          status=ood_status(checks.ood_share, self.n_predictions),
                          note="; ".join(filter(None, [checks.ood_note,
                                                       ood_judged(checks.ood_share, self.n_predictions)])))
        drift = self.metrics.get(DRIFT_METRIC)
        why = []
        if drift is not None and drift.status in (Status.YELLOW, Status.RED):
            why.append(f"drift {drift.status.value}")
        if ood.status is Status.RED:
            why.append("out-of-distribution share red")
        if checks.malignant_share is not None and checks.malignant_share.moved:
            why.append(checks.malignant_share.describe())
        bands = checks.bands
        metrics_: dict[str, MetricValue] = {}
        for name, m in self.metrics.items():
            update: dict[str, Any] = {}
            if bands and name in bands and m.estimated is not None:
                low, high = (_finite(v) for v in bands[name])
                update.update(estimated_low=low, estimated_high=high)
                if low is None or high is None:  # undefined in most draws: too few cases to colour
                    update.update(estimated_status=Status.UNKNOWN, note="; ".join(filter(None, [
                        m.note, "estimate without a band (too few cases): no colour from it"])))
                else:
                    update.update(estimated_status=band_status(policy, name, low, high, m.estimated_status))
            if why and m.estimated is not None:
                update.update(estimate_unreliable=True, estimated_status=Status.UNKNOWN,
                              note="; ".join(filter(None, [m.note, f"estimate unreliable: {' and '.join(why)}"])))
            metrics_[name] = m.model_copy(update=update) if update else m
        metrics_[OOD_METRIC] = ood
        status, hints = _conclude(metrics_, self.per_class, self.label_coverage, self.label_lag_hours,
                                  self.volume, self.drifted_features, policy)
        return self.model_copy(update={"metrics": metrics_, "status": status, "hints": hints,
                                       "playbook": playbook(status, hints)})


# --- windows ----------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def window_bounds(name: str, policy: Policy, end: datetime | None = None) -> tuple[datetime, datetime]:
    """``(start, end)`` of the named window (``"24h"``, ``"7d"``, ``"30d"``...) ending at ``end``
    (default now, UTC)."""
    stop = _utc(end) if end is not None else datetime.now(UTC)
    return stop - policy.window(name), stop


def compute_window_health(store: Store, name: str, *, policy: Policy, end: datetime | None = None,
                          **kwargs: Any) -> HealthReport:
    """:func:`compute_health` over the named window ending at ``end`` (default now)."""
    start, stop = window_bounds(name, policy, end)
    return compute_health(store, start, stop, policy=policy, window=name, **kwargs)


# --- pure pieces ----------------------------------------------------------------------------------


def flag_volume(counts: object, volume: VolumePolicy) -> tuple[np.ndarray, list[str | None]]:
    """Baseline and spike/dip flag of each hour of an hourly count series (oldest first, no gaps;
    nan marks an hour without history, which is neither judged nor part of a baseline).

    The baseline of hour ``i`` is the median of ``counts[i - k * period_hours]`` for
    ``k = 1..baseline_periods`` (those inside the series); nan when fewer than
    ``min_baseline_periods`` exist. Seasonal median rather than a plain rolling one, so a clinic's
    busy mornings are compared with past mornings, not with nights. Flags follow
    :class:`~skinlesion.monitoring.policy.VolumePolicy`: ``"spike"`` when the count exceeds
    ``spike_factor * max(baseline, min_expected)``, ``"dip"`` when ``baseline >= min_expected``
    and the count is below ``dip_factor * baseline``, else None."""
    c = np.asarray(counts, dtype=np.float64)
    lagged = np.full((volume.baseline_periods, c.size), np.nan)
    for k in range(1, volume.baseline_periods + 1):
        shift = k * volume.period_hours
        if shift < c.size:
            lagged[k - 1, shift:] = c[:-shift]
    enough = np.sum(~np.isnan(lagged), axis=0) >= volume.min_baseline_periods
    baseline = np.full(c.size, np.nan)
    if enough.any():
        baseline[enough] = np.nanmedian(lagged[:, enough], axis=0)
    flags: list[str | None] = []
    for count, base in zip(c, baseline, strict=True):
        if math.isnan(base) or math.isnan(count):
            flags.append(None)
        elif count > volume.spike_factor * max(base, volume.min_expected):
            flags.append("spike")
        elif base >= volume.min_expected and count < volume.dip_factor * base:
            flags.append("dip")
        else:
            flags.append(None)
    return baseline, flags


def resource_use() -> ResourceUse:
    """CPU and memory of this host (psutil) and, when this process already uses torch with CUDA,
    the GPU memory of the current device (torch is never imported just to ask)."""
    memory = psutil.virtual_memory()
    gpu_used = gpu_total = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        gpu_used, gpu_total = (total - free) / 2**20, total / 2**20
    return ResourceUse(measured_at=datetime.now(UTC), cpu_percent=psutil.cpu_percent(interval=0.05),
                       memory_percent=memory.percent, memory_used_mb=(memory.total - memory.available) / 2**20,
                       memory_total_mb=memory.total / 2**20,
                       process_rss_mb=psutil.Process().memory_info().rss / 2**20,
                       gpu_memory_used_mb=gpu_used, gpu_memory_total_mb=gpu_total)


def band_status(policy: Policy, metric: str, low: float | None, high: float | None,
                point_status: Status) -> Status:
    """The colour an estimate gives: the mildest status anywhere in its band (an estimate turns a
    tile yellow or red only when its whole band is), the point's status without a band (a band
    the checks could not draw, the metric undefined in most of its draws, gives no colour:
    :meth:`HealthReport.with_estimate_checks`)."""
    if low is None or high is None:
        return point_status
    return min((policy.status(metric, low), policy.status(metric, high)), key=SEVERITY.__getitem__)


def error_rate(failures: int, answers: int) -> float | None:
    """``failures / (failures + answers)``: the share of requests that got no answer; None when
    there were no requests."""
    requests = failures + answers
    return failures / requests if requests else None


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _class_indices(diagnoses: pd.Series) -> np.ndarray:
    """Class indices of stored diagnoses (validated on the way in, so always in CLASSES)."""
    codes = pd.Categorical(diagnoses, categories=CLASSES).codes.astype(np.int64)
    if (codes < 0).any():
        class_index(str(diagnoses[codes < 0].iloc[0]))  # raises, naming the unknown diagnosis
    return codes


def label_metrics(labelled: pd.DataFrame, malignant: tuple[str, ...]) -> dict[str, float]:
    """Realised :data:`LABEL_METRICS` of labelled rows (``diagnosis``, ``p_<CLASS>``, ``threshold``);
    nan where undefined. Threshold metrics pool :func:`skinlesion.metrics.binary_confusion` over the
    distinct logged thresholds, so each case is called at its own threshold."""
    y = _class_indices(labelled["diagnosis"])
    probs = labelled[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    thresholds = labelled["threshold"].to_numpy(dtype=np.float64)
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for t in np.unique(thresholds):
        rows = thresholds == t
        for key, value in metrics.binary_confusion(y[rows], probs[rows], threshold=float(t),
                                                   malignant=malignant).items():
            counts[key] += value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        out = confusion_rates(**counts)
        out["auroc"] = metrics.auroc(y, probs, malignant=malignant)
        out["pauc_80"] = metrics.partial_auc(y, probs, malignant=malignant)
        out["log_loss"] = metrics.log_loss_binary(y, probs, malignant=malignant)
        out["balanced_accuracy"] = metrics.balanced_accuracy(y, probs)
        out["ece"] = metrics.expected_calibration_error(y, probs, malignant=malignant)
    return {name: out[name] for name in LABEL_METRICS}


def label_lag_hours(labelled: pd.DataFrame) -> float | None:
    """Median hours from a prediction (``ts``) to its first label (``first_label_ts``); an image
    labelled before it was answered counts 0. None without labelled rows."""
    if labelled.empty:
        return None
    lag = (labelled["first_label_ts"] - labelled["ts"]).dt.total_seconds().clip(lower=0) / 3600.0
    return float(lag.median())


def class_recalls(labelled: pd.DataFrame) -> dict[str, tuple[int, float | None]]:
    """Per class: ``(labelled cases, recall of the top-1 call or None)``, the sensitivity column of
    :func:`skinlesion.metrics.per_class_metrics` read off the confusion matrix."""
    if labelled.empty:
        return {c: (0, None) for c in CLASSES}
    y = _class_indices(labelled["diagnosis"])
    probs = labelled[list(PROBABILITY_COLUMNS)].to_numpy(dtype=np.float64)
    cm = metrics.confusion_matrix(y, probs)  # rows: true class; the diagonal: caught
    support = cm.sum(axis=1)
    return {c: (int(support[k]), float(cm[k, k] / support[k]) if support[k] else None)
            for k, c in enumerate(CLASSES)}


# --- computing a window -----------------------------------------------------------------------------


class _Measured(BaseModel):
    """The raw numbers of one window before they are judged."""

    model_config = ConfigDict(frozen=True)

    summary: dict[str, Any]
    realised: dict[str, float] = Field(default_factory=dict)
    n_labelled_rows: int
    label_lag_hours: float | None
    estimated: dict[str, float]
    classes: dict[str, tuple[int, float | None]]
    failures: dict[str, int]

    @property
    def n_failed(self) -> int:
        """Failures that count in the error rate."""
        return sum(self.failures[k] for k in ERROR_RATE_KINDS)


def _measure(store: Store, start: datetime, end: datetime, policy: Policy,
             filters: dict[str, Any]) -> _Measured:
    summary = store.window_summary(start, end, **filters)
    labelled = store.labelled_scores(start, end, **filters)
    totals, histogram = store.score_sums(start, end, decimals=SCORE_DECIMALS, **filters)
    stats = ScoreStats(n=totals["n"], tp=totals["tp"], fp=totals["fp"], tn=totals["tn"],
                       fn=totals["fn"], entropy=totals["entropy"],
                       scores=histogram["score"].to_numpy(dtype=np.float64),
                       pos=histogram["pos"].to_numpy(dtype=np.float64),
                       neg=histogram["neg"].to_numpy(dtype=np.float64))
    estimated = estimate(stats)
    enough = len(labelled) >= policy.min_labels
    failures = store.failure_counts(start, end, model_version=filters["model_version"],
                                    source=filters["source"])
    return _Measured(summary=summary, n_labelled_rows=len(labelled), estimated=estimated,
                     label_lag_hours=label_lag_hours(labelled),
                     realised=label_metrics(labelled, policy.malignant) if enough else {},
                     classes=class_recalls(labelled), failures=failures)


def _metric_values(now: _Measured, before: _Measured | None, policy: Policy) -> dict[str, MetricValue]:
    out: dict[str, MetricValue] = {}
    n = now.n_labelled_rows
    for name in LABEL_METRICS:
        value = _finite(now.realised.get(name))
        if name not in now.realised:
            note = f"not enough labels ({n} of {policy.min_labels})"
        elif value is None:
            note = f"undefined in this window: {UNDEFINED_WHY.get(name, 'no cases')}"
        else:
            note = ""
        estimated = _finite(now.estimated.get(name))
        out[name] = MetricValue(
            name=name, value=value, status=policy.status(name, value), n=n, note=note,
            estimated=estimated, estimated_status=policy.status(name, estimated),
            previous_value=_finite(before.realised.get(name)) if before else None,
            previous_estimated=_finite(before.estimated.get(name)) if before else None)
    p95 = _finite(now.summary["latency_p95_ms"])
    out[LATENCY_METRIC] = MetricValue(
        name=LATENCY_METRIC, value=p95, status=policy.status(LATENCY_METRIC, p95),
        n=now.summary["n"], note="" if p95 is not None else "no predictions",
        previous_value=_finite(before.summary["latency_p95_ms"]) if before else None)
    rate = error_rate(now.n_failed, now.summary["n"])
    requests = now.n_failed + now.summary["n"]
    out[ERROR_RATE_METRIC] = MetricValue(
        name=ERROR_RATE_METRIC, value=rate, status=policy.status(ERROR_RATE_METRIC, rate), n=requests,
        note=f"{now.n_failed:,} failed of {requests:,} requests" if requests else "no requests",
        previous_value=error_rate(before.n_failed, before.summary["n"]) if before else None)
    return out


def _volume(store: Store, start: datetime, end: datetime, policy: Policy,
            filters: dict[str, Any]) -> list[VolumeHour]:
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    series = store.hourly_volume(first_hour - policy.volume.lookback, end, **filters)
    counts = series["n"].to_numpy(dtype=np.float64)
    # Hours before the first answer in the series are before the service (or this version) began
    # answering: no history, rather than a baseline of zero that would make its first day a spike.
    started = np.flatnonzero(counts > 0)
    counts[: started[0] if started.size else counts.size] = np.nan
    baseline, flags = flag_volume(counts, policy.volume)
    hours: list[VolumeHour] = []
    for hour, n, base, flag in zip(series["hour"], series["n"], baseline, flags, strict=True):
        stamp = pd.Timestamp(hour).to_pydatetime()
        if stamp < first_hour:
            continue
        complete = stamp + timedelta(hours=1) <= end
        hours.append(VolumeHour(hour=stamp, n=int(n), baseline=_finite(float(base)),
                                anomaly=flag if complete else None, complete=complete))
    return hours


def _conclude(metric_values: dict[str, MetricValue], per_class: list[ClassRecall],
              coverage: float | None, lag: float | None, volume: list[VolumeHour],
              drifted: tuple[str, ...], policy: Policy) -> tuple[Status, Hints]:
    """The report's status (worst effective status of the metrics with a threshold) and hints."""
    judged = {name: m for name, m in metric_values.items() if name in policy.thresholds}
    status = worst(m.effective_status for m in judged.values())
    breaches = []
    for name, m in judged.items():
        if m.effective_status in (Status.YELLOW, Status.RED):
            shown, what = (m.value, "") if m.status is not Status.UNKNOWN else (m.estimated, "estimated ")
            breaches.append(f"{what}{name} {shown:.3g} — {m.effective_status.value} "
                            f"({policy.threshold(name).describe()})")
    slipped = {c.cls: c.change for c in per_class
               if c.change is not None and c.change <= -policy.class_slip}
    hints = Hints(breaches=tuple(breaches), drifted_features=drifted, slipped_classes=slipped,
                  label_coverage=coverage, label_lag_hours=lag,
                  volume_anomalies=tuple(h.describe() for h in volume if h.anomaly))
    return status, hints


def compute_health(store: Store, start: datetime, end: datetime, *, policy: Policy,
                   model_version: str | None = None, source: str | None = None, previous: bool = True,
                   window: str | None = None, resources: bool = True) -> HealthReport:
    """The :class:`HealthReport` of the predictions in ``[start, end)`` (see the module docstring).

    ``previous``: also measure the window of the same length just before, for ``previous_value``
    and the per-class recall change. ``window`` names the window in the report. ``resources``:
    measure this host's CPU/memory/GPU (skip when recomputing history)."""
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise DataError(f"the window must start before it ends, got {start.isoformat()} to "
                        f"{end.isoformat()}", field="start")
    filters: dict[str, Any] = {"model_version": model_version, "source": source,
                               "returned": True if model_version is None else None}
    now = _measure(store, start, end, policy, filters)
    previous_start = start - (end - start) if previous else None
    before = _measure(store, previous_start, start, policy, filters) if previous_start else None
    metric_values = _metric_values(now, before, policy)
    per_class = [ClassRecall(cls=c, n=now.classes[c][0], recall=now.classes[c][1],
                             previous_n=before.classes[c][0] if before else 0,
                             previous_recall=before.classes[c][1] if before else None)
                 for c in CLASSES]
    summary = now.summary
    n = summary["n"]
    coverage = now.n_labelled_rows / n if n else None
    lag = now.label_lag_hours
    volume = _volume(store, start, end, policy, filters)
    status, hints = _conclude(metric_values, per_class, coverage, lag, volume, (), policy)
    return HealthReport(
        start=start, end=end, window=window, model_version=model_version, source=source,
        computed_at=datetime.now(UTC), n_predictions=n, n_labelled=now.n_labelled_rows,
        label_coverage=coverage, label_lag_hours=lag, metrics=metric_values,
        latency_ms={q: _finite(summary[f"latency_{q}_ms"]) for q in ("p50", "p95", "p99", "mean")},
        decisions=summary["decisions"],
        uncertain_share=summary["decisions"]["uncertain"] / n if n else None,
        volume=volume, per_class=per_class, failures=now.failures,
        resources=resource_use() if resources else None,
        status=status, hints=hints, playbook=playbook(status, hints), previous_start=previous_start)
