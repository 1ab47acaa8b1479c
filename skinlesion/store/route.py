"""The serving route with its history, the append-only audit log, API keys, and archived versions.

Every change here is audited in the same transaction as the change itself. Changes that read
before they write (the route's previous value, a key name's uniqueness, the audit chain's head) take
an advisory lock, so replicas on several hosts take turns (a no-op on DuckDB, which has one writer
at a time).

The audit log is tamper-evident: each row stores ``row_hash`` = sha256 of the previous row's hash and
its own content (:func:`audit_row_hash`), so rewriting, inserting or deleting a row with direct
database access breaks the chain at that row, which :func:`verify_audit` names. Rows written before
the chain existed are chained by the first write after the upgrade. (Deleting the newest rows leaves
a shorter chain that still verifies; the monitor's copy or a backup tells.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from skinlesion.errors import DataError, StoreError
from skinlesion.records import (API_KEY_PREFIX, API_SCOPES, MAX_REASON_CHARS, AuditCheck, AuditEntry,
                                ServingRoute, non_blank, now, utc)
from skinlesion.store.connection import Connection
from skinlesion.store.query import hash_key, json_dict, limit, where

_ROUTE_FIELDS: tuple[str, ...] = tuple(ServingRoute.model_fields)
_AUDIT_COLUMNS = ("id", "ts", "actor", "role", "action", "target", "reason", "details")
#: The "previous hash" of the first audit row.
GENESIS_HASH = "0" * 64


def audit_row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """sha256 over the previous row's hash and this row's columns (:data:`_AUDIT_COLUMNS`), in a
    canonical form both backends give back the same (UTC microseconds, sorted JSON)."""
    content = [prev_hash, row["id"], utc(row["ts"]).isoformat(timespec="microseconds"), row["actor"],
               row["role"], row["action"], row["target"], row["reason"],
               json.dumps(json_dict(row["details"]), sort_keys=True, separators=(",", ":"))]
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


def _chain_head(con: Connection) -> str:
    """The newest audit row's hash; rows from before the chain are chained first, oldest first."""
    unchained = con.frame(f"SELECT seq, {', '.join(_AUDIT_COLUMNS)} FROM audit_log "
                          "WHERE row_hash IS NULL ORDER BY seq")
    if len(unchained):
        before = con.one("SELECT row_hash FROM audit_log WHERE seq < ? AND row_hash IS NOT NULL "
                         "ORDER BY seq DESC LIMIT 1", [int(unchained["seq"].iloc[0])])
        prev = before[0] if before else GENESIS_HASH
        for row in unchained.to_dict("records"):
            row_hash = audit_row_hash(prev, row)
            con.run("UPDATE audit_log SET prev_hash = ?, row_hash = ? WHERE id = ?",
                    [prev, row_hash, row["id"]])
            prev = row_hash
    head = con.one("SELECT row_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return head[0] if head else GENESIS_HASH


def insert_audit(con: Connection, entry: AuditEntry) -> None:
    """Append ``entry`` to the chain; DataError for a reason over :data:`MAX_REASON_CHARS` (the
    action it audits is then rolled back with it)."""
    if len(entry.reason) > MAX_REASON_CHARS:
        raise DataError(f"the reason is {len(entry.reason)} characters; at most {MAX_REASON_CHARS}: "
                        "say briefly why, and never put patient details in it", field="reason")
    con.lock("skinlesion:audit")
    prev = _chain_head(con)
    values = [entry.id, entry.ts, entry.actor, entry.role, entry.action, entry.target, entry.reason,
              json.dumps(entry.details)]
    row_hash = audit_row_hash(prev, dict(zip(_AUDIT_COLUMNS, values, strict=True)))
    con.run(f"INSERT INTO audit_log ({', '.join(_AUDIT_COLUMNS)}, prev_hash, row_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", [*values, prev, row_hash])


def verify_audit(con: Connection) -> AuditCheck:
    """Walk the audit chain oldest first; the first row whose hash, or link to the row before, does
    not hold is named."""
    prev, checked = GENESIS_HASH, 0
    frame = con.frame(f"SELECT seq, {', '.join(_AUDIT_COLUMNS)}, prev_hash, row_hash FROM audit_log "
                      "ORDER BY seq")
    for row in frame.to_dict("records"):
        problem = None
        if row["row_hash"] is None:
            problem = "the row is not chained (written without the hash chain)"
        elif row["prev_hash"] != prev:
            problem = "its link to the row before does not hold (a row was deleted or inserted)"
        elif audit_row_hash(prev, row) != row["row_hash"]:
            problem = "its content changed after it was written"
        if problem:
            return AuditCheck(rows=len(frame), checked=checked, broken_id=row["id"],
                              broken_seq=int(row["seq"]), problem=problem)
        prev, checked = row["row_hash"], checked + 1
    return AuditCheck(rows=len(frame), checked=checked)


def current_route(con: Connection) -> ServingRoute:
    """The newest route set, or the default :class:`ServingRoute`."""
    row = con.first(f"SELECT {', '.join(_ROUTE_FIELDS)} FROM serving_route ORDER BY id DESC LIMIT 1")
    if row is None:
        return ServingRoute()
    return ServingRoute(**{**row, "threshold_overrides": json_dict(row["threshold_overrides"])})


def set_route(con: Connection, route: ServingRoute, *, actor: str, role: str, reason: str,
              details: Mapping[str, Any] | None) -> AuditEntry:
    con.lock("skinlesion:route")
    previous = current_route(con)
    entry = AuditEntry(actor=actor, role=role, action="set_route", target=route.active_version,
                       reason=non_blank(reason, "reason"),
                       details={**(details or {}), "route": route.model_dump(),
                                "previous": previous.model_dump()})
    values = route.model_dump()
    values["threshold_overrides"] = json.dumps(values["threshold_overrides"])
    con.run(f"INSERT INTO serving_route (ts, audit_id, {', '.join(_ROUTE_FIELDS)}) "
            f"VALUES (?, ?, {', '.join('?' for _ in _ROUTE_FIELDS)})",
            [entry.ts, entry.id, *(values[f] for f in _ROUTE_FIELDS)])
    insert_audit(con, entry)
    return entry


def route_history(con: Connection, limit_rows: int | None) -> pd.DataFrame:
    frame = con.frame(
        f"SELECT r.id, r.ts, {', '.join('r.' + f for f in _ROUTE_FIELDS)}, a.actor, a.role, a.reason "
        f"FROM serving_route r JOIN audit_log a ON a.id = r.audit_id ORDER BY r.id DESC{limit(limit_rows)}")
    frame["threshold_overrides"] = [json_dict(v) for v in frame["threshold_overrides"]]
    return frame


def query_audit(con: Connection, start: datetime | None, end: datetime | None, *,
                filters: Mapping[str, object], limit_rows: int | None) -> pd.DataFrame:
    clause, params = where(start, end, filters, "a")
    frame = con.frame(f"SELECT {', '.join('a.' + c for c in _AUDIT_COLUMNS)} FROM audit_log a{clause} "
                      f"ORDER BY a.seq DESC{limit(limit_rows)}", params)
    frame["details"] = [json_dict(d) for d in frame["details"]]
    return frame


# --- API keys ---


def create_api_key(con: Connection, name: str, *, actor: str, role: str,
                   scopes: tuple[str, ...] = ()) -> str:
    name = non_blank(name, "name")
    unknown = sorted(set(scopes) - set(API_SCOPES))
    if unknown:
        raise StoreError(f"unknown API key scope {', '.join(unknown)}; known: {', '.join(API_SCOPES)} "
                         "(a key without scopes reads and labels its own answers only)")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    con.lock(f"skinlesion:api_key:{name}")
    if con.one("SELECT 1 FROM api_keys WHERE name = ?", [name]):
        raise StoreError(f"an API key named {name!r} already exists (names are never reused, "
                         "even after revocation); choose another name")
    con.run("INSERT INTO api_keys (name, key_hash, created, scopes) VALUES (?, ?, ?, ?)",
            [name, hash_key(key), now(), ",".join(sorted(set(scopes)))])
    insert_audit(con, AuditEntry(actor=actor, role=role, action="create_api_key", target=name,
                                 details={"scopes": sorted(set(scopes))}))
    return key


def api_key_scopes(con: Connection, key: str) -> tuple[str, tuple[str, ...]] | None:
    """The name and scopes of the unrevoked key ``key``, or None."""
    row = con.one("SELECT name, scopes FROM api_keys WHERE key_hash = ? AND NOT revoked",
                  [hash_key(key)])
    if row is None:
        return None
    return str(row[0]), tuple(s for s in (row[1] or "").split(",") if s)


def verify_api_key(con: Connection, key: str) -> str | None:
    found = api_key_scopes(con, key)
    return None if found is None else found[0]


def revoke_api_key(con: Connection, name: str, *, actor: str, role: str, reason: str) -> None:
    row = con.one("SELECT revoked FROM api_keys WHERE name = ?", [name])
    if row is None:
        known = [n for (n,) in con.rows("SELECT name FROM api_keys ORDER BY name")]
        raise StoreError(f"no API key named {name!r}; known: {', '.join(known) or 'none'}")
    if row[0]:
        return
    if con.run("UPDATE api_keys SET revoked = true, revoked_at = ? WHERE name = ? AND NOT revoked",
               [now(), name]):
        insert_audit(con, AuditEntry(actor=actor, role=role, action="revoke_api_key", target=name,
                                     reason=reason))


def list_api_keys(con: Connection) -> pd.DataFrame:
    return con.frame("SELECT name, scopes, created, revoked, revoked_at FROM api_keys ORDER BY created")


# --- archived versions ---


def set_archived(con: Connection, version: str, archived: bool, *, actor: str, role: str, reason: str,
                 details: Mapping[str, Any] | None) -> AuditEntry:
    entry = AuditEntry(actor=actor, role=role, action="archive" if archived else "unarchive",
                       target=non_blank(version, "version"), reason=non_blank(reason, "reason"),
                       details=dict(details or {}))
    con.run("INSERT INTO version_archive (version, archived, ts, audit_id) VALUES (?, ?, ?, ?)",
            [version, archived, entry.ts, entry.id])
    insert_audit(con, entry)
    return entry


def archived_versions(con: Connection) -> list[str]:
    rows = con.rows("SELECT version FROM (SELECT version, archived, row_number() OVER "
                    "(PARTITION BY version ORDER BY seq DESC) AS rn FROM version_archive) latest "
                    "WHERE rn = 1 AND archived ORDER BY version")
    return [version for (version,) in rows]
