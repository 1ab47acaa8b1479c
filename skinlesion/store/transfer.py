"""Moving a deployment: copy a store (a DuckDB file) into an empty PostgreSQL store, then verify it.

Every table is copied whole, in key order, in one transaction on the target (all or nothing), the
sequences behind ``seq``/``id`` columns are moved past the copied values, and each table is then
verified: the row count and a sha256 over its rows in key order, computed the same way from both
sides (times as UTC, JSON with sorted keys, floats by their exact value), must be equal.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from skinlesion.errors import StoreError
from skinlesion.records import utc
from skinlesion.store.connection import Connection
from skinlesion.store.facade import Store
from skinlesion.store.migrations import schema_version
from skinlesion.store.query import cols

#: every table with its key (copy and checksum order), JSON columns and the sequence behind a column
TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, str] | None], ...] = (
    ("predictions", ("request_id",), (), None),
    ("labels", ("id",), (), ("labels_seq", "seq")),
    ("audit_log", ("id",), ("details",), ("audit_seq", "seq")),
    ("serving_route", ("id",), ("threshold_overrides",), ("serving_route_seq", "id")),
    ("api_keys", ("name",), (), None),
    ("health_snapshots", ("id",), ("report",), ("health_snapshots_seq", "seq")),
    ("health_metrics", ("snapshot_id", "metric"), (), None),
    ("alerts", ("id",), ("details",), None),
    ("jobs", ("id",), ("config", "result"), ("jobs_seq", "seq")),
    ("job_log", ("seq",), (), ("job_log_seq", "seq")),
    ("retrain_triggers", ("key",), ("details",), None),
    ("version_archive", ("seq",), (), ("version_archive_seq", "seq")),
    ("request_failures", ("request_id",), (), None),
    ("alert_actions", ("id",), (), None),
)
_CHUNK = 20_000


@dataclass(frozen=True)
class TableCheck:
    """One table after the copy: rows and checksum on each side."""

    table: str
    source_rows: int
    target_rows: int
    source_sha256: str
    target_sha256: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sha256 == self.target_sha256


def _columns(con: Connection, table: str) -> list[str]:
    rows = con.rows("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                    "AND table_schema = current_schema() ORDER BY ordinal_position", [table])
    return [name for (name,) in rows]


def _canonical(value: Any, is_json: bool) -> str:
    """One cell as text that is equal on both backends for equal values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2205"
    if is_json:
        parsed = json.loads(value) if isinstance(value, str) else value
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    if isinstance(value, datetime):
        return utc(value).isoformat(timespec="microseconds")
    if isinstance(value, bool | np.bool_):
        return "t" if value else "f"
    if isinstance(value, float | np.floating):
        return float(value).hex()
    if isinstance(value, list | tuple | np.ndarray):  # embeddings: float32 on both backends
        return "[" + ",".join(float(np.float32(v)).hex() for v in value) + "]"
    return str(value)


def _chunks(con: Connection, table: str, columns: list[str], key: tuple[str, ...]) -> Iterator[list[tuple]]:
    offset = 0
    while True:
        rows = con.rows(f"SELECT {cols(columns)} FROM {table} ORDER BY {cols(key)} "
                        f"LIMIT {_CHUNK} OFFSET {offset}")
        if not rows:
            return
        yield rows
        offset += len(rows)


def table_checksum(con: Connection, table: str, columns: list[str], key: tuple[str, ...],
                   json_columns: tuple[str, ...]) -> tuple[int, str]:
    """(rows, sha256 over the rows in key order) of ``table``."""
    digest, n = hashlib.sha256(), 0
    is_json = [c in json_columns for c in columns]
    for rows in _chunks(con, table, columns, key):
        for row in rows:
            digest.update("\x1f".join(_canonical(v, j) for v, j in zip(row, is_json, strict=True)).encode())
            digest.update(b"\x1e")
        n += len(rows)
    return n, digest.hexdigest()


def _copy_table(source: Connection, target: Connection, table: str, key: tuple[str, ...],
                json_columns: tuple[str, ...]) -> None:
    columns = _columns(source, table)
    for rows in _chunks(source, table, columns, key):
        frame = _frame(rows, columns, json_columns)
        target.insert(table, frame)


def _frame(rows: list[tuple], columns: list[str], json_columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for column in json_columns:
        frame[column] = [None if v is None else (v if isinstance(v, str) else json.dumps(v))
                         for v in frame[column]]
    return frame


def copy_store(source: Store, target: Store, *,
               progress: Callable[[str], None] = lambda _: None) -> list[TableCheck]:
    """Copy ``source`` into the empty PostgreSQL store ``target`` and verify every table; returns
    the checks (StoreError when a table differs, naming it; the target then holds the copy for
    inspection)."""
    if target.dialect != "postgresql":
        raise StoreError(f"the target must be a PostgreSQL store (postgresql://USER@HOST:PORT/DB), "
                         f"got {target.url}")
    src, dst = source.backend, target.backend
    with src.read() as s, dst.read() as t:
        if schema_version(s) != schema_version(t):
            raise StoreError(f"schema versions differ: {source.url} has {schema_version(s)}, "
                             f"{target.url} {schema_version(t)}; upgrade skinlesion where it is older")
        filled = [table for table, *_ in TABLES if t.aggregate(f"SELECT count(*) FROM {table}")[0]]
    if filled:
        raise StoreError(f"the target {target.url} is not empty ({', '.join(filled)} hold rows); copy "
                         "into a new, empty database")
    with src.read() as s, dst.write() as t:
        for table, key, json_columns, sequence in TABLES:
            progress(f"copying {table}")
            _copy_table(s, t, table, key, json_columns)
            if sequence is not None:
                name, column = sequence
                t.aggregate(f"SELECT setval('{name}', coalesce((SELECT max({column}) FROM {table}), 0) + 1, "
                            "false)")
    return verify(source, target, progress=progress)


def verify(source: Store, target: Store, *,
           progress: Callable[[str], None] = lambda _: None) -> list[TableCheck]:
    """Compare every table's row count and checksum on both stores; StoreError naming those that
    differ."""
    checks = []
    with source.backend.read() as s, target.backend.read() as t:
        for table, key, json_columns, _ in TABLES:
            progress(f"verifying {table}")
            columns = _columns(s, table)
            n_s, sha_s = table_checksum(s, table, columns, key, json_columns)
            n_t, sha_t = table_checksum(t, table, columns, key, json_columns)
            checks.append(TableCheck(table, n_s, n_t, sha_s, sha_t))
    bad = [f"{c.table} ({c.source_rows} rows, sha256 {c.source_sha256[:12]} vs {c.target_rows} rows, "
           f"sha256 {c.target_sha256[:12]})" for c in checks if not c.ok]
    if bad:
        raise StoreError(f"the copy differs from the source in {'; '.join(bad)}; the source is "
                         "unchanged: drop the target database and copy again")
    return checks


def migrate_store(source_url: str, target_url: str, *, busy_timeout_s: float = 10.0,
                  progress: Callable[[str], None] = lambda _: None) -> list[TableCheck]:
    """``skinlesion store migrate``: copy the store at ``source_url`` into the empty PostgreSQL
    store at ``target_url`` (its schema is created first) and verify it."""
    source = Store(source_url, busy_timeout_s=busy_timeout_s)
    target = Store(target_url, busy_timeout_s=busy_timeout_s)
    try:
        return copy_store(source, target, progress=progress)
    finally:
        target.release()

