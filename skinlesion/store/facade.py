"""``Store``: the thin facade over the aggregate modules that every other layer calls.

Each method opens one unit of work on the backend (a read, or a write transaction committed when it
succeeds) and calls one function of ``predictions``, ``route``, ``jobs`` or ``snapshots``. The
backend is chosen by the store URL (``SKINLESION_STORE_URL``): ``duckdb:///PATH`` (or a bare path)
or ``postgresql://USER@HOST:PORT/DB``; see ``connection`` for how each shares the store between
processes and hosts. Query methods return pandas DataFrames with UTC timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from skinlesion.records import (
    Alert,
    AlertAction,
    AuditCheck,
    AuditEntry,
    FailureRecord,
    HealthSnapshot,
    JobRecord,
    LabelRecord,
    PredictionRecord,
    ServingRoute,
)
from skinlesion.store import jobs as job_sql
from skinlesion.store import predictions as prediction_sql
from skinlesion.store import route as route_sql
from skinlesion.store import snapshots as snapshot_sql
from skinlesion.store.connection import Backend, Timing, open_backend, parse_store_url
from skinlesion.store.migrations import (SCHEMA_VERSION, apply_pending, check_not_newer, schema_version,
                                         touch)


class Store:
    """The store at ``url`` (a store URL, or a DuckDB file path), created and migrated on construction.

    Cheap to create and safe to share between threads. ``busy_timeout_s`` bounds how long one
    operation waits for a busy store (another process's DuckDB lock, or a free pooled connection);
    DuckDB lock retries back off exponentially from ``retry_base_s`` up to ``retry_max_s`` with
    jitter, so competing processes do not retry in step.
    """

    def __init__(self, url: str | Path, *, busy_timeout_s: float = 10.0, retry_base_s: float = 0.005,
                 retry_max_s: float = 0.05, pool_size: int = 8):
        self.url = parse_store_url(url)
        #: the DuckDB file (None on PostgreSQL)
        self.path: Path | None = self.url.path
        self.busy_timeout_s = busy_timeout_s
        self._backend = open_backend(self.url, Timing(busy_timeout_s=busy_timeout_s,
                                                      retry_base_s=retry_base_s,
                                                      retry_max_s=retry_max_s, pool_size=pool_size))
        #: API keys revoked through this object (caches of verified keys watch it to drop a revoked
        #: key at once in the revoking process)
        self.keys_revoked = 0
        self.migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.url)!r})"

    @property
    def backend(self) -> Backend:
        """The backend's units of work (for the store package's own tools, e.g. ``transfer``)."""
        return self._backend

    @property
    def dialect(self) -> str:
        """``duckdb`` or ``postgresql``."""
        return self.url.dialect

    def release(self) -> None:
        """Give up this process's connections to the store (the kept DuckDB connection, or the
        pool); the next operation opens them again."""
        self._backend.release()

    def migrate(self) -> int:
        """Apply the pending migrations in one transaction; returns the schema version.

        Idempotent: a store already at :data:`SCHEMA_VERSION` is only read."""
        if self._backend.exists():
            with self._backend.read() as con:
                current = schema_version(con)
            check_not_newer(current, self._backend.describe())
            if current == SCHEMA_VERSION:
                return current
        self._backend.prepare()
        with self._backend.write() as con:
            return apply_pending(con, self._backend.describe())

    def check_writable(self) -> None:
        """StoreError (or StoreBusyError) unless the store takes a write now (a probe that changes
        nothing; the API's readiness)."""
        with self._backend.write() as con:
            touch(con)

    def schema_version(self) -> int:
        """The schema version recorded in the store."""
        with self._backend.read() as con:
            return schema_version(con)

    def log_predictions(self, rows: Iterable[PredictionRecord]) -> int:
        """Store ``rows`` in one transaction; returns how many were new.

        Idempotent on ``request_id``: a row whose id is already stored (a retried call, or a repeat
        within ``rows``) is skipped, the first write wins."""
        with self._backend.write() as con:
            return prediction_sql.log(con, rows)

    def bulk_load(self, predictions: pd.DataFrame, labels: pd.DataFrame | None = None) -> int:
        """Load already-validated rows in bulk (backfills of historical logs, benchmarks with a
        million rows): ``predictions`` with the predictions-table columns, ``labels`` with id,
        request_id, image_sha256, diagnosis, source, labelled_by, ts, simulated. One transaction;
        idempotent on the ids like :meth:`log_predictions`. Returns the predictions inserted."""
        with self._backend.write() as con:
            return prediction_sql.bulk_load(con, predictions, labels)

    def get_prediction(self, request_id: str) -> PredictionRecord | None:
        """The prediction logged under ``request_id``, or None."""
        with self._backend.read() as con:
            return prediction_sql.get(con, request_id)

    def owned_by(self, api_client: str, *, request_ids: Iterable[str] = (),
                 image_hashes: Iterable[str] = ()) -> tuple[set[str], set[str]]:
        """Which of ``request_ids`` and ``image_hashes`` belong to answers the API client
        ``api_client`` (a key's name) asked for."""
        with self._backend.read() as con:
            return prediction_sql.owned(con, api_client, request_ids, image_hashes)

    def query_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                          model_version: str | None = None, source: str | None = None,
                          model_role: str | None = None, simulated: bool | None = None,
                          returned: bool | None = None, limit: int | None = None,
                          newest_first: bool = False, include_embedding: bool = False) -> pd.DataFrame:
        """Predictions with ``start <= ts < end`` (either bound optional) matching the filters, one
        row per prediction with :data:`PREDICTION_COLUMNS` (``embedding`` only when asked)."""
        with self._backend.read() as con:
            return prediction_sql.query(con, start, end, model_version=model_version, source=source,
                                     model_role=model_role, simulated=simulated, returned=returned,
                                     limit_rows=limit, newest_first=newest_first,
                                     include_embedding=include_embedding)

    def count_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                          model_version: str | None = None, source: str | None = None,
                          model_role: str | None = None, simulated: bool | None = None,
                          returned: bool | None = None) -> int:
        """How many predictions match (same filters as :meth:`query_predictions`)."""
        with self._backend.read() as con:
            return prediction_sql.count(con, start, end, model_version=model_version, source=source,
                                     model_role=model_role, simulated=simulated, returned=returned)

    def version_counts(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """The model versions that answered in ``[start, end)``: ``model_version``, ``n`` answers,
        ``roles`` (the roles it answered in, comma-separated), ``first_ts``, ``last_ts``; most
        recent first (the dashboard's model filter)."""
        with self._backend.read() as con:
            return prediction_sql.version_counts(con, start, end)

    def hourly_operations(self, start: datetime, end: datetime, *, model_version: str | None = None,
                          source: str | None = None, returned: bool | None = None,
                          by_source: bool = False) -> pd.DataFrame:
        """Operations per UTC hour of ``[start, end)`` (hours without answers or failures left
        out): ``hour`` (and ``source`` with ``by_source``), ``n`` (answers), ``latency_p50_ms,
        latency_p95_ms, latency_p99_ms`` (linear interpolation; None in an hour without answers),
        ``uncertain``, ``refer`` (answers with that decision), ``failures`` (failed prediction
        requests of :data:`ERROR_RATE_KINDS`, with ``model_version`` those of that version) and
        ``error_rate`` (``failures / (failures + n)``), oldest first (the dashboard's Operations
        page)."""
        with self._backend.read() as con:
            return prediction_sql.hourly_operations(con, start, end, model_version=model_version,
                                                 source=source, returned=returned, by_source=by_source)

    def review_cases(self, start: datetime | None = None, end: datetime | None = None, *,
                     labelled: bool | None = None, order: Literal["risk", "newest"] = "risk",
                     model_version: str | None = None, source: str | None = None,
                     simulated: bool | None = None, limit: int | None = None) -> pd.DataFrame:
        """Returned answers (shadow answers excluded) in ``[start, end)`` for the review screens:
        :data:`PREDICTION_COLUMNS` without ``embedding``, plus ``diagnosis``, ``labelled_by`` and
        ``label_ts`` of the latest label by request id or image hash (None when unlabelled).

        ``labelled`` keeps only labelled (True) or unlabelled (False) cases; ``order`` is ``risk``
        (highest ``p_malignant`` first: the triage list) or ``newest``; ``limit`` caps the rows."""
        with self._backend.read() as con:
            return prediction_sql.review_cases(con, start, end, labelled=labelled, order=order,
                                            model_version=model_version, source=source,
                                            simulated=simulated, limit_rows=limit)

    def add_labels(self, labels: Iterable[LabelRecord]) -> int:
        """Store ``labels`` in one transaction; returns how many match a logged prediction.

        Every label is kept, matched or not (its prediction may be logged later, or the image seen
        again). A label given by request id also records that prediction's image hash, so it labels
        the image wherever it was answered (e.g. by the shadow model). Idempotent on label ``id``."""
        with self._backend.write() as con:
            return prediction_sql.add_labels(con, labels)

    def labelled_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                             model_version: str | None = None, source: str | None = None,
                             model_role: str | None = None, simulated: bool | None = None,
                             returned: bool | None = None,
                             include_embedding: bool = False) -> pd.DataFrame:
        """Predictions (filtered as in :meth:`query_predictions`) that have a label, with it.

        A prediction's label is the latest of those given for its request id or its image hash.
        Added columns: ``diagnosis`` (the ground truth), ``label_source``, ``labelled_by``,
        ``label_ts``, ``label_id``, ``label_simulated``."""
        with self._backend.read() as con:
            return prediction_sql.labelled_predictions(
                con, start, end, include_embedding=include_embedding, model_version=model_version,
                source=source, model_role=model_role, simulated=simulated, returned=returned)

    def window_summary(self, start: datetime, end: datetime, *, model_version: str | None = None,
                       source: str | None = None, model_role: str | None = None,
                       simulated: bool | None = None, returned: bool | None = None) -> dict[str, Any]:
        """Operational numbers of the predictions in ``[start, end)`` (filters as in
        :meth:`query_predictions`), in one pass: ``n``; ``latency_p50_ms, latency_p95_ms,
        latency_p99_ms`` (linear interpolation, as numpy's percentile) and ``latency_mean_ms`` (None
        when empty); ``decisions`` ({decision: count} over :data:`DECISIONS`)."""
        with self._backend.read() as con:
            return prediction_sql.window_summary(con, start, end, model_version=model_version, source=source,
                                              model_role=model_role, simulated=simulated,
                                              returned=returned)

    def hourly_volume(self, start: datetime, end: datetime, *, model_version: str | None = None,
                      source: str | None = None, model_role: str | None = None,
                      simulated: bool | None = None, returned: bool | None = None) -> pd.DataFrame:
        """Predictions per UTC hour: ``hour`` (every hour from the one holding ``start`` up to
        ``end``, empty hours included with 0) and ``n``, counting predictions in
        ``[start, end)``."""
        with self._backend.read() as con:
            return prediction_sql.hourly_volume(con, start, end, model_version=model_version, source=source,
                                             model_role=model_role, simulated=simulated, returned=returned)

    def score_sums(self, start: datetime, end: datetime, *, decimals: int = 4,
                   model_version: str | None = None, source: str | None = None,
                   model_role: str | None = None, simulated: bool | None = None,
                   returned: bool | None = None) -> tuple[dict[str, float], pd.DataFrame]:
        """Sums of ``p_malignant`` for confidence-based performance estimation
        (``skinlesion.monitoring.estimate``) over the predictions in ``[start, end)``.

        Returns ``totals`` — ``n``; ``tp, fp`` (sums of ``p`` and ``1 - p`` over cases called
        malignant at their own threshold), ``tn, fn`` (sums of ``1 - p`` and ``p`` over the others),
        ``entropy`` (sum of binary entropies in nats, ``p`` clipped to [1e-15, 1 - 1e-15]) — and a
        ``histogram`` with ``score`` (``p_malignant`` rounded to ``decimals``), ``pos`` (sum of
        ``p``) and ``neg`` (sum of ``1 - p``) per score."""
        with self._backend.read() as con:
            return prediction_sql.score_sums(con, start, end, decimals=decimals, model_version=model_version,
                                          source=source, model_role=model_role, simulated=simulated,
                                          returned=returned)

    def labelled_scores(self, start: datetime, end: datetime, *, model_version: str | None = None,
                        source: str | None = None, model_role: str | None = None,
                        simulated: bool | None = None, returned: bool | None = None) -> pd.DataFrame:
        """The labelled predictions of ``[start, end)`` with only what label-based metrics need:
        ``request_id, ts, threshold``, ``p_<CLASS>`` columns, ``p_malignant``, ``diagnosis`` (the
        latest label by request id or image hash, as :meth:`labelled_predictions`), ``label_ts``
        (its time) and ``first_label_ts`` (when the first label for it came: for label lag).
        Coverage is ``len(result) / window_summary()["n"]``."""
        with self._backend.read() as con:
            return prediction_sql.labelled_scores(con, start, end, model_version=model_version, source=source,
                                               model_role=model_role, simulated=simulated,
                                               returned=returned)

    def log_failure(self, failure: FailureRecord) -> bool:
        """Record a failed prediction request; False when its request id was already recorded."""
        with self._backend.write() as con:
            return prediction_sql.log_failure(con, failure)

    def query_failures(self, start: datetime | None = None, end: datetime | None = None, *,
                       source: str | None = None, kind: str | None = None,
                       model_version: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Failed prediction requests with ``start <= ts < end`` matching the filters, newest first,
        with the ``request_failures`` columns."""
        with self._backend.read() as con:
            return prediction_sql.query_failures(con, start, end, source=source, kind=kind,
                                              model_version=model_version, limit_rows=limit)

    def failure_counts(self, start: datetime, end: datetime, *, model_version: str | None = None,
                       source: str | None = None) -> dict[str, int]:
        """Failed prediction requests in ``[start, end)`` by kind: every :data:`FAILURE_KINDS` key,
        0 when none. With ``model_version`` only failures of that version count (most failures
        happen before a model answers and carry no version)."""
        with self._backend.read() as con:
            return prediction_sql.failure_counts(con, start, end, model_version=model_version, source=source)

    def get_route(self) -> ServingRoute:
        """The current serving route: the newest one set, or the default :class:`ServingRoute`."""
        with self._backend.read() as con:
            return route_sql.current_route(con)

    def set_route(self, route: ServingRoute, *, actor: str, role: str, reason: str,
                  details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Make ``route`` current and audit it (with the previous route) in one transaction;
        ``details`` (e.g. ``{"operation": "rollback"}``) are added to the audit row's."""
        with self._backend.write() as con:
            return route_sql.set_route(con, route, actor=actor, role=role, reason=reason, details=details)

    def route_history(self, limit: int | None = None) -> pd.DataFrame:
        """Every route set, newest first, with who set it and why (``threshold_overrides`` as
        dicts)."""
        with self._backend.read() as con:
            return route_sql.route_history(con, limit)

    def append_audit(self, actor: str, role: str, action: str, *, target: str | None = None,
                     reason: str = "", details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Record one operator action; returns the stored entry (with its id and time)."""
        entry = AuditEntry(actor=actor, role=role, action=action, target=target, reason=reason,
                           details=dict(details or {}))
        with self._backend.write() as con:
            route_sql.insert_audit(con, entry)
        return entry

    def verify_audit(self) -> AuditCheck:
        """Check the audit log's hash chain; names the first row rewritten, inserted or deleted
        with direct database access (see :mod:`skinlesion.store.route`)."""
        with self._backend.read() as con:
            return route_sql.verify_audit(con)

    def query_audit(self, start: datetime | None = None, end: datetime | None = None, *,
                    actor: str | None = None, role: str | None = None, action: str | None = None,
                    target: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Audit entries, newest first; ``details`` comes back as dicts."""
        with self._backend.read() as con:
            return route_sql.query_audit(con, start, end, limit_rows=limit,
                                     filters=dict(actor=actor, role=role, action=action, target=target))

    def create_api_key(self, name: str, *, actor: str = "system", role: str = "admin",
                       scopes: Iterable[str] = ()) -> str:
        """Create a key called ``name`` and return it; only its sha256 is stored, so show it once.
        ``scopes`` (:data:`~skinlesion.records.API_SCOPES`) let it label (``labeller``) or also read
        (``admin``) other clients' answers; without, it reads and labels its own only.

        Names are never reused (a revoked key keeps its name); the creation is audited."""
        with self._backend.write() as con:
            return route_sql.create_api_key(con, name, actor=actor, role=role, scopes=tuple(scopes))

    def api_key_scopes(self, key: str) -> tuple[str, tuple[str, ...]] | None:
        """The name and scopes of the unrevoked key ``key``, or None."""
        with self._backend.read() as con:
            return route_sql.api_key_scopes(con, key)

    def verify_api_key(self, key: str) -> str | None:
        """The name of the unrevoked key ``key``, or None."""
        with self._backend.read() as con:
            return route_sql.verify_api_key(con, key)

    def revoke_api_key(self, name: str, *, actor: str = "system", role: str = "admin",
                       reason: str = "") -> None:
        """Revoke the key ``name`` (audited); revoking a revoked key changes nothing."""
        with self._backend.write() as con:
            route_sql.revoke_api_key(con, name, actor=actor, role=role, reason=reason)
        self.keys_revoked += 1

    def list_api_keys(self) -> pd.DataFrame:
        """Key names with their creation time and revocation state (never the hashes)."""
        with self._backend.read() as con:
            return route_sql.list_api_keys(con)

    def sample_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                           n: int, seed: int = 0, model_version: str | None = None,
                           source: str | None = None, returned: bool | None = None,
                           include_embedding: bool = False) -> pd.DataFrame:
        """At most ``n`` of the predictions :meth:`query_predictions` would return, drawn uniformly
        (reservoir sample, repeatable for one ``seed``): drift over a month of traffic never loads
        the whole month, embeddings included. Oldest first."""
        with self._backend.read() as con:
            return prediction_sql.sample(con, start, end, n=n, seed=seed, model_version=model_version,
                                      source=source, returned=returned,
                                      include_embedding=include_embedding)

    def save_snapshot(self, snapshot: HealthSnapshot) -> bool:
        """Store ``snapshot`` and its metrics in one transaction; returns False (and writes nothing)
        when a snapshot with its id is already stored, so a retried call never duplicates rows."""
        with self._backend.write() as con:
            return snapshot_sql.save_snapshot(con, snapshot)

    def query_snapshots(self, start: datetime | None = None, end: datetime | None = None, *,
                        metric: str | None = None, window_name: str | None = None,
                        model_version: str | None = None) -> pd.DataFrame:
        """Snapshot metrics over time: one row per metric per snapshot taken at ``start <= ts < end``,
        oldest first. Columns: ``snapshot_id, ts, window_name, window_start, window_end,
        model_version, source, snapshot_status`` (the snapshot's worst status), ``simulated``
        and the :class:`SnapshotMetric` columns ``metric, value, status, n, note, estimated,
        estimated_status, previous_value`` plus ``effective_status`` (the realised status, or the
        estimated one while the realised one is unknown: what the alerts follow)."""
        with self._backend.read() as con:
            return snapshot_sql.query_snapshots(con, start, end, metric=metric, window_name=window_name,
                                             model_version=model_version)

    def list_snapshots(self, start: datetime | None = None, end: datetime | None = None, *,
                       window_name: str | None = None, limit: int | None = None,
                       newest_first: bool = False) -> pd.DataFrame:
        """One row per snapshot (``id, ts, window_name, window_start, window_end, model_version,
        source, status, simulated``), without metrics or report: the status timeline."""
        with self._backend.read() as con:
            return snapshot_sql.list_snapshots(con, start, end, window_name=window_name, limit_rows=limit,
                                            newest_first=newest_first)

    def get_snapshot(self, snapshot_id: str) -> HealthSnapshot | None:
        """The snapshot stored under ``snapshot_id`` with its metrics and report, or None."""
        with self._backend.read() as con:
            return snapshot_sql.read_snapshot(con, "WHERE id = ?", [snapshot_id])

    def latest_snapshot(self, window_name: str | None = None) -> HealthSnapshot | None:
        """The newest snapshot (of ``window_name`` when given) with its metrics and report, or None."""
        clause, params = ("WHERE window_name = ?", [window_name]) if window_name else ("", [])
        with self._backend.read() as con:
            return snapshot_sql.read_snapshot(con, clause, params)

    def metric_status_history(self, window_name: str, *, last: int,
                              until: datetime | None = None) -> dict[str, list[str]]:
        """The effective status (realised, or estimated while the realised one is unknown) of each
        metric over the newest ``last`` consecutive windows of ``window_name`` taken at or before
        ``until``, oldest first; ``unknown`` where a snapshot lacks the metric. Consecutive means
        windows that do not overlap: from the newest snapshot back, each earlier one is the newest
        whose window ended by the time the later one's began, so a monitor running every 15 min
        over a 24 h window compares today with yesterday, not with 15 min ago. Every list has one
        entry per window, so consecutive windows line up across metrics."""
        with self._backend.read() as con:
            return snapshot_sql.metric_status_history(con, window_name, last=last, until=until)

    def open_alerts(self, *, scope: str | None = None) -> list[Alert]:
        """The alerts not yet resolved (in ``scope`` when given), oldest first."""
        with self._backend.read() as con:
            return snapshot_sql.open_alerts(con, scope=scope)

    def get_alert(self, alert_id: str) -> Alert | None:
        """The alert stored under ``alert_id``, or None."""
        with self._backend.read() as con:
            found = snapshot_sql.read_alerts(con, "WHERE id = ?", [alert_id])
        return found[0] if found else None

    def query_alerts(self, start: datetime | None = None, end: datetime | None = None, *,
                     include_resolved: bool = True, metric: str | None = None,
                     scope: str | None = None) -> pd.DataFrame:
        """Alerts active at some time in ``[start, end)`` (opened before ``end``, not resolved before
        ``start``), newest first, one row per alert with the :class:`Alert` columns; ``details``
        comes back as dicts. Without ``include_resolved`` only the open ones."""
        with self._backend.read() as con:
            return snapshot_sql.query_alerts(con, start, end, include_resolved=include_resolved, metric=metric,
                                          scope=scope)

    def upsert_alert(self, alert: Alert) -> Alert:
        """Insert ``alert``, or update the stored alert with its id (status, times, message, details,
        last event, notified); returns the stored alert.

        Deduplicated: a new open alert whose key already has another open alert is not stored; the
        one already open is returned unchanged (so two monitors racing never raise two alerts)."""
        with self._backend.write() as con:
            return snapshot_sql.upsert_alert(con, alert)

    def resolve_alert(self, alert_id: str, *, at: datetime | None = None,
                      message: str | None = None) -> Alert:
        """Resolve the alert ``alert_id`` at ``at`` (default now) as a new, not yet notified event;
        an alert already resolved is returned unchanged. StoreError for an unknown id."""
        with self._backend.write() as con:
            return snapshot_sql.resolve_alert(con, alert_id, at=at, message=message)

    def pending_alert_notifications(self) -> list[Alert]:
        """Alerts whose latest event has not been delivered yet, oldest event first."""
        with self._backend.read() as con:
            return snapshot_sql.read_alerts(con, "WHERE NOT notified ORDER BY last_event_at, id", [])

    def mark_alert_notified(self, alert_id: str, event_at: datetime) -> bool:
        """Record that the event of ``alert_id`` at ``event_at`` was delivered; False when the alert
        has changed since (its newer event stays pending)."""
        with self._backend.write() as con:
            return snapshot_sql.mark_alert_notified(con, alert_id, event_at)

    def add_alert_action(self, action: AlertAction) -> AlertAction:
        """Store what an operator did about an alert (acknowledge, silence, unsilence, assign) and
        audit it (``<kind>_alert`` on the alert's key) in one transaction; returns the stored action
        with its audit id. StoreError for an unknown alert."""
        with self._backend.write() as con:
            stored, entry = snapshot_sql.add_alert_action(con, action)
            route_sql.insert_audit(con, entry)
        return stored

    def alert_actions(self, alert_ids: list[str] | None = None) -> list[AlertAction]:
        """What operators did about ``alert_ids`` (every alert when None), oldest first."""
        with self._backend.read() as con:
            return snapshot_sql.alert_actions(con, alert_ids)

    def create_job(self, job: JobRecord, *, is_live: Callable[[JobRecord], bool]) -> JobRecord:
        """Store the new ``job`` unless another unfinished job of the same model is live.

        In one write transaction (so two launchers racing cannot both pass): the unfinished jobs of
        ``job.model`` that ``is_live`` says are gone (their process died) are marked failed; if one
        is still live, :class:`~skinlesion.errors.JobConflictError` names it and nothing is stored."""
        with self._backend.write() as con:
            return job_sql.create_job(con, job, is_live=is_live)

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job stored under ``job_id`` (or a unique prefix of it, as printed), or None."""
        with self._backend.read() as con:
            return job_sql.get_job(con, job_id)

    def list_jobs(self, *, model: str | None = None, status: str | None = None,
                  limit: int | None = None) -> list[JobRecord]:
        """Jobs, newest first, of ``model`` and in ``status`` when given."""
        with self._backend.read() as con:
            return job_sql.list_jobs(con, model=model, status=status, limit_rows=limit)

    def update_job(self, job_id: str, *, expect: Iterable[str] | None = None,
                   **changes: Any) -> JobRecord | None:
        """Change fields of the job ``job_id`` (validated as a :class:`JobRecord`); with ``expect``
        only while its status is one of them (returns None and changes nothing otherwise, e.g. a
        job cancelled meanwhile is not marked succeeded). StoreError for an unknown id."""
        with self._backend.write() as con:
            return job_sql.update_job(con, job_id, expect=expect, changes=changes)

    def beat_job(self, job_id: str, *, at: datetime | None = None) -> bool:
        """Record that the job's process is alive (now, or ``at``): how other hosts judge a job
        whose pid they cannot check. False when the job has finished."""
        with self._backend.write() as con:
            return job_sql.beat(con, job_id, at)

    def append_job_log(self, job_id: str, lines: Iterable[str]) -> int:
        """Append ``lines`` to the job's log; returns how many were stored."""
        lines = list(lines)
        if not lines:
            return 0
        with self._backend.write() as con:
            return job_sql.append_log(con, job_id, lines)

    def job_log(self, job_id: str, *, tail: int | None = None) -> pd.DataFrame:
        """The job's log lines (``ts``, ``line``), oldest first; only the last ``tail`` when given."""
        with self._backend.read() as con:
            return job_sql.job_log(con, job_id, tail=tail)

    def claim_trigger(self, key: str, trigger: str, *, details: Mapping[str, Any] | None = None,
                      at: datetime | None = None) -> bool:
        """Record that the retraining trigger ``key`` (e.g. ``alert:<id>``) fired; False when it
        had fired before (then nothing changes), so each incident launches at most once."""
        with self._backend.write() as con:
            return job_sql.claim_trigger(con, key, trigger, details=details, at=at)

    def settle_trigger(self, key: str, *, job_id: str | None, outcome: str) -> None:
        """Record what a claimed trigger led to: the job it launched, or why none was."""
        with self._backend.write() as con:
            return job_sql.settle_trigger(con, key, job_id=job_id, outcome=outcome)

    def list_triggers(self, *, trigger: str | None = None) -> pd.DataFrame:
        """The retraining triggers that fired, newest first: ``key, trigger, ts, job_id, outcome,
        details`` (dicts)."""
        with self._backend.read() as con:
            return job_sql.list_triggers(con, trigger=trigger)

    def count_labels(self, *, source: str | None = None, since: datetime | None = None) -> int:
        """How many labels (from ``source``, e.g. ``review``) arrived after ``since``."""
        with self._backend.read() as con:
            return prediction_sql.count_labels(con, source=source, since=since)

    def retained_labelled_cases(self) -> pd.DataFrame:
        """Production cases usable for retraining: one row per image whose file was kept
        (``image_path``) and that has a label, with the metadata of its latest answer and its
        latest label. Columns: ``image_sha256, image_path, request_id, ts`` (of that answer),
        ``age_approx, sex, anatom_site_general, diagnosis, label_source, labelled_by, label_ts``;
        oldest answer first. Simulated answers count (the demo's traffic)."""
        with self._backend.read() as con:
            return prediction_sql.retained_labelled_cases(con)

    def set_archived(self, version: str, archived: bool, *, actor: str, role: str, reason: str,
                     details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Archive (or restore) the model version ``version`` and audit it in one transaction."""
        with self._backend.write() as con:
            return route_sql.set_archived(con, version, archived, actor=actor, role=role, reason=reason,
                                      details=details)

    def archived_versions(self) -> list[str]:
        """The model versions archived now (the latest archive/restore of each wins), sorted."""
        with self._backend.read() as con:
            return route_sql.archived_versions(con)
