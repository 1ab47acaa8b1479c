"""Health snapshots (one header row per monitoring run and window, one row per metric) and alerts.

At most one open alert per key (metric@scope): :func:`upsert_alert` checks and writes under an
advisory lock on the key (PostgreSQL also enforces it with a partial unique index), so two monitors
racing on different hosts never raise two alerts.
"""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd

from skinlesion.errors import DataError, StoreError
from skinlesion.records import (
    ALERT_ACTION_COLUMNS,
    ALERT_COLUMNS,
    SNAPSHOT_METRIC_COLUMNS,
    Alert,
    AlertAction,
    AuditEntry,
    HealthSnapshot,
    SnapshotMetric,
    now,
    utc,
)
from skinlesion.store.connection import Connection
from skinlesion.store.query import equals, json_dict, limit, where

EFFECTIVE_STATUS = ("CASE WHEN m.status = 'unknown' THEN m.estimated_status ELSE m.status END "
                    "AS effective_status")
_HEADER = ("id", "ts", "window_name", "window_start", "window_end", "model_version", "source",
           "status", "report", "simulated")


def save_snapshot(con: Connection, snapshot: HealthSnapshot) -> bool:
    inserted = con.run(
        f"INSERT INTO health_snapshots ({', '.join(_HEADER)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [snapshot.id, snapshot.ts, snapshot.window_name, snapshot.window_start, snapshot.window_end,
         snapshot.model_version, snapshot.source, snapshot.status, json.dumps(snapshot.report),
         snapshot.simulated])
    if not inserted:
        return False
    if snapshot.metrics:
        con.run_many(
            f"INSERT INTO health_metrics (snapshot_id, {', '.join(SNAPSHOT_METRIC_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' for _ in SNAPSHOT_METRIC_COLUMNS)})",
            [[snapshot.id, *(getattr(m, c) for c in SNAPSHOT_METRIC_COLUMNS)] for m in snapshot.metrics])
    return True


def query_snapshots(con: Connection, start: datetime | None, end: datetime | None, *,
                    metric: str | None, window_name: str | None,
                    model_version: str | None) -> pd.DataFrame:
    clause, params = where(start, end, dict(window_name=window_name, model_version=model_version), "s")
    if metric is not None:
        clause += (" AND " if clause else " WHERE ") + "m.metric = ?"
        params.append(metric)
    return con.frame(
        "SELECT s.id AS snapshot_id, s.ts, s.window_name, s.window_start, s.window_end, "
        "s.model_version, s.source, s.status AS snapshot_status, "
        "coalesce(s.simulated, false) AS simulated, "
        f"{', '.join('m.' + c for c in SNAPSHOT_METRIC_COLUMNS)}, {EFFECTIVE_STATUS} "
        f"FROM health_snapshots s JOIN health_metrics m ON m.snapshot_id = s.id{clause} "
        "ORDER BY s.ts, s.seq, m.metric", params)


def list_snapshots(con: Connection, start: datetime | None, end: datetime | None, *,
                   window_name: str | None, limit_rows: int | None, newest_first: bool) -> pd.DataFrame:
    clause, params = where(start, end, dict(window_name=window_name), "s")
    order = "DESC" if newest_first else "ASC"
    return con.frame(
        "SELECT s.id, s.ts, s.window_name, s.window_start, s.window_end, s.model_version, "
        "s.source, s.status, coalesce(s.simulated, false) AS simulated "
        f"FROM health_snapshots s{clause} ORDER BY s.ts {order}, s.seq {order}{limit(limit_rows)}",
        params)


def read_snapshot(con: Connection, clause: str, params: list[object]) -> HealthSnapshot | None:
    """The newest snapshot matching ``clause`` with its metrics, or None."""
    row = con.first(f"SELECT {', '.join(_HEADER)} FROM health_snapshots {clause} "
                    "ORDER BY ts DESC, seq DESC LIMIT 1", params)
    if row is None:
        return None
    row["report"] = json_dict(row["report"])
    row["simulated"] = bool(row["simulated"])
    metrics = con.rows(f"SELECT {', '.join(SNAPSHOT_METRIC_COLUMNS)} FROM health_metrics "
                       "WHERE snapshot_id = ? ORDER BY metric", [row["id"]])
    row["metrics"] = tuple(SnapshotMetric(**dict(zip(SNAPSHOT_METRIC_COLUMNS, m, strict=True)))
                           for m in metrics)
    return HealthSnapshot(**row)


def metric_status_history(con: Connection, window_name: str, *, last: int,
                          until: datetime | None) -> dict[str, list[str]]:
    if last < 1:
        raise DataError(f"must be 1 or more, got {last}", field="last")
    clauses, params = ["window_name = ?"], [window_name]
    if until is not None:
        clauses.append("ts <= ?")
        params.append(utc(until))
    chosen: list[str] = []
    before: list[object] = []
    for _ in range(last):
        row = con.one(
            f"SELECT id, window_start FROM health_snapshots WHERE "
            f"{' AND '.join([*clauses, *(['window_end <= ?'] if before else [])])} "
            "ORDER BY ts DESC, seq DESC LIMIT 1", [*params, *before])
        if row is None:
            break
        chosen.insert(0, row[0])
        before = [row[1]]
    rows = con.rows(
        f"SELECT m.snapshot_id, m.metric, {EFFECTIVE_STATUS} FROM health_metrics m "
        f"WHERE m.snapshot_id IN ({', '.join('?' * len(chosen))})", chosen) if chosen else []
    position = {snapshot_id: i for i, snapshot_id in enumerate(chosen)}
    history: dict[str, list[str]] = {}
    for snapshot_id, metric, status in rows:
        history.setdefault(metric, ["unknown"] * len(chosen))[position[snapshot_id]] = status
    return history


# --- alerts ---


def read_alerts(con: Connection, tail: str, params: list[object]) -> list[Alert]:
    """The alerts ``SELECT ... FROM alerts {tail}`` finds, as records."""
    alerts = []
    for row in con.rows(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts {tail}", params):
        values = dict(zip(ALERT_COLUMNS, row, strict=True))
        values["details"] = json_dict(values["details"])
        alerts.append(Alert(**values))
    return alerts


def open_alerts(con: Connection, *, scope: str | None) -> list[Alert]:
    clause, params = equals(dict(scope=scope), "resolved_at IS NULL")
    return read_alerts(con, f"{clause} ORDER BY opened_at, id", params)


def query_alerts(con: Connection, start: datetime | None, end: datetime | None, *,
                 include_resolved: bool, metric: str | None, scope: str | None) -> pd.DataFrame:
    extra = [] if include_resolved else ["resolved_at IS NULL"]
    clause, params = equals(dict(metric=metric, scope=scope), *extra)
    clauses = [clause.removeprefix(" WHERE ")] if clause else []
    if end is not None:
        clauses.append("opened_at < ?")
        params.append(utc(end))
    if start is not None:
        clauses.append("(resolved_at IS NULL OR resolved_at >= ?)")
        params.append(utc(start))
    frame = con.frame(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
                      f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''} "
                      "ORDER BY opened_at DESC, id", params)
    frame["details"] = [json_dict(d) for d in frame["details"]]
    return frame


def upsert_alert(con: Connection, alert: Alert) -> Alert:
    alert = Alert.model_validate(alert.model_dump())
    values = alert.model_dump()
    values["details"] = json.dumps(alert.details)
    con.lock(f"skinlesion:alert:{alert.key}")
    if alert.is_open:
        found = read_alerts(con, "WHERE key = ? AND resolved_at IS NULL AND id <> ?", [alert.key, alert.id])
        if found:
            return found[0]
    updated = [c for c in ALERT_COLUMNS if c not in ("id", "key", "metric", "scope", "opened_at")]
    con.run(f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in ALERT_COLUMNS)}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in updated),
            [values[c] for c in ALERT_COLUMNS])
    return alert


def resolve_alert(con: Connection, alert_id: str, *, at: datetime | None, message: str | None) -> Alert:
    at = utc(at or now())
    found = read_alerts(con, "WHERE id = ?", [alert_id])
    if not found:
        raise StoreError(f"no alert with id {alert_id!r}; list them with Store.query_alerts")
    con.lock(f"skinlesion:alert:{found[0].key}")
    found = read_alerts(con, "WHERE id = ?", [alert_id])  # read again under the lock
    if not found[0].is_open:
        return found[0]
    resolved = found[0].model_copy(update=dict(
        resolved_at=at, last_seen_at=max(at, found[0].last_seen_at),
        message=message or found[0].message, last_event="resolved", last_event_at=at, notified=False))
    con.run("UPDATE alerts SET resolved_at = ?, last_seen_at = ?, message = ?, "
            "last_event = 'resolved', last_event_at = ?, notified = false WHERE id = ?",
            [resolved.resolved_at, resolved.last_seen_at, resolved.message, at, alert_id])
    return resolved


def mark_alert_notified(con: Connection, alert_id: str, event_at: datetime) -> bool:
    return bool(con.run("UPDATE alerts SET notified = true WHERE id = ? AND last_event_at = ? "
                        "AND NOT notified", [alert_id, utc(event_at)]))


# --- what operators did about alerts ---


def add_alert_action(con: Connection, action: AlertAction) -> tuple[AlertAction, AuditEntry]:
    """Store ``action`` on its alert and return it with the audit entry that records it (for the
    caller to write in the same transaction). StoreError for an unknown alert."""
    found = read_alerts(con, "WHERE id = ?", [action.alert_id])
    if not found:
        raise StoreError(f"no alert with id {action.alert_id!r}; list them with Store.query_alerts")
    details: dict[str, object] = {"alert_id": action.alert_id, "status": found[0].status}
    if action.silenced_until is not None:
        details["silenced_until"] = action.silenced_until.isoformat()
    if action.assignee:
        details["assignee"] = action.assignee
    entry = AuditEntry(actor=action.actor, role=action.role, action=f"{action.kind}_alert",
                       target=found[0].key, reason=action.note, details=details, ts=action.ts)
    stored = action.model_copy(update={"audit_id": entry.id})
    values = stored.model_dump()
    con.run(f"INSERT INTO alert_actions ({', '.join(ALERT_ACTION_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in ALERT_ACTION_COLUMNS)})",
            [values[c] for c in ALERT_ACTION_COLUMNS])
    return stored, entry


def alert_actions(con: Connection, alert_ids: list[str] | None) -> list[AlertAction]:
    """The actions on ``alert_ids`` (every alert when None), oldest first."""
    if alert_ids is not None and not alert_ids:
        return []
    clause = "" if alert_ids is None else f" WHERE alert_id IN ({', '.join('?' * len(alert_ids))})"
    rows = con.rows(f"SELECT {', '.join(ALERT_ACTION_COLUMNS)} FROM alert_actions{clause} "
                    "ORDER BY ts, id", list(alert_ids or []))
    return [AlertAction(**dict(zip(ALERT_ACTION_COLUMNS, row, strict=True))) for row in rows]
