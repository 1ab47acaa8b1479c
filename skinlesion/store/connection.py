"""Connections: which backend a store URL names, and the units of work (read or write) on it.

``SKINLESION_STORE_URL`` is ``duckdb:///PATH`` (embedded, one host; a bare path means the same) or
``postgresql://USER@HOST:PORT/DB`` (several hosts). Each backend hands out :class:`Connection`
adapters for one unit of work: a read, or a write transaction committed when the block succeeds and
rolled back when it raises. Aggregate modules write SQL with ``?`` placeholders once; the adapter
passes it to DuckDB as it is and to psycopg with ``%s``. Where the dialects differ the aggregate
asks ``con.dialect``.

DuckDB. One process may write a file, or many processes read it, never both. Each process keeps ONE
connection per file (shared by every Store on that file in the process) and runs every unit of work
on a cursor of it: writes one at a time (group commit batches them: see ``writer``), reads
concurrently, never failing on the process's own writer. The connection is opened read-only while
the process only reads (so several reading processes share the file) and reopened read-write on the
first write. It is given up when another process waits for the file: a process whose open fails on
the lock leaves a marker in ``<file>.waiting/``; the holder sees it at its next unit of work (or
within ``poll_s`` when idle), lets the units in flight finish, closes, and reopens only after that;
it also closes after ``idle_release_s`` without work. Waiting for another process's lock retries
with exponential backoff and jitter until ``busy_timeout_s``, then :class:`StoreBusyError`.

PostgreSQL. psycopg 3 with a ``psycopg_pool`` pool per process and URL; every session runs in UTC.
A pool that cannot hand out a connection within ``busy_timeout_s`` raises :class:`StoreBusyError`.
Rules that must hold across hosts take transaction-scoped advisory locks (:meth:`Connection.lock`)
and are backed by constraints (see ``migrations``).
"""

from __future__ import annotations

import atexit
import functools
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import duckdb
import numpy as np
import pandas as pd
import psycopg
import psycopg_pool

from skinlesion.errors import StoreBusyError, StoreError

Dialect = Literal["duckdb", "postgresql"]
_DUCKDB_PREFIX = "duckdb://"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_LOCK_CONFLICT = "Could not set lock on file"
#: a waiting marker older than this is left by a process that died; it is removed and ignored
_STALE_MARKER_S = 120.0


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: DuckDB with its file ``path``, or PostgreSQL with its ``dsn``."""

    dialect: Dialect
    path: Path | None = None
    dsn: str | None = None

    def __str__(self) -> str:
        return f"{_DUCKDB_PREFIX}{self.path}" if self.dialect == "duckdb" else _redacted(self.dsn or "")


def _redacted(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for messages and logs)."""
    head, sep, tail = dsn.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return dsn
    scheme, _, user_password = head.partition("//")
    user = user_password.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"


def parse_store_url(value: str | Path) -> StoreURL:
    """``duckdb:///PATH``, a bare path (DuckDB), or ``postgresql://USER@HOST:PORT/DB``."""
    if isinstance(value, Path):
        return StoreURL("duckdb", path=value.expanduser().resolve())
    text = str(value).strip()
    if text.startswith(_POSTGRES_PREFIXES):
        return StoreURL("postgresql", dsn=text)
    if text.startswith(_DUCKDB_PREFIX):
        text = text[len(_DUCKDB_PREFIX):]
    elif "://" in text:
        raise StoreError(f"unknown store URL {_redacted(text)!r}: use duckdb:///PATH (one host) or "
                         "postgresql://USER@HOST:PORT/DB (several hosts) in SKINLESION_STORE_URL")
    if not text:
        raise StoreError("the store URL names no file: use duckdb:///PATH, e.g. "
                         "duckdb:///srv/skinlesion/data/skinlesion.duckdb")
    return StoreURL("duckdb", path=Path(text).expanduser().resolve())


@dataclass(frozen=True)
class Timing:
    """How long a unit of work waits for a busy store, and how DuckDB gives the file up."""

    busy_timeout_s: float = 10.0
    retry_base_s: float = 0.005
    retry_max_s: float = 0.05
    idle_release_s: float = 0.5
    poll_s: float = 0.01
    pool_size: int = 8


# --- the adapter every aggregate module writes against -----------------------------------------------------


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection(Protocol):
    """One unit of work's connection (see the module docstring)."""

    dialect: Dialect

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def first(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...

    def aggregate(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]: ...

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def script(self, sql: str) -> None: ...

    def stage(self, name: str, frame: pd.DataFrame, *, like: str) -> None: ...

    def insert(self, table: str, frame: pd.DataFrame) -> int: ...

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    key: str) -> int: ...

    def lock(self, name: str) -> None: ...


def _one_row(row: tuple[Any, ...] | None, sql: str) -> tuple[Any, ...]:
    if row is None:
        raise StoreError(f"an aggregate returned no row: {sql.strip()[:80]}")
    return row


#: batches up to this many rows are inserted with one multi-row VALUES (no temporary table)
_VALUES_ROWS = 500


class DuckDBConnection:
    """A cursor of the process's kept DuckDB connection."""

    dialect: Dialect = "duckdb"

    def __init__(self, cursor: duckdb.DuckDBPyConnection):
        self._cursor = cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cursor.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self._cursor.execute(sql, list(params)).fetchone()

    def first(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        """The first row as {column: value}, or None."""
        cursor = self._cursor.execute(sql, list(params))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    def aggregate(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The one row of an aggregate without GROUP BY."""
        return _one_row(self.one(sql, params), sql)

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self._cursor.execute(sql, list(params)).df()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one INSERT/UPDATE/DELETE; returns the rows it changed."""
        row = self._cursor.execute(sql, list(params)).fetchone()
        return int(row[0]) if row else 0

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(sql, [list(r) for r in rows])

    def script(self, sql: str) -> None:
        self._cursor.execute(sql)

    def stage(self, name: str, frame: pd.DataFrame, *, like: str) -> None:
        """Make ``frame`` readable as the relation ``name`` for this unit of work."""
        self._cursor.register(name, frame)

    def insert(self, table: str, frame: pd.DataFrame) -> int:
        """Insert the rows of ``frame`` into ``table``, skipping keys already stored; returns how
        many were inserted."""
        self.stage("incoming", frame, like=table)
        names = _quoted(frame.columns)
        return self.run(f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming "
                        "ON CONFLICT DO NOTHING")

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    key: str) -> int:
        """Insert the ``rows`` (Python values in ``columns`` order; a group commit's batch) whose
        ``key`` column is not stored yet; returns how many were inserted. The stored keys are looked
        up first and the rest go in as plain multi-row VALUES, which DuckDB runs several times
        faster than ``INSERT ... ON CONFLICT`` from a registered DataFrame (the store benchmark's
        1-row transaction, README). Safe without ON CONFLICT because a DuckDB file has one writer
        at a time and this process's writes take turns (see :meth:`lock`)."""
        at = list(columns).index(key)
        inserted = 0
        for start in range(0, len(rows), _VALUES_ROWS):
            chunk = rows[start:start + _VALUES_ROWS]
            stored = {r[0] for r in self.rows(
                f'SELECT "{key}" FROM {table} WHERE "{key}" IN ({", ".join("?" for _ in chunk)})',
                [r[at] for r in chunk])}
            new = [r for r in chunk if r[at] not in stored]
            if new:
                row = f"({', '.join('?' for _ in columns)})"
                self._cursor.execute(f"INSERT INTO {table} ({_quoted(columns)}) VALUES "
                                     f"{', '.join(row for _ in new)}", [v for r in new for v in r])
                inserted += len(new)
        return inserted

    def lock(self, name: str) -> None:
        """Nothing to do: a DuckDB file has one writer at a time, and this process's writes take
        turns on its kept connection."""


#: PostgreSQL type oids whose columns come back as floats, integers, booleans, UTC times
_PG_FLOATS = {700, 701, 1700}
_PG_INTS = {20, 21, 23}
_PG_TIMESTAMPTZ = 1184


class PostgresConnection:
    """A pooled psycopg connection inside one transaction."""

    dialect: Dialect = "postgresql"

    def __init__(self, connection: psycopg.Connection[Any]):
        self._connection = connection

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        return self._connection.execute(_pyformat(sql), list(params), prepare=False)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self._execute(sql, params).fetchone()

    def first(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        cursor = self._execute(sql, params)
        row = cursor.fetchone()
        return None if row is None else dict(zip([d.name for d in cursor.description or []], row,
                                                 strict=True))

    def aggregate(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        return _one_row(self.one(sql, params), sql)

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cursor = self._execute(sql, params)
        description = cursor.description or []
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=[d.name for d in description])
        for column in description:
            values = frame[column.name]
            if column.type_code in _PG_FLOATS:
                frame[column.name] = pd.to_numeric(values, errors="coerce").astype(float)
            elif column.type_code in _PG_INTS:
                frame[column.name] = values.astype(float if values.isna().any() else "int64")
            elif column.type_code == _PG_TIMESTAMPTZ:
                frame[column.name] = pd.to_datetime(values, utc=True)
        return frame

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return max(self._execute(sql, params).rowcount, 0)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection.cursor() as cursor:
            cursor.executemany(_pyformat(sql), [list(r) for r in rows])

    def script(self, sql: str) -> None:
        self._connection.execute(sql.encode())

    def stage(self, name: str, frame: pd.DataFrame, *, like: str) -> None:
        """Copy ``frame`` into a temporary table ``name`` shaped like the table ``like`` (dropped
        at commit), with COPY: a million rows never go through one INSERT each."""
        self._connection.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        self._connection.execute(f"CREATE TEMP TABLE {name} (LIKE {like} INCLUDING DEFAULTS) "
                                 "ON COMMIT DROP")
        with self._connection.cursor() as cursor, \
                cursor.copy(f"COPY {name} ({_quoted(frame.columns)}) FROM STDIN") as copy:
            for row in _python_rows(frame):
                copy.write_row(row)

    def insert(self, table: str, frame: pd.DataFrame) -> int:
        """As DuckDB's: a small batch (group commit) as one multi-row INSERT, a large one (bulk
        load, copy) through COPY into a temporary table."""
        names = _quoted(frame.columns)
        if len(frame) > _VALUES_ROWS:
            self.stage("incoming", frame, like=table)
            return self.run(f"INSERT INTO {table} ({names}) SELECT {names} FROM incoming "
                            "ON CONFLICT DO NOTHING")
        return self._insert_values(table, list(frame.columns), list(_python_rows(frame)))

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                    key: str) -> int:
        """As DuckDB's, with one multi-row INSERT ... ON CONFLICT DO NOTHING per
        :data:`_VALUES_ROWS` rows (cheap here, and the only safe way with several writers; ``key``
        is not needed)."""
        return self._insert_values(table, columns, rows)

    def _insert_values(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        inserted = 0
        row = f"({', '.join('%s' for _ in columns)})"
        for start in range(0, len(rows), _VALUES_ROWS):
            chunk = rows[start:start + _VALUES_ROWS]
            cursor = self._connection.execute(
                f"INSERT INTO {table} ({_quoted(columns)}) VALUES {', '.join(row for _ in chunk)} "
                "ON CONFLICT DO NOTHING", [v for r in chunk for v in r])
            inserted += max(cursor.rowcount, 0)
        return inserted

    def lock(self, name: str) -> None:
        """A transaction-scoped advisory lock on ``name``: one holder across every host."""
        self._connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _python_rows(frame: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """The rows of ``frame`` as what psycopg adapts: Python scalars, NaN/NaT as None, arrays as lists
    (converted a column at a time)."""
    plain = frame.astype(object).where(frame.notna(), None)
    for column in plain.columns:
        if frame[column].dtype == object:
            plain[column] = [v.tolist() if isinstance(v, np.ndarray | np.generic) else v
                             for v in plain[column]]
    return plain.itertuples(index=False, name=None)


# --- DuckDB: one kept connection per process and file -------------------------------------------------------


class _KeptFile:
    """The process's connection to one DuckDB file, shared by its threads (see the module docstring)."""

    def __init__(self, path: Path, timing: Timing):
        self.path = path
        self.timing = timing
        self.waiting_dir = path.with_name(path.name + ".waiting")
        self._marker_prefix = f"{os.getpid()}-"
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._read_only = True
        self._users = 0
        self._draining = False
        self._opening = False
        self._keeper: threading.Thread | None = None
        self._last_used = 0.0
        self.opens = 0

    # entering and leaving a unit of work

    @contextmanager
    def unit(self, *, write: bool, deadline: float) -> Iterator[duckdb.DuckDBPyConnection]:
        if write:
            if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise StoreBusyError(f"the store {self.path} stayed busy in this process; retry later")
        try:
            con = self._enter(write=write, deadline=deadline)
            try:
                cursor = con.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
            finally:
                self._leave()
        finally:
            if write:
                self._write_lock.release()

    def _enter(self, *, write: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        with self._cond:
            while True:
                if self._con is not None and not self._draining and (write and self._read_only
                                                                     or self._others_waiting()):
                    self._draining = True  # let the units in flight finish, then give the file up
                if self._draining and self._users == 0:
                    self._close()
                if self._opening or self._draining:
                    if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                        raise StoreBusyError(f"the store {self.path} stayed busy in this process; "
                                             "retry later")
                    continue
                if self._con is None:
                    self._open(read_only=not write, deadline=deadline)
                self._users += 1
                return self._con

    def _leave(self) -> None:
        with self._cond:
            self._users -= 1
            self._last_used = time.monotonic()
            self._cond.notify_all()

    # opening, giving up, and the janitor that gives the file up when idle or wanted

    def _open(self, *, read_only: bool, deadline: float) -> None:
        """Connect (the caller holds ``_cond``), retrying lock conflicts until ``deadline``."""
        attempt, marker = 0, None
        self._opening = True
        try:
            while True:
                try:
                    con = duckdb.connect(str(self.path), read_only=read_only)
                    break
                except duckdb.IOException as err:
                    if _LOCK_CONFLICT not in str(err):
                        raise StoreError(f"cannot open the store {self.path}: {err}; check the path "
                                         "(SKINLESION_STORE_URL) and that it is a DuckDB file") from err
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StoreBusyError(
                            f"the store {self.path} stayed locked past the busy timeout ({err}); "
                            "retry later, or stop the process that holds it") from err
                    marker = marker or self._mark_waiting()
                    step = min(self.timing.retry_max_s, self.timing.retry_base_s * 2 ** attempt)
                    self._cond.wait(min(remaining, step / 2 + random.uniform(0.0, step / 2)))
                    attempt += 1
        finally:
            self._opening = False
            self._cond.notify_all()
            if marker is not None:
                marker.unlink(missing_ok=True)
        con.execute("SET GLOBAL TimeZone = 'UTC'")  # every cursor of this database instance
        self._con, self._read_only, self._draining = con, read_only, False
        self._last_used = time.monotonic()
        self.opens += 1
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._janitor, name=f"duckdb-keeper-{self.path.name}",
                                            daemon=True)
            self._keeper.start()

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
        self._con, self._draining = None, False
        self._cond.notify_all()

    def release(self) -> None:
        """Give the file up as soon as the units in flight finish (tests, shutdown)."""
        with self._cond:
            while self._users:
                self._cond.wait()
            self._close()

    def _janitor(self) -> None:
        """Close the connection when idle or wanted by another process. One per file and process,
        living as long as the process: a thread that exits after closing a DuckDB connection makes
        the interpreter abort at exit."""
        with self._cond:
            while True:
                if self._con is None:
                    self._cond.wait()
                    continue
                if self._users == 0 and (self._others_waiting() or time.monotonic() - self._last_used
                                         >= self.timing.idle_release_s):
                    self._close()
                    continue
                self._cond.wait(self.timing.poll_s)

    def _mark_waiting(self) -> Path:
        self.waiting_dir.mkdir(exist_ok=True)
        marker = self.waiting_dir / f"{self._marker_prefix}{threading.get_ident()}"
        marker.touch()
        return marker

    def _others_waiting(self) -> bool:
        """Whether another process left a marker asking for the file (stale ones are removed)."""
        try:
            names = os.listdir(self.waiting_dir)
        except FileNotFoundError:
            return False
        now = time.time()
        for name in names:
            if name.startswith(self._marker_prefix):
                continue
            marker = self.waiting_dir / name
            try:
                if now - marker.stat().st_mtime < _STALE_MARKER_S:
                    return True
                marker.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
        return False


_KEPT: dict[tuple[int, Path], _KeptFile] = {}
_KEPT_GUARD = threading.Lock()


def _kept_file(path: Path, timing: Timing) -> _KeptFile:
    """The process's kept connection to ``path`` (made on first use; a forked child makes its own).

    The first one registers :func:`release_all` to run at exit: connections are closed by the main
    thread before the interpreter stops its daemon threads (a janitor stopped inside DuckDB while it
    closes aborts the process)."""
    with _KEPT_GUARD:
        if not _KEPT:
            atexit.register(release_all)
        return _KEPT.setdefault((os.getpid(), path), _KeptFile(path, timing))


def release_all() -> None:
    """Close every kept DuckDB connection of this process and every PostgreSQL pool."""
    with _KEPT_GUARD:
        kept = [f for (pid, _), f in _KEPT.items() if pid == os.getpid()]
        pools = [b for (pid, _, _), b in _POOLS.items() if pid == os.getpid()]
    for file in kept:
        file.release()
    for backend in pools:
        backend.release()


@dataclass(eq=False)
class DuckDBBackend:
    """The embedded backend: units of work on the process's kept connection to ``path``."""

    path: Path
    timing: Timing
    dialect: ClassVar[Dialect] = "duckdb"

    def __post_init__(self) -> None:
        self._file = _kept_file(self.path, self.timing)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        deadline = time.monotonic() + self.timing.busy_timeout_s
        with self._file.unit(write=False, deadline=deadline) as cursor:
            yield DuckDBConnection(cursor)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction, committed when the block succeeds, rolled back when it raises. A file
        that cannot be written (read-only mount, full disk, lost permissions) is a StoreError
        saying so."""
        deadline = time.monotonic() + self.timing.busy_timeout_s
        try:
            with self._file.unit(write=True, deadline=deadline) as cursor:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    yield DuckDBConnection(cursor)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
        except (duckdb.IOException, duckdb.PermissionException, duckdb.FatalException) as err:
            raise StoreError(f"the store {self.path} cannot write ({err}); check the disk's free "
                             "space, that it is not mounted read-only, and the file's permissions"
                             ) from err

    def exists(self) -> bool:
        return self.path.exists()

    def prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def release(self) -> None:
        self._file.release()

    def describe(self) -> str:
        return str(self.path)


# --- PostgreSQL: a pool per process and URL -----------------------------------------------------------------


def _utc_session(connection: psycopg.Connection[Any]) -> None:
    connection.execute("SET TimeZone = 'UTC'")
    connection.commit()


@dataclass(eq=False)
class PostgresBackend:
    """The several-hosts backend: units of work on connections of a psycopg pool (connected on
    first use)."""

    dsn: str
    timing: Timing
    dialect: ClassVar[Dialect] = "postgresql"

    def __post_init__(self) -> None:
        self.pool = self._new_pool()
        self._opened = False
        self._guard = threading.Lock()

    def _new_pool(self) -> psycopg_pool.ConnectionPool:
        """A pool not yet connected (it connects on first use)."""
        return psycopg_pool.ConnectionPool(
            self.dsn, min_size=1, max_size=self.timing.pool_size, configure=_utc_session,
            open=False, timeout=self.timing.busy_timeout_s, name="skinlesion-store")

    def _pool(self) -> psycopg_pool.ConnectionPool:
        with self._guard:
            if not self._opened:
                try:
                    self.pool.open(wait=True, timeout=self.timing.busy_timeout_s)
                except psycopg_pool.PoolTimeout as err:
                    raise StoreError(f"cannot connect to the store {_redacted(self.dsn)}: {err}; check "
                                     "SKINLESION_STORE_URL and that PostgreSQL is running") from err
                self._opened = True
        return self.pool

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One transaction on a pooled connection, committed (durably: synchronous_commit) when
        the block succeeds and rolled back when it raises; reads and writes alike."""
        try:
            with self._pool().connection(timeout=self.timing.busy_timeout_s) as connection:
                with connection.transaction():
                    yield PostgresConnection(connection)
        except psycopg_pool.PoolTimeout as err:
            raise StoreBusyError(f"no connection to {_redacted(self.dsn)} came free within "
                                 f"{self.timing.busy_timeout_s:g} s ({err}); retry later") from err
        except psycopg.OperationalError as err:
            raise StoreError(f"the store {_redacted(self.dsn)} failed: {err}") from err

    write = read

    def exists(self) -> bool:
        return True

    def prepare(self) -> None:
        """Nothing to create: the database is made by its administrator."""

    def release(self) -> None:
        with self._guard:
            if self._opened:
                self.pool.close()
                self._opened = False
                self.pool = self._new_pool()

    def describe(self) -> str:
        return _redacted(self.dsn)


Backend = DuckDBBackend | PostgresBackend
_POOLS: dict[tuple[int, str, Timing], PostgresBackend] = {}


def open_backend(url: StoreURL, timing: Timing) -> Backend:
    """The backend of ``url``; PostgreSQL pools are shared by every Store of a process on one URL."""
    if url.dialect == "duckdb":
        assert url.path is not None
        return DuckDBBackend(url.path, timing)
    assert url.dsn is not None
    with _KEPT_GUARD:
        return _POOLS.setdefault((os.getpid(), url.dsn, timing), PostgresBackend(url.dsn, timing))
