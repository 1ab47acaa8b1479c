"""The store: the ONLY module that speaks SQL. One DuckDB file shared by the API, the dashboard and CLI jobs.

What it holds: every prediction the service answered (``predictions``), ground truth arriving later
(``labels``), the serving route with its history (``serving_route``), an append-only ``audit_log`` of
operator actions and the hashes of API keys (``api_keys``). The schema is created and migrated by
:data:`MIGRATIONS` (applied once each, in order, recorded in ``schema_version``).

Concurrency. DuckDB lets one process write a file, or many processes read it, never both. So every
operation opens a connection for its unit of work only and closes it: readers open read-only (many
at once), writers read-write (one at a time). A conflict surfaces as ``duckdb.IOException`` "Could not
set lock on file ... Conflicting lock is held in ... (PID n)" when connecting; it is retried with
exponential backoff and jitter until ``busy_timeout_s`` has passed, then :class:`StoreBusyError`.
Inside one process DuckDB refuses a read-only and a read-write connection to the same file at once,
so connections to one path are also serialised by a per-process lock. Writes are idempotent
(predictions on ``request_id``, labels and audit rows on their client-made ids): a caller that retries
after an error never duplicates a row.

All timestamps are ``TIMESTAMPTZ`` in UTC (every connection sets ``TimeZone = 'UTC'``); records take
aware datetimes (naive ones are taken to be UTC) and DataFrames come back with ``datetime64[.., UTC]``.
Query methods return pandas DataFrames; aggregations for monitoring belong here, as SQL, next to
:meth:`Store.count_predictions`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skinlesion.errors import DataError, StoreBusyError, StoreError
from skinlesion.schema import CLASSES, MISSING, class_index, validate_age, validate_sex, validate_site

Source = Literal["api", "dashboard", "batch", "demo"]
ModelRole = Literal["active", "fallback", "challenger", "shadow"]
Decision = Literal["refer", "no referral", "uncertain"]
SOURCES: tuple[str, ...] = get_args(Source)
MODEL_ROLES: tuple[str, ...] = get_args(ModelRole)
DECISIONS: tuple[str, ...] = get_args(Decision)

#: Columns written by ``skinlesion.data.images.image_stats`` and stored with every prediction.
IMAGE_STAT_COLUMNS: tuple[str, ...] = (
    "width", "height", "brightness", "contrast", "saturation", "mean_r", "mean_g", "mean_b", "sharpness")
PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
PREDICTION_COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "source", "model_version", "model_role", "age_approx", "sex",
    "anatom_site_general", "image_sha256", *IMAGE_STAT_COLUMNS, *PROBABILITY_COLUMNS, "p_malignant",
    "predicted_class", "decision", "decision_reason", "threshold", "latency_ms", "device", "embedding",
    "image_path", "simulated", "returned")
LABEL_COLUMNS: tuple[str, ...] = (
    "id", "request_id", "image_sha256", "diagnosis", "source", "labelled_by", "ts", "simulated")

#: The model version served before anyone sets a route: the shipped reference version.
DEFAULT_ACTIVE_VERSION = "reference"
API_KEY_PREFIX = "skl_"
_PROBABILITY_SUM_TOLERANCE = 1e-3
_LOCK_CONFLICT = "Could not set lock on file"


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def _canonical_uuid(value: object, field: str) -> str:
    """``value`` as a canonical lower-case UUID string; a DataError naming ``field`` otherwise."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise DataError(f"must be a UUID such as {_new_id()}, got {value!r}", field=field) from None


def _sha256_hex(value: str, field: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise DataError(f"must be a sha256 hex digest (64 hex characters), got {value!r}", field=field)
    return text


def _non_blank(value: str, field: str) -> str:
    if not value.strip():
        raise DataError("must not be empty", field=field)
    return value.strip()


# --- records: the pure-Python types that go in and come out -------------------------------------------


class PredictionRecord(BaseModel):
    """One answer of a model: a row of ``predictions``. ``probabilities`` is keyed by CLASSES."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    request_id: str = Field(default_factory=_new_id)
    ts: datetime = Field(default_factory=_now)
    source: Source
    model_version: str
    model_role: ModelRole = "active"
    age_approx: float | None = None
    sex: str = MISSING
    anatom_site_general: str = MISSING
    image_sha256: str
    width: float
    height: float
    brightness: float
    contrast: float
    saturation: float
    mean_r: float
    mean_g: float
    mean_b: float
    sharpness: float
    probabilities: dict[str, float]
    p_malignant: float = Field(ge=0.0, le=1.0)
    predicted_class: str
    decision: Decision
    decision_reason: str = ""
    threshold: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(ge=0.0)
    device: str
    embedding: list[float] | None = None
    image_path: str | None = None
    simulated: bool = False
    returned: bool = True

    @field_validator("request_id", mode="before")
    @classmethod
    def _request_id(cls, value: object) -> str:
        return _canonical_uuid(value, "request_id")

    @field_validator("ts")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("model_version", "device")
    @classmethod
    def _required_text(cls, value: str, info: Any) -> str:
        return _non_blank(value, info.field_name)

    @field_validator("age_approx", mode="before")
    @classmethod
    def _age(cls, value: object) -> float | None:
        return validate_age(value)

    @field_validator("sex", mode="before")
    @classmethod
    def _sex(cls, value: object) -> str:
        return validate_sex(value)

    @field_validator("anatom_site_general", mode="before")
    @classmethod
    def _site(cls, value: object) -> str:
        return validate_site(value)

    @field_validator("image_sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        return _sha256_hex(value, "image_sha256")

    @field_validator("probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(CLASSES):
            raise DataError(f"needs exactly the classes {', '.join(CLASSES)}, got {sorted(value)}",
                            field="probabilities")
        if any(not 0.0 <= p <= 1.0 for p in value.values()):
            raise DataError(f"every probability must lie in [0, 1], got {value}", field="probabilities")
        total = sum(value.values())
        if abs(total - 1.0) > _PROBABILITY_SUM_TOLERANCE:
            raise DataError(f"probabilities must sum to 1 (calibrated softmax), got {total:.4f}",
                            field="probabilities")
        return {c: float(value[c]) for c in CLASSES}

    @field_validator("predicted_class")
    @classmethod
    def _predicted_class(cls, value: str) -> str:
        class_index(value)
        return value

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, value: list[float] | None) -> list[float] | None:
        # Stored as FLOAT[]: keep the float32 values, so a record equals what reading it back gives.
        return None if value is None else np.asarray(value, dtype=np.float32).tolist()

    @model_validator(mode="after")
    def _shadow_not_returned(self) -> PredictionRecord:
        if self.model_role == "shadow" and self.returned:
            raise DataError("a shadow answer is never returned to the caller: set returned=False",
                            field="returned")
        return self

    def to_row(self) -> dict[str, Any]:
        """The flat ``predictions`` row (probabilities as ``p_<CLASS>`` columns)."""
        row = self.model_dump(exclude={"probabilities"})
        row.update({f"p_{c}": p for c, p in self.probabilities.items()})
        return {col: row[col] for col in PREDICTION_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PredictionRecord:
        """Inverse of :meth:`to_row`; extra columns (e.g. from a join) are ignored."""
        fields = {col: row[col] for col in PREDICTION_COLUMNS if col not in PROBABILITY_COLUMNS}
        return cls(**fields, probabilities={c: row[f"p_{c}"] for c in CLASSES})


class LabelRecord(BaseModel):
    """Ground truth for a prediction (by ``request_id``) or for an image (by ``image_sha256``).

    ``source`` says where the diagnosis comes from, e.g. ``histopathology``, ``review``, ``import``.
    The latest label (by ``ts``, then by arrival) of a request or image wins.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    request_id: str | None = None
    image_sha256: str | None = None
    diagnosis: str
    source: str
    labelled_by: str
    ts: datetime = Field(default_factory=_now)
    simulated: bool = False

    @field_validator("request_id", mode="before")
    @classmethod
    def _request_id(cls, value: object) -> str | None:
        return None if value is None else _canonical_uuid(value, "request_id")

    @field_validator("image_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        return None if value is None else _sha256_hex(value, "image_sha256")

    @field_validator("diagnosis")
    @classmethod
    def _diagnosis(cls, value: str) -> str:
        class_index(value)
        return value

    @field_validator("source", "labelled_by")
    @classmethod
    def _required_text(cls, value: str, info: Any) -> str:
        return _non_blank(value, info.field_name)

    @field_validator("ts")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _has_target(self) -> LabelRecord:
        if self.request_id is None and self.image_sha256 is None:
            raise DataError("a label needs the request_id of the prediction or the image_sha256 of "
                            "the image it labels", field="request_id")
        return self


class ServingRoute(BaseModel):
    """Which model versions answer: the active one, the fallback (and whether it is engaged), an
    optional challenger taking ``challenger_share`` of the traffic, and an optional shadow that
    answers every request without its answer being returned."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    active_version: str = DEFAULT_ACTIVE_VERSION
    fallback_version: str | None = None
    fallback_engaged: bool = False
    restricted_to_clear_cases: bool = False
    challenger_version: str | None = None
    challenger_share: float = Field(0.0, ge=0.0, le=1.0)
    shadow_version: str | None = None

    @field_validator("active_version")
    @classmethod
    def _active(cls, value: str) -> str:
        return _non_blank(value, "active_version")

    @model_validator(mode="after")
    def _consistent(self) -> ServingRoute:
        if self.fallback_engaged and not self.fallback_version:
            raise DataError("engaging the fallback needs a fallback_version", field="fallback_version")
        if self.challenger_share > 0 and not self.challenger_version:
            raise DataError("a challenger share above 0 needs a challenger_version",
                            field="challenger_version")
        for field in ("challenger_version", "shadow_version"):
            if getattr(self, field) == self.active_version:
                raise DataError(f"must differ from the active version {self.active_version!r}",
                                field=field)
        return self


class AuditEntry(BaseModel):
    """One operator action: who (``actor`` in ``role``), when, what (``action`` on ``target``), why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    ts: datetime = Field(default_factory=_now)
    actor: str
    role: str
    action: str
    target: str | None = None
    reason: str = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("actor", "role", "action")
    @classmethod
    def _required_text(cls, value: str, info: Any) -> str:
        return _non_blank(value, info.field_name)

    @field_validator("ts")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)


# --- schema ---------------------------------------------------------------------------------------------

_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL,
    description TEXT NOT NULL
)"""

_INITIAL_SCHEMA = """
CREATE TABLE predictions (
    request_id TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_role TEXT NOT NULL,
    age_approx DOUBLE,
    sex TEXT NOT NULL,
    anatom_site_general TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    width DOUBLE, height DOUBLE, brightness DOUBLE, contrast DOUBLE, saturation DOUBLE,
    mean_r DOUBLE, mean_g DOUBLE, mean_b DOUBLE, sharpness DOUBLE,
    p_MEL DOUBLE NOT NULL, p_NV DOUBLE NOT NULL, p_BCC DOUBLE NOT NULL, p_AK DOUBLE NOT NULL,
    p_BKL DOUBLE NOT NULL, p_DF DOUBLE NOT NULL, p_VASC DOUBLE NOT NULL, p_SCC DOUBLE NOT NULL,
    p_malignant DOUBLE NOT NULL,
    predicted_class TEXT NOT NULL,
    decision TEXT NOT NULL,
    decision_reason TEXT NOT NULL DEFAULT '',
    threshold DOUBLE NOT NULL,
    latency_ms DOUBLE NOT NULL,
    device TEXT NOT NULL,
    embedding FLOAT[],
    image_path TEXT,
    simulated BOOLEAN NOT NULL DEFAULT false,
    returned BOOLEAN NOT NULL DEFAULT true
);
CREATE INDEX predictions_ts ON predictions (ts);
CREATE INDEX predictions_image ON predictions (image_sha256);
CREATE INDEX predictions_model_version ON predictions (model_version);

CREATE SEQUENCE labels_seq;
CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('labels_seq'),
    request_id TEXT,
    image_sha256 TEXT,
    diagnosis TEXT NOT NULL,
    source TEXT NOT NULL,
    labelled_by TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    simulated BOOLEAN NOT NULL DEFAULT false,
    CHECK (request_id IS NOT NULL OR image_sha256 IS NOT NULL)
);
CREATE INDEX labels_request ON labels (request_id);
CREATE INDEX labels_image ON labels (image_sha256);

CREATE SEQUENCE audit_seq;
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('audit_seq'),
    ts TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    reason TEXT NOT NULL DEFAULT '',
    details JSON
);
CREATE INDEX audit_ts ON audit_log (ts);

CREATE SEQUENCE serving_route_seq;
CREATE TABLE serving_route (
    id BIGINT PRIMARY KEY DEFAULT nextval('serving_route_seq'),
    ts TIMESTAMPTZ NOT NULL,
    active_version TEXT NOT NULL,
    fallback_version TEXT,
    fallback_engaged BOOLEAN NOT NULL,
    restricted_to_clear_cases BOOLEAN NOT NULL,
    challenger_version TEXT,
    challenger_share DOUBLE NOT NULL,
    shadow_version TEXT,
    audit_id TEXT NOT NULL
);

CREATE TABLE api_keys (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    created TIMESTAMPTZ NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false,
    revoked_at TIMESTAMPTZ
);
"""

#: Ordered schema migrations ``(description, SQL)``; migration i brings the schema to version i + 1.
#: Append only: never edit one that has shipped.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("initial schema: predictions, labels, audit_log, serving_route, api_keys", _INITIAL_SCHEMA),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = 'schema_version'").fetchone()
    if not exists or not exists[0]:
        return 0
    (version,) = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(version)


# --- connections ------------------------------------------------------------------------------------------

# DuckDB keeps one database instance per file and process and refuses a second connection with another
# configuration (read-only vs read-write), so the connections of one process to one file take turns.
_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path, threading.Lock())


def _is_lock_conflict(err: duckdb.Error) -> bool:
    return isinstance(err, duckdb.IOException) and _LOCK_CONFLICT in str(err)


def _where(start: datetime | None, end: datetime | None, filters: Mapping[str, object],
           alias: str) -> tuple[str, list[object]]:
    """A parameterised ``WHERE`` over ``[start, end)`` and equality filters (None = no filter).

    Filter keys are column names fixed by the calling method, never user input."""
    clauses: list[str] = []
    params: list[object] = []
    if start is not None:
        clauses.append(f"{alias}.ts >= ?")
        params.append(_utc(start))
    if end is not None:
        clauses.append(f"{alias}.ts < ?")
        params.append(_utc(end))
    for column, value in filters.items():
        if value is not None:
            clauses.append(f"{alias}.{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _limit(limit: int | None) -> str:
    if limit is None:
        return ""
    if limit < 0:
        raise DataError(f"must be 0 or more, got {limit}", field="limit")
    return f" LIMIT {int(limit)}"


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """The DuckDB store at ``path`` (created and migrated on construction).

    Cheap to create and safe to share between threads; it holds no connection between calls.
    ``busy_timeout_s`` bounds how long one operation waits for other processes' locks; retries back
    off exponentially from ``retry_base_s`` up to ``retry_max_s`` per wait, with jitter so competing
    processes do not retry in step.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0, retry_base_s: float = 0.005,
                 retry_max_s: float = 0.2):
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout_s = busy_timeout_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- units of work ---

    def _open(self, *, read_only: bool, deadline: float) -> duckdb.DuckDBPyConnection:
        """Connect, retrying lock conflicts with exponential backoff and jitter until ``deadline``."""
        attempt = 0
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as err:
                if not _is_lock_conflict(err):
                    raise StoreError(f"cannot open the store {self.path}: {err}; check the path "
                                     "(SKINLESION_DB_PATH) and that it is a DuckDB file") from err
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreBusyError(
                        f"the store {self.path} stayed locked for {self.busy_timeout_s:g} s ({err}); "
                        "retry later, or stop the process that holds it") from err
                step = min(self.retry_max_s, self.retry_base_s * 2 ** attempt)
                time.sleep(min(remaining, step / 2 + random.uniform(0.0, step / 2)))
                attempt += 1

    @contextmanager
    def _connection(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work; with ``write`` one transaction, committed on success.

        On an exception the connection is closed uncommitted, which rolls the transaction back."""
        deadline = time.monotonic() + self.busy_timeout_s
        lock = _path_lock(self.path)
        if not lock.acquire(timeout=self.busy_timeout_s):
            raise StoreBusyError(f"the store {self.path} stayed busy in this process for "
                                 f"{self.busy_timeout_s:g} s; retry later")
        try:
            con = self._open(read_only=not write, deadline=deadline)
            try:
                con.execute("SET TimeZone = 'UTC'")
                if write:
                    con.execute("BEGIN TRANSACTION")
                yield con
                if write:
                    con.execute("COMMIT")
            finally:
                con.close()
        finally:
            lock.release()

    def migrate(self) -> int:
        """Apply the pending :data:`MIGRATIONS` in one transaction; returns the schema version.

        Idempotent: a store already at :data:`SCHEMA_VERSION` is only read (no write lock taken)."""
        if self.path.exists():
            with self._connection(write=False) as con:
                current = _schema_version(con)
            self._check_not_newer(current)
            if current == SCHEMA_VERSION:
                return current
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection(write=True) as con:
            con.execute(_SCHEMA_VERSION_DDL)
            current = _schema_version(con)
            self._check_not_newer(current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                description, sql = MIGRATIONS[version - 1]
                con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, _now(), description])
        return SCHEMA_VERSION

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store {self.path} has schema version {version}, newer than this "
                             f"code knows ({SCHEMA_VERSION}); upgrade skinlesion")

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        with self._connection(write=False) as con:
            return _schema_version(con)

    # --- predictions ---

    def log_predictions(self, rows: Iterable[PredictionRecord]) -> int:
        """Store ``rows`` in one transaction; returns how many were new.

        Idempotent on ``request_id``: a row whose id is already stored (a retried call, or a repeat
        within ``rows``) is skipped, the first write wins."""
        unique: dict[str, PredictionRecord] = {}
        for row in rows:
            unique.setdefault(row.request_id, row)
        if not unique:
            return 0
        frame = pd.DataFrame([r.to_row() for r in unique.values()], columns=list(PREDICTION_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["age_approx"] = frame["age_approx"].astype(float)
        with self._connection(write=True) as con:
            con.register("incoming", frame)
            (inserted,) = con.execute("INSERT INTO predictions BY NAME SELECT * FROM incoming "
                                      "ON CONFLICT DO NOTHING").fetchone()
        return int(inserted)

    def get_prediction(self, request_id: str) -> PredictionRecord | None:
        """The prediction logged under ``request_id``, or None."""
        rid = _canonical_uuid(request_id, "request_id")
        with self._connection(write=False) as con:
            cursor = con.execute("SELECT * FROM predictions WHERE request_id = ?", [rid])
            row = cursor.fetchone()
            names = [column[0] for column in cursor.description]
        return None if row is None else PredictionRecord.from_row(dict(zip(names, row, strict=True)))

    def query_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                          model_version: str | None = None, source: str | None = None,
                          model_role: str | None = None, simulated: bool | None = None,
                          returned: bool | None = None, limit: int | None = None,
                          newest_first: bool = False, include_embedding: bool = False) -> pd.DataFrame:
        """Predictions with ``start <= ts < end`` (either bound optional) matching the filters, one
        row per prediction with :data:`PREDICTION_COLUMNS` (``embedding`` only when asked)."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "p")
        columns = "p.*" if include_embedding else "p.* EXCLUDE (embedding)"
        order = "DESC" if newest_first else "ASC"
        sql = (f"SELECT {columns} FROM predictions p{where} "
               f"ORDER BY p.ts {order}, p.request_id {order}{_limit(limit)}")
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

    def count_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                          model_version: str | None = None, source: str | None = None,
                          model_role: str | None = None, simulated: bool | None = None,
                          returned: bool | None = None) -> int:
        """How many predictions match (same filters as :meth:`query_predictions`)."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "p")
        with self._connection(write=False) as con:
            (count,) = con.execute(f"SELECT count(*) FROM predictions p{where}", params).fetchone()
        return int(count)

    # --- labels ---

    def add_labels(self, labels: Iterable[LabelRecord]) -> int:
        """Store ``labels`` in one transaction; returns how many match a logged prediction.

        Every label is kept, matched or not (its prediction may be logged later, or the image seen
        again). A label given by request id also records that prediction's image hash, so it labels
        the image wherever it was answered (e.g. by the shadow model). Idempotent on label ``id``."""
        unique: dict[str, LabelRecord] = {}
        for label in labels:
            unique.setdefault(label.id, label)
        if not unique:
            return 0
        frame = pd.DataFrame([lab.model_dump() for lab in unique.values()], columns=list(LABEL_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        with self._connection(write=True) as con:
            con.register("incoming", frame)
            con.execute("""
                INSERT INTO labels BY NAME
                SELECT i.id, i.request_id, coalesce(i.image_sha256, p.image_sha256) AS image_sha256,
                       i.diagnosis, i.source, i.labelled_by, i.ts, i.simulated
                FROM incoming i LEFT JOIN predictions p ON p.request_id = i.request_id
                ON CONFLICT DO NOTHING""")
            (matched,) = con.execute("""
                SELECT count(*) FROM incoming i
                WHERE i.request_id IN (SELECT request_id FROM predictions)
                   OR i.image_sha256 IN (SELECT image_sha256 FROM predictions)""").fetchone()
        return int(matched)

    def labelled_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                             model_version: str | None = None, source: str | None = None,
                             model_role: str | None = None, simulated: bool | None = None,
                             returned: bool | None = None,
                             include_embedding: bool = False) -> pd.DataFrame:
        """Predictions (filtered as in :meth:`query_predictions`) that have a label, with it.

        A prediction's label is the latest of those given for its request id or its image hash.
        Added columns: ``diagnosis`` (the ground truth), ``label_source``, ``labelled_by``,
        ``label_ts``, ``label_id``, ``label_simulated``."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "predictions")
        columns = "p.*" if include_embedding else "p.* EXCLUDE (embedding)"
        sql = f"""
            WITH p AS (SELECT * FROM predictions{where}),
            candidates AS (
                SELECT p.request_id AS prediction_id, l.* FROM p JOIN labels l ON l.request_id = p.request_id
                UNION ALL
                SELECT p.request_id, l.* FROM p JOIN labels l ON l.image_sha256 = p.image_sha256
            ),
            latest AS (
                SELECT * FROM candidates
                QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY ts DESC, seq DESC) = 1
            )
            SELECT {columns}, latest.diagnosis, latest.source AS label_source, latest.labelled_by,
                   latest.ts AS label_ts, latest.id AS label_id, latest.simulated AS label_simulated
            FROM p JOIN latest ON latest.prediction_id = p.request_id
            ORDER BY p.ts, p.request_id"""
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

    # --- serving route ---

    def get_route(self) -> ServingRoute:
        """The current serving route: the newest one set, or the default :class:`ServingRoute`."""
        with self._connection(write=False) as con:
            return _current_route(con)

    def set_route(self, route: ServingRoute, *, actor: str, role: str, reason: str) -> AuditEntry:
        """Make ``route`` current and audit it (with the previous route) in one transaction."""
        fields = tuple(ServingRoute.model_fields)
        with self._connection(write=True) as con:
            previous = _current_route(con)
            entry = AuditEntry(actor=actor, role=role, action="set_route", target=route.active_version,
                               reason=_non_blank(reason, "reason"),
                               details={"route": route.model_dump(), "previous": previous.model_dump()})
            values = route.model_dump()
            con.execute(f"INSERT INTO serving_route (ts, audit_id, {', '.join(fields)}) "
                        f"VALUES (?, ?, {', '.join('?' for _ in fields)})",
                        [entry.ts, entry.id, *(values[f] for f in fields)])
            _insert_audit(con, entry)
        return entry

    def route_history(self, limit: int | None = None) -> pd.DataFrame:
        """Every route set, newest first, with who set it and why."""
        with self._connection(write=False) as con:
            return con.execute(
                "SELECT r.* EXCLUDE (audit_id), a.actor, a.role, a.reason FROM serving_route r "
                f"JOIN audit_log a ON a.id = r.audit_id ORDER BY r.id DESC{_limit(limit)}").df()

    # --- audit log (append-only: there is deliberately no update or delete) ---

    def append_audit(self, actor: str, role: str, action: str, *, target: str | None = None,
                     reason: str = "", details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Record one operator action; returns the stored entry (with its id and time)."""
        entry = AuditEntry(actor=actor, role=role, action=action, target=target, reason=reason,
                           details=dict(details or {}))
        with self._connection(write=True) as con:
            _insert_audit(con, entry)
        return entry

    def query_audit(self, start: datetime | None = None, end: datetime | None = None, *,
                    actor: str | None = None, role: str | None = None, action: str | None = None,
                    target: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Audit entries, newest first; ``details`` comes back as dicts."""
        where, params = _where(start, end, dict(actor=actor, role=role, action=action, target=target),
                               "a")
        with self._connection(write=False) as con:
            frame = con.execute(f"SELECT a.* EXCLUDE (seq) FROM audit_log a{where} "
                                f"ORDER BY a.seq DESC{_limit(limit)}", params).df()
        frame["details"] = [json.loads(d) if isinstance(d, str) else {} for d in frame["details"]]
        return frame

    # --- API keys ---

    def create_api_key(self, name: str, *, actor: str = "system", role: str = "admin") -> str:
        """Create a key called ``name`` and return it; only its sha256 is stored, so show it once.

        Names are never reused (a revoked key keeps its name); the creation is audited."""
        name = _non_blank(name, "name")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._connection(write=True) as con:
            if con.execute("SELECT 1 FROM api_keys WHERE name = ?", [name]).fetchone():
                raise StoreError(f"an API key named {name!r} already exists (names are never reused, "
                                 "even after revocation); choose another name")
            con.execute("INSERT INTO api_keys (name, key_hash, created) VALUES (?, ?, ?)",
                        [name, _hash_key(key), _now()])
            _insert_audit(con, AuditEntry(actor=actor, role=role, action="create_api_key", target=name))
        return key

    def verify_api_key(self, key: str) -> str | None:
        """The name of the unrevoked key ``key``, or None."""
        with self._connection(write=False) as con:
            row = con.execute("SELECT name FROM api_keys WHERE key_hash = ? AND NOT revoked",
                              [_hash_key(key)]).fetchone()
        return None if row is None else str(row[0])

    def revoke_api_key(self, name: str, *, actor: str = "system", role: str = "admin",
                       reason: str = "") -> None:
        """Revoke the key ``name`` (audited); revoking a revoked key changes nothing."""
        with self._connection(write=True) as con:
            row = con.execute("SELECT revoked FROM api_keys WHERE name = ?", [name]).fetchone()
            if row is None:
                known = [n for (n,) in con.execute("SELECT name FROM api_keys ORDER BY name").fetchall()]
                raise StoreError(f"no API key named {name!r}; known: {', '.join(known) or 'none'}")
            if row[0]:
                return
            con.execute("UPDATE api_keys SET revoked = true, revoked_at = ? WHERE name = ?", [_now(), name])
            _insert_audit(con, AuditEntry(actor=actor, role=role, action="revoke_api_key", target=name,
                                          reason=reason))

    def list_api_keys(self) -> pd.DataFrame:
        """Key names with their creation time and revocation state (never the hashes)."""
        with self._connection(write=False) as con:
            return con.execute("SELECT name, created, revoked, revoked_at FROM api_keys "
                               "ORDER BY created").df()


def _current_route(con: duckdb.DuckDBPyConnection) -> ServingRoute:
    fields = tuple(ServingRoute.model_fields)
    row = con.execute(f"SELECT {', '.join(fields)} FROM serving_route ORDER BY id DESC LIMIT 1").fetchone()
    return ServingRoute() if row is None else ServingRoute(**dict(zip(fields, row, strict=True)))


def _insert_audit(con: duckdb.DuckDBPyConnection, entry: AuditEntry) -> None:
    con.execute("INSERT INTO audit_log (id, ts, actor, role, action, target, reason, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [entry.id, entry.ts, entry.actor, entry.role, entry.action, entry.target, entry.reason,
                 json.dumps(entry.details)])


# --- group commit ---------------------------------------------------------------------------------------


class PredictionWriter:
    """Group commit for the API: rows from concurrent callers share one transaction.

    A background thread takes the first waiting row, lingers ``linger_s`` for more (up to
    ``max_batch``) and writes them with :meth:`Store.log_predictions`; rows arriving meanwhile form
    the next batch. :meth:`submit` returns only once its row's transaction has committed (a durable
    acknowledgement) and raises that transaction's error otherwise, so the API can answer 5xx.
    Hand-written because neither DuckDB (one synchronous transaction per call) nor any library offers
    group commit for it.
    """

    def __init__(self, store: Store, *, max_batch: int = 256, linger_s: float = 0.002):
        if max_batch < 1:
            raise DataError(f"must be 1 or more, got {max_batch}", field="max_batch")
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.batches_written = 0
        self.rows_written = 0
        # An item is a row with its future, or (None, future): a flush marker resolved once every
        # row queued before it is written.
        self._queue: queue.SimpleQueue[tuple[PredictionRecord | None, Future[None]]] = queue.SimpleQueue()
        self._state = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit_async(self, row: PredictionRecord) -> Future[None]:
        """Queue ``row``; the future completes when its transaction commits (or fails).

        Cancelling the future before the writer takes the row drops the row."""
        return self._put(row)

    def submit(self, row: PredictionRecord, timeout: float | None = None) -> None:
        """Queue ``row`` and wait until it is committed; raises the write's error if it failed."""
        self._put(row).result(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every row submitted before this call is written (committed or failed)."""
        self._put(None).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting rows, write those queued, and stop the thread."""
        with self._state:
            already = self._closed
            self._closed = True
        if not already:
            self._queue.put((None, Future()))  # wakes the thread if it waits for work
        self._thread.join(timeout)

    def _put(self, row: PredictionRecord | None) -> Future[None]:
        future: Future[None] = Future()
        with self._state:
            if self._closed:
                raise StoreError("the prediction writer is closed; the service is shutting down")
            self._queue.put((row, future))
        return future

    def _next_batch(self) -> list[tuple[PredictionRecord | None, Future[None]]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.max_batch and batch[-1][0] is not None:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            pending = [(row, future) for row, future in batch if row is not None]
            if pending:
                self._write(pending)
            for row, future in batch:
                if row is None:
                    future.set_result(None)
            with self._state:
                if self._closed and self._queue.empty():
                    return

    def _write(self, pending: list[tuple[PredictionRecord, Future[None]]]) -> None:
        pending = [(row, future) for row, future in pending if future.set_running_or_notify_cancel()]
        if not pending:
            return
        try:
            self.store.log_predictions([row for row, _ in pending])
        # Any failure (busy store, full disk...) must reach every waiting caller, or they would wait
        # forever and the writer thread would die; nothing is swallowed.
        except Exception as err:
            for _, future in pending:
                future.set_exception(err)
            return
        self.batches_written += 1
        self.rows_written += len(pending)
        for _, future in pending:
            future.set_result(None)
