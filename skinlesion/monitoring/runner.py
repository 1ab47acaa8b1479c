"""``skinlesion monitor``: one monitoring run, and the loop that repeats it.

A run (:func:`run_once`) takes the health window ending now (``24h`` by default), computes the
:class:`~skinlesion.monitoring.health.HealthReport` of the active model version's answers in it,
adds the data-drift score of those answers (a uniform sample of at most :data:`DRIFT_SAMPLE_SIZE`)
against the version's reference answers (skipped, with the reason in the snapshot, when the
version has no reference), stores the result as a health snapshot labelled with that version,
updates the alerts (:mod:`~skinlesion.monitoring.alerts`), given a notifier delivers the alert
events not delivered yet and, given a cache folder, fires the retraining triggers that are due
(:func:`skinlesion.lifecycle.triggers.check_retraining`). It returns a :class:`SnapshotResult`
saying what happened.

A snapshot is marked ``simulated`` when the caller says so (the embedded demo's replay) or when any
answer it judges is marked simulated, so a plain ``skinlesion monitor`` over the demo's store (or
any store holding simulated traffic) is marked too; alerts raised from it carry the mark
(:mod:`~skinlesion.monitoring.alerts`).

:func:`run_every` repeats it on a fixed cadence until stopped, handing each result to callbacks
(the CLI prints a line and refreshes the Prometheus gauges).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from skinlesion.errors import ModelNotFoundError, SkinLesionError
from skinlesion.lifecycle.triggers import TriggerOutcome, check_retraining
from skinlesion.model.ood import OODGate
from skinlesion.monitoring.alerts import AlertChange, Notifier, NotifyOutcome, notify_pending, update_alerts
from skinlesion.monitoring.health import DRIFT_METRIC, HealthReport, compute_health
from skinlesion.monitoring.ood_share import estimate_checks, version_gate
from skinlesion.monitoring.policy import Policy
from skinlesion.registry import read_reference
from skinlesion.store import Alert, HealthSnapshot, SnapshotMetric, Store
from skinlesion.thresholds import Status, parse_duration

if TYPE_CHECKING:  # drift imports evidently (seconds): only when a run computes drift
    from skinlesion.monitoring.drift import DriftNull

logger = logging.getLogger(__name__)

#: At most this many answers of a window are compared with the reference (a uniform sample).
DRIFT_SAMPLE_SIZE = 5000
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec)\s*$")


def parse_interval(text: str) -> timedelta:
    """A run cadence such as ``30s``, ``15m``, ``1h``, ``1d``: the policy's durations (m, h, d, w)
    plus seconds; ValueError naming the format otherwise."""
    match = _SECONDS.match(str(text))
    if match is None:
        try:
            return parse_duration(text)
        except ValueError:
            raise ValueError(f"an interval is a number and a unit s, m, h, d or w (e.g. '30s', "
                             f"'15m', '1h'), got {text!r}") from None
    value = timedelta(seconds=float(match.group(1)))
    if value <= timedelta(0):
        raise ValueError(f"an interval must be positive (e.g. '30s', '15m'), got {text!r}")
    return value


def window_length(policy: Policy, window: str) -> timedelta:
    """The length of ``window``: a window named in the policy (``24h``, ``7d``, ``30d``) or any
    duration (``12h``)."""
    if window in policy.windows:
        return policy.windows[window]
    try:
        return parse_duration(window)
    except ValueError:
        raise ValueError(f"window must be one the policy names ({', '.join(policy.windows)}) or a "
                         f"duration such as '12h', got {window!r}") from None


# --- one run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftOutcome:
    """The window's drift against the reference: the score (share of drifted features), the
    drifted features (most drifted first) and the per-feature details for the report; or why it
    was not computed (``skipped``)."""

    score: float | None = None
    drifted_features: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""


@dataclass(frozen=True)
class SnapshotResult:
    """What one run did: the stored ``snapshot``, the ``report`` behind it, the ``drift`` outcome,
    the alert ``changes`` (opened, escalated, resolved), the alerts open afterwards, the
    delivery of pending alert events (None without a notifier) and the retraining triggers that
    fired (empty when none did or they were not checked)."""

    snapshot: HealthSnapshot
    report: HealthReport
    drift: DriftOutcome
    changes: list[AlertChange]
    open_alerts: list[Alert]
    notified: NotifyOutcome | None = None
    retraining: tuple[TriggerOutcome, ...] = ()

    @property
    def status(self) -> Status:
        """The worst status of the window."""
        return Status(self.snapshot.status)

    def summary(self) -> str:
        """One line for the monitor's log: time, window, worst status, off-green metrics, alert
        changes, open alerts and delivery."""
        snap = self.snapshot
        off = [m.metric for m in snap.metrics if m.effective_status in ("yellow", "red")]
        parts = [f"{snap.ts:%Y-%m-%d %H:%M:%S}Z {snap.window_name}: {snap.status.upper()}"
                 + (f" ({', '.join(off)})" if off else ""),
                 f"{self.report.n_predictions} predictions, {self.report.n_labelled} labelled"]
        if self.changes:
            parts.append("alerts " + "; ".join(c.describe() for c in self.changes))
        parts.append(f"{len(self.open_alerts)} open alert{'s' if len(self.open_alerts) != 1 else ''}")
        if self.drift.skipped:
            parts.append(f"drift skipped: {self.drift.skipped}")
        if self.notified is not None and (self.notified.sent or self.notified.failed):
            parts.append(f"webhook {self.notified.sent} sent, {self.notified.failed} failed")
        return " · ".join(parts)


def measure_drift(reference: pd.DataFrame, current: pd.DataFrame, null: DriftNull | None = None) -> DriftOutcome:
    """Drift of ``current`` (the window's answers) against ``reference`` (the version's
    reference answers) judged against the version's ``null``, through
    :func:`skinlesion.monitoring.drift.compute_drift`. Skipped (saying why) when the window is
    empty, has too few answers to be judged, or no feature could be tested."""
    if current.empty:
        return DriftOutcome(skipped="no predictions in the window")
    from skinlesion.monitoring.drift import compute_drift

    result = compute_drift(reference, current, null=null)
    if math.isnan(result.share_drifted):
        return DriftOutcome(details=result.as_dict(),
                            skipped="; ".join(result.notes) or "no feature could be tested")
    return DriftOutcome(score=result.share_drifted, drifted_features=result.drifted_features(),
                        details=result.as_dict())


def _drift(store: Store, models_dir: Path, version: str, start: datetime,
           end: datetime) -> tuple[DriftOutcome, pd.DataFrame | None, pd.DataFrame, OODGate | None]:
    """The drift of ``version``'s answers in the window against its reference answers (with the
    reference, the window's sampled answers and the version's OOD gate, for the estimate checks);
    skipped (saying why) when the version is not in ``models_dir`` or was saved without reference
    answers."""
    from skinlesion.monitoring.drift import version_null

    current = store.sample_predictions(start, end, n=DRIFT_SAMPLE_SIZE, model_version=version,
                                       include_embedding=True)
    gate = version_gate(models_dir, version)
    try:
        reference = read_reference(models_dir, version)
    except ModelNotFoundError:
        return (DriftOutcome(skipped=f"the active model version {version!r} is not in {models_dir}"),
                None, current, None)
    if reference is None:
        return (DriftOutcome(skipped=f"the active model version {version!r} has no reference data"),
                None, current, gate)
    null = version_null(models_dir, version, reference) if not current.empty else None
    return measure_drift(reference, current, null), reference, current, gate


def _extra_metrics(report: HealthReport, policy: Policy) -> list[SnapshotMetric]:
    """Window-level numbers stored as snapshot metrics too, so they can be plotted over time."""
    values = {"volume": float(report.n_predictions), "label_coverage": report.label_coverage,
              "label_lag_hours": report.label_lag_hours, "uncertain_share": report.uncertain_share,
              **{f"latency_{q}_ms": report.latency_ms.get(q) for q in ("p50", "p99")}}
    return [SnapshotMetric(metric=name, value=value, status=policy.status(name, value),
                           n=report.n_predictions)
            for name, value in values.items() if name not in report.metrics]


def snapshot_from_report(report: HealthReport, policy: Policy, *, ts: datetime, window_name: str,
                         model_version: str | None, drift: DriftOutcome,
                         simulated: bool = False) -> HealthSnapshot:
    """The snapshot row of ``report``: one :class:`SnapshotMetric` per metric of the report plus
    volume, label coverage and lag, uncertain share and latency p50/p99; the whole report (and the
    drift details) as its JSON payload; ``simulated`` for a snapshot of simulated traffic."""
    rows = [SnapshotMetric(metric=name, value=m.value, status=m.status, n=m.n, note=m.note,
                           estimated=m.estimated, estimated_status=m.estimated_status,
                           previous_value=m.previous_value)
            for name, m in report.metrics.items()]
    payload = report.model_dump(mode="json")
    payload["drift"] = {"skipped": drift.skipped, **drift.details}
    return HealthSnapshot(ts=ts, window_name=window_name, window_start=report.start,
                          window_end=report.end, model_version=model_version, source=report.source,
                          status=report.status, metrics=(*rows, *_extra_metrics(report, policy)),
                          report=payload, simulated=simulated)


def run_once(store: Store, models_dir: Path, policy: Policy, *, now: datetime | None = None,
             window: str = "24h", notifier: Notifier | None = None,
             simulated: bool = False, retrain_cache_dir: Path | None = None) -> SnapshotResult:
    """One monitoring run over the window ``window`` ending at ``now`` (default: the current time):
    health report, drift against the active version's reference, stored snapshot, alert updates,
    (with ``notifier``) delivery of the pending alert events and (with ``retrain_cache_dir``, where
    a launched retraining job caches activations) the retraining triggers of ``policy.retraining``.
    See the module docstring.

    ``simulated=True`` marks the snapshot (and the alerts it raises) as simulated even when the
    window holds no answer (the demo's replay); otherwise it is marked when any of the active
    version's answers in the window is marked simulated.

    The snapshot judges the version it is labelled with, the active one, on its own answers
    (``compute_health(model_version=...)``): a challenger's A/B answers and the fallback's
    answers are left out, so neither can colour (or mask) the active version's health, and its
    alerts and retraining events are about the version retraining would start from. While the
    fallback is engaged the active version answers nothing new: its snapshot rests on its answers
    from before the switch still in the window, and turns "unknown" once none are left."""
    end = now or datetime.now(UTC)
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    start = end - window_length(policy, window)
    version = store.get_route().active_version
    # the host's resource use only describes a run at the current time, not a recomputed past one
    report = compute_health(store, start, end, policy=policy, model_version=version, window=window,
                            resources=now is None)
    previous = store.latest_snapshot(window)
    previous_drift = previous.metric(DRIFT_METRIC) if previous is not None else None
    drift, reference, current, gate = _drift(store, Path(models_dir), version, start, end)
    report = report.with_drift(drift.score, drift.drifted_features, policy=policy,
                               previous_value=previous_drift.value if previous_drift else None)
    if drift.skipped:
        metrics = dict(report.metrics)
        metrics[DRIFT_METRIC] = metrics[DRIFT_METRIC].model_copy(update={"note": drift.skipped})
        report = report.model_copy(update={"metrics": metrics})
    report = report.with_estimate_checks(estimate_checks(current, reference, gate, tuple(policy.malignant)),
                                         policy=policy)
    simulated = simulated or store.count_predictions(start, end, model_version=version,
                                                     simulated=True) > 0
    snapshot = snapshot_from_report(report, policy, ts=end, window_name=window, model_version=version,
                                    drift=drift, simulated=simulated)
    store.save_snapshot(snapshot)
    changes = update_alerts(store, snapshot, policy)
    notified = notify_pending(store, notifier) if notifier is not None else None
    retraining = () if retrain_cache_dir is None else tuple(check_retraining(
        store, Path(models_dir), policy.retraining, cache_dir=retrain_cache_dir, now=now))
    return SnapshotResult(snapshot=snapshot, report=report, drift=drift, changes=changes,
                          open_alerts=store.open_alerts(), notified=notified, retraining=retraining)


# --- the loop -----------------------------------------------------------------------------------------


def run_every(store: Store, models_dir: Path, policy: Policy, *, every: timedelta,
              window: str = "24h", notifier: Notifier | None = None,
              retrain_cache_dir: Path | None = None,
              on_result: Sequence[Callable[[SnapshotResult], None]] = (),
              on_error: Callable[[SkinLesionError], None] | None = None,
              stop: threading.Event | None = None, runs: int | None = None) -> int:
    """Run :func:`run_once` now and then every ``every`` (on a fixed cadence; a run that overruns
    skips the slots it missed) until ``stop`` is set or ``runs`` runs are done; returns the number
    of runs (each as :func:`run_once` with ``notifier`` and ``retrain_cache_dir``). Each result goes
    to every ``on_result`` callback. A run failing with a project error
    (e.g. the store stayed locked) goes to ``on_error`` (default: logged) and the loop carries on."""
    stop = stop or threading.Event()
    period = every.total_seconds()
    done = 0
    next_at = time.monotonic()
    while not stop.is_set() and (runs is None or done < runs):
        try:
            result = run_once(store, models_dir, policy, window=window, notifier=notifier,
                              retrain_cache_dir=retrain_cache_dir)
        except SkinLesionError as err:
            (on_error or _log_error)(err)
        else:
            for callback in on_result:
                callback(result)
        done += 1
        if runs is not None and done >= runs:
            break
        next_at += period * max(1, int((time.monotonic() - next_at) // period) + 1)
        stop.wait(max(0.0, next_at - time.monotonic()))
    return done


def _log_error(err: SkinLesionError) -> None:
    logger.error("monitoring run failed (%s); retrying on the next run", err)

