"""The store: the ONLY module that speaks SQL. One DuckDB file shared by the API, the dashboard and CLI jobs.

What it holds: every prediction the service answered (``predictions``), ground truth arriving later
(``labels``), the serving route with its history (``serving_route``), an append-only ``audit_log`` of
operator actions, the hashes of API keys (``api_keys``), the monitor's ``health_snapshots`` (with one
``health_metrics`` row per metric) and its ``alerts``, and the model lifecycle's retraining ``jobs``
(with their ``job_log``), the ``retrain_triggers`` that fired and the ``version_archive``, and the
prediction requests answered with an error (``request_failures``, for the error rate). The schema
is created and migrated by :data:`MIGRATIONS` (applied once each, in order, recorded in
``schema_version``).

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skinlesion.errors import DataError, JobConflictError, StoreBusyError, StoreError
from skinlesion.schema import CLASSES, MISSING, class_index, validate_age, validate_sex, validate_site

Source = Literal["api", "dashboard", "batch", "demo"]
#: ``offline``: a version the route does not name, answering a batch (``skinlesion predict --log``)
ModelRole = Literal["active", "fallback", "challenger", "shadow", "offline"]
Decision = Literal["refer", "no referral", "uncertain"]
SOURCES: tuple[str, ...] = get_args(Source)
MODEL_ROLES: tuple[str, ...] = get_args(ModelRole)
DECISIONS: tuple[str, ...] = get_args(Decision)
#: Why a prediction request got no answer (the API's Prometheus ``outcome`` label uses the same words):
#: ``rejected`` bad input (4xx), ``unauthorized`` missing or unknown API key (401/403),
#: ``unavailable`` no model or store to answer with (503), ``error`` a failure while answering (5xx).
FailureKind = Literal["rejected", "unauthorized", "unavailable", "error"]
FAILURE_KINDS: tuple[str, ...] = get_args(FailureKind)
#: The failures that count in the error rate: every kind but ``unauthorized`` (a request without a
#: valid key never reaches the model; that is a client's set-up, not the service failing).
ERROR_RATE_KINDS: tuple[str, ...] = tuple(k for k in FAILURE_KINDS if k != "unauthorized")

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
    answers every request without its answer being returned.

    ``threshold_overrides`` holds the serving configuration of versions whose operating threshold
    was tuned after training (version id -> threshold); a version without an entry decides at its
    model card's threshold. The card itself is never edited: a change is a new route, audited,
    and the route history keeps every earlier value."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    active_version: str = DEFAULT_ACTIVE_VERSION
    fallback_version: str | None = None
    fallback_engaged: bool = False
    restricted_to_clear_cases: bool = False
    challenger_version: str | None = None
    challenger_share: float = Field(0.0, ge=0.0, le=1.0)
    shadow_version: str | None = None
    threshold_overrides: dict[str, float] = Field(default_factory=dict)

    @field_validator("active_version")
    @classmethod
    def _active(cls, value: str) -> str:
        return _non_blank(value, "active_version")

    @field_validator("threshold_overrides")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for version, threshold in value.items():
            _non_blank(version, "threshold_overrides")
            if not 0.0 <= threshold <= 1.0:
                raise DataError(f"the threshold of {version!r} must lie in [0, 1] (it is compared "
                                f"with p_malignant), got {threshold}", field="threshold_overrides")
        return dict(sorted(value.items()))

    def threshold_for(self, version: str) -> float | None:
        """The tuned threshold of ``version``, or None (it decides at its card's threshold)."""
        return self.threshold_overrides.get(version)

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


class FailureRecord(BaseModel):
    """A prediction request answered with an error: a row of ``request_failures``.

    No patient data: neither the request body nor the error message (which may quote a submitted
    value) is kept, only the field at fault. ``model_version`` is None when the request failed
    before a model answered (bad input, auth, no route)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(default_factory=_new_id)
    ts: datetime = Field(default_factory=_now)
    source: Source = "api"
    model_version: str | None = None
    http_status: int = Field(ge=400, le=599)
    kind: FailureKind
    field: str | None = None

    @field_validator("request_id", mode="before")
    @classmethod
    def _request_id(cls, value: object) -> str:
        return _canonical_uuid(value, "request_id")

    @field_validator("ts")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)


# --- monitoring records: health snapshots and alerts ----------------------------------------------------

HealthStatus = Literal["green", "yellow", "red", "unknown"]
AlertStatus = Literal["yellow", "red"]
AlertEvent = Literal["opened", "escalated", "resolved"]
HEALTH_STATUSES: tuple[str, ...] = get_args(HealthStatus)
ALERT_STATUSES: tuple[str, ...] = get_args(AlertStatus)
ALERT_EVENTS: tuple[str, ...] = get_args(AlertEvent)


def _plain_status(value: object) -> object:
    """A status enum member (``monitoring.policy.Status`` is a StrEnum) as its plain string."""
    return str(value) if isinstance(value, str) else value


def _finite_or_none(value: float | None) -> float | None:
    """NaN and infinities (a metric undefined in its window) are stored as NULL."""
    return None if value is None or not np.isfinite(value) else float(value)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class SnapshotMetric(BaseModel):
    """One metric of a health snapshot (a row of ``health_metrics``).

    ``value`` is the realised (label-based) value with its ``status``; None where the metric is
    undefined in the window (``note`` says why, e.g. "not enough labels"). ``estimated`` is the
    value estimated before labels arrive (CBPE) with its ``estimated_status``; ``n`` the cases
    behind it; ``previous_value`` the realised value in the window before, for the trend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    value: float | None = None
    status: HealthStatus = "unknown"
    n: int | None = None
    note: str = ""
    estimated: float | None = None
    estimated_status: HealthStatus = "unknown"
    previous_value: float | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _non_blank(value, "metric")

    @field_validator("status", "estimated_status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _plain_status(value)

    @field_validator("value", "estimated", "previous_value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        return _finite_or_none(value)

    @property
    def effective_status(self) -> str:
        """The realised status, or the estimated one while the realised one is unknown."""
        return self.estimated_status if self.status == "unknown" else self.status


class HealthSnapshot(BaseModel):
    """One monitoring run's verdict on one window: a row of ``health_snapshots``, its metrics (rows of
    ``health_metrics``, one per metric, so each can be plotted over time) and the full report as JSON
    (playbook, hints, drift per feature) for the detail views. ``status`` is the worst status.
    ``simulated`` marks a snapshot of simulated traffic (the embedded demo), as predictions and
    labels are marked; alerts raised from it carry the mark too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    ts: datetime = Field(default_factory=_now)
    window_name: str
    window_start: datetime
    window_end: datetime
    model_version: str | None = None
    source: str | None = None
    status: HealthStatus
    metrics: tuple[SnapshotMetric, ...] = ()
    report: dict[str, Any] = Field(default_factory=dict)
    simulated: bool = False

    @field_validator("window_name")
    @classmethod
    def _window_name(cls, value: str) -> str:
        return _non_blank(value, "window_name")

    @field_validator("ts", "window_start", "window_end")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _plain_status(value)

    @field_validator("report")
    @classmethod
    def _report(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _json_safe(value)

    @model_validator(mode="after")
    def _consistent(self) -> HealthSnapshot:
        if self.window_start >= self.window_end:
            raise DataError(f"window_start ({self.window_start.isoformat()}) must come before "
                            f"window_end ({self.window_end.isoformat()})", field="window_start")
        names = [m.metric for m in self.metrics]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"each metric appears once per snapshot; repeated: {', '.join(repeated)}",
                            field="metrics")
        return self

    def metric(self, name: str) -> SnapshotMetric | None:
        """The snapshot's row for metric ``name``, or None."""
        return next((m for m in self.metrics if m.metric == name), None)


def alert_key(metric: str, scope: str) -> str:
    """The deduplication key of an alert: at most one alert per key is open at a time."""
    return f"{metric}@{scope}"


class Alert(BaseModel):
    """An alert on ``metric`` in ``scope`` (e.g. the health window ``24h``): a row of ``alerts``.

    Open while ``resolved_at`` is None. ``last_event`` is its latest change (opened, escalated,
    resolved) at ``last_event_at``; ``notified`` says whether that change has been delivered (to the
    webhook), so an undelivered one is retried on the next run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    key: str = ""
    metric: str
    scope: str
    status: AlertStatus
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    last_event: AlertEvent = "opened"
    last_event_at: datetime
    notified: bool = False

    @field_validator("metric", "scope", "message")
    @classmethod
    def _required_text(cls, value: str, info: Any) -> str:
        return _non_blank(value, info.field_name)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _plain_status(value)

    @field_validator("opened_at", "last_seen_at", "last_event_at")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("resolved_at")
    @classmethod
    def _resolved_at(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_validator("details")
    @classmethod
    def _details(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _json_safe(value)

    @model_validator(mode="before")
    @classmethod
    def _key(cls, data: object) -> object:
        """Fill ``key`` from metric and scope (a given key must match them)."""
        if isinstance(data, Mapping) and "metric" in data and "scope" in data:
            expected = alert_key(str(data["metric"]).strip(), str(data["scope"]).strip())
            if data.get("key") and data["key"] != expected:
                raise DataError(f"an alert's key is metric@scope ({expected!r}), got {data['key']!r}",
                                field="key")
            return {**data, "key": expected}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Alert:
        if (self.resolved_at is None) == (self.last_event == "resolved"):
            raise DataError("an alert is resolved exactly when its last event is 'resolved'",
                            field="resolved_at")
        return self

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


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
#: Health snapshots: one header row per monitoring run and window (worst status, the full report as
#: JSON) and one long row per metric (so the dashboard plots a metric over time with one scan of
#: ``health_metrics``). Alerts: one row per alert, updated in place as it escalates and resolves;
#: the key (metric@scope) has at most one open alert, enforced by the store's write methods.
_MONITORING_SCHEMA = """
CREATE SEQUENCE health_snapshots_seq;
CREATE TABLE health_snapshots (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('health_snapshots_seq'),
    ts TIMESTAMPTZ NOT NULL,
    window_name TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    model_version TEXT,
    source TEXT,
    status TEXT NOT NULL CHECK (status IN ('green', 'yellow', 'red', 'unknown')),
    report JSON
);
CREATE INDEX health_snapshots_ts ON health_snapshots (ts);

CREATE TABLE health_metrics (
    snapshot_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value DOUBLE,
    status TEXT NOT NULL CHECK (status IN ('green', 'yellow', 'red', 'unknown')),
    estimated DOUBLE,
    estimated_status TEXT NOT NULL CHECK (estimated_status IN ('green', 'yellow', 'red', 'unknown')),
    n BIGINT,
    note TEXT NOT NULL DEFAULT '',
    previous_value DOUBLE,
    PRIMARY KEY (snapshot_id, metric)
);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    metric TEXT NOT NULL,
    scope TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('yellow', 'red')),
    opened_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    message TEXT NOT NULL,
    details JSON,
    last_event TEXT NOT NULL CHECK (last_event IN ('opened', 'escalated', 'resolved')),
    last_event_at TIMESTAMPTZ NOT NULL,
    notified BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX alerts_key ON alerts (key);
"""

# --- retraining jobs, retraining triggers and archived versions (skinlesion.jobs, skinlesion.retrain) ---

JobTrigger = Literal["manual", "scheduled", "event", "active_learning"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_TRIGGERS: tuple[str, ...] = get_args(JobTrigger)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: statuses of a job that may still be working (at most one such job per model)
UNFINISHED_JOB_STATUSES: tuple[str, ...] = ("queued", "running")


class JobRecord(BaseModel):
    """A background job (a retraining run): a row of ``jobs``.

    ``model`` is the model version the job works on; at most one unfinished (queued or running) job
    per model is stored (:meth:`Store.create_job`). ``pid`` is the job's process once launched;
    ``progress`` (0..1) and ``message`` say how far it got; ``cancel_requested`` asks it to stop at
    its next check; ``result`` holds what it produced (e.g. the new version id and the
    champion/challenger comparison), ``error`` why it failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    kind: str = "retrain"
    model: str
    trigger: JobTrigger
    status: JobStatus = "queued"
    reason: str = ""
    requested_by: str
    role: str
    created_at: datetime = Field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""
    cancel_requested: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = ""

    @field_validator("model", "requested_by", "role", "kind")
    @classmethod
    def _required_text(cls, value: str, info: Any) -> str:
        return _non_blank(value, info.field_name)

    @field_validator("created_at")
    @classmethod
    def _ts(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("started_at", "finished_at")
    @classmethod
    def _optional_ts(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @field_validator("config", "result")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _json_safe(value)

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED_JOB_STATUSES


#: The columns of ``jobs``, in the order of the :class:`JobRecord` fields.
JOB_COLUMNS: tuple[str, ...] = tuple(JobRecord.model_fields)
_JOB_JSON_COLUMNS = ("config", "result")

#: Retraining jobs with their log lines; retraining triggers that fired (one row per incident key,
#: so an event fires at most once); versions archived (the latest row per version wins).
_JOBS_SCHEMA = """
CREATE SEQUENCE jobs_seq;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL DEFAULT nextval('jobs_seq'),
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'event', 'active_learning')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    reason TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    pid BIGINT,
    progress DOUBLE NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    config JSON,
    result JSON,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_model ON jobs (model);

CREATE SEQUENCE job_log_seq;
CREATE TABLE job_log (
    seq BIGINT PRIMARY KEY DEFAULT nextval('job_log_seq'),
    job_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id);

CREATE TABLE retrain_triggers (
    key TEXT PRIMARY KEY,
    trigger TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    job_id TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    details JSON
);

CREATE SEQUENCE version_archive_seq;
CREATE TABLE version_archive (
    seq BIGINT PRIMARY KEY DEFAULT nextval('version_archive_seq'),
    version TEXT NOT NULL,
    archived BOOLEAN NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    audit_id TEXT NOT NULL
);
"""

#: Prediction requests answered with an error (no request body, no message: see FailureRecord).
_FAILURES_SCHEMA = """
CREATE TABLE request_failures (
    request_id TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    model_version TEXT,
    http_status INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rejected', 'unauthorized', 'unavailable', 'error')),
    field TEXT
);
CREATE INDEX request_failures_ts ON request_failures (ts);
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("initial schema: predictions, labels, audit_log, serving_route, api_keys", _INITIAL_SCHEMA),
    ("monitoring: health_snapshots, health_metrics, alerts", _MONITORING_SCHEMA),
    ("retraining: jobs, job_log, retrain_triggers, version_archive", _JOBS_SCHEMA),
    ("serving route: per-version threshold overrides",
     "ALTER TABLE serving_route ADD COLUMN threshold_overrides JSON DEFAULT '{}'"),
    ("request failures: prediction requests answered with an error", _FAILURES_SCHEMA),
    ("health snapshots: simulated flag (snapshots of the demo's simulated traffic)",
     "ALTER TABLE health_snapshots ADD COLUMN simulated BOOLEAN DEFAULT false"),
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

    def bulk_load(self, predictions: pd.DataFrame, labels: pd.DataFrame | None = None) -> int:
        """Load already-validated rows in bulk (backfills of historical logs, benchmarks with a
        million rows): ``predictions`` with the predictions-table columns, ``labels`` with id,
        request_id, image_sha256, diagnosis, source, labelled_by, ts, simulated. One transaction;
        idempotent on the ids like :meth:`log_predictions`. Returns the predictions inserted."""
        missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
        if missing:
            raise DataError(f"bulk load needs the predictions columns; missing: {sorted(missing)}")
        with self._connection(write=True) as con:
            con.register("incoming", predictions.loc[:, list(PREDICTION_COLUMNS)])
            (inserted,) = con.execute("INSERT INTO predictions BY NAME SELECT * FROM incoming "
                                      "ON CONFLICT DO NOTHING").fetchone()
            if labels is not None and len(labels):
                con.register("incoming_labels", labels)
                con.execute("INSERT INTO labels BY NAME SELECT * FROM incoming_labels "
                            "ON CONFLICT DO NOTHING")
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

    def version_counts(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """The model versions that answered in ``[start, end)``: ``model_version``, ``n`` answers,
        ``roles`` (the roles it answered in, comma-separated), ``first_ts``, ``last_ts``; most
        recent first (the dashboard's model filter)."""
        where, params = _where(start, end, {}, "p")
        sql = ("SELECT p.model_version, count(*) AS n, string_agg(DISTINCT p.model_role, ', ' "
               "ORDER BY p.model_role) AS roles, min(p.ts) AS first_ts, max(p.ts) AS last_ts "
               f"FROM predictions p{where} GROUP BY 1 ORDER BY last_ts DESC, 1")
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

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
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                returned=returned), "p")
        failed_where, failed_params = _where(start, end, dict(model_version=model_version,
                                                              source=source), "f")
        kinds = ", ".join(f"'{k}'" for k in ERROR_RATE_KINDS)
        failed_where += f"{' AND' if failed_where else ' WHERE'} f.kind IN ({kinds})"
        keys = "hour, source" if by_source else "hour"
        groups = "1, 2" if by_source else "1"
        sql = f"""
            WITH a AS (SELECT date_trunc('hour', p.ts) AS hour{", p.source" if by_source else ""},
                              count(*) AS n, quantile_cont(p.latency_ms, 0.5) AS latency_p50_ms,
                              quantile_cont(p.latency_ms, 0.95) AS latency_p95_ms,
                              quantile_cont(p.latency_ms, 0.99) AS latency_p99_ms,
                              count(*) FILTER (WHERE p.decision = 'uncertain') AS uncertain,
                              count(*) FILTER (WHERE p.decision = 'refer') AS refer
                       FROM predictions p{where} GROUP BY {groups}),
            f AS (SELECT date_trunc('hour', f.ts) AS hour{", f.source" if by_source else ""},
                         count(*) AS failures
                  FROM request_failures f{failed_where} GROUP BY {groups})
            SELECT {keys}, coalesce(a.n, 0) AS n, a.latency_p50_ms, a.latency_p95_ms,
                   a.latency_p99_ms, coalesce(a.uncertain, 0) AS uncertain,
                   coalesce(a.refer, 0) AS refer, coalesce(f.failures, 0) AS failures,
                   coalesce(f.failures, 0) / (coalesce(f.failures, 0) + coalesce(a.n, 0)) AS error_rate
            FROM a FULL OUTER JOIN f USING ({keys}) ORDER BY {keys}"""
        with self._connection(write=False) as con:
            return con.execute(sql, [*params, *failed_params]).df()

    def review_cases(self, start: datetime | None = None, end: datetime | None = None, *,
                     labelled: bool | None = None, order: Literal["risk", "newest"] = "risk",
                     model_version: str | None = None, source: str | None = None,
                     simulated: bool | None = None, limit: int | None = None) -> pd.DataFrame:
        """Returned answers (shadow answers excluded) in ``[start, end)`` for the review screens:
        :data:`PREDICTION_COLUMNS` without ``embedding``, plus ``diagnosis``, ``labelled_by`` and
        ``label_ts`` of the latest label by request id or image hash (None when unlabelled).

        ``labelled`` keeps only labelled (True) or unlabelled (False) cases; ``order`` is ``risk``
        (highest ``p_malignant`` first: the triage list) or ``newest``; ``limit`` caps the rows."""
        orders = {"risk": "p.p_malignant DESC, p.ts DESC", "newest": "p.ts DESC"}
        if order not in orders:
            raise DataError(f"must be one of {', '.join(orders)}, got {order!r}", field="order")
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                simulated=simulated, returned=True), "predictions")
        label_filter = {None: "", True: " WHERE latest.id IS NOT NULL",
                        False: " WHERE latest.id IS NULL"}[labelled]
        sql = f"""
            WITH p AS (SELECT * EXCLUDE (embedding) FROM predictions{where}),
            candidates AS (
                SELECT p.request_id AS prediction_id, l.* FROM p JOIN labels l ON l.request_id = p.request_id
                UNION ALL
                SELECT p.request_id, l.* FROM p JOIN labels l ON l.image_sha256 = p.image_sha256
            ),
            latest AS (
                SELECT * FROM candidates
                QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY ts DESC, seq DESC) = 1
            )
            SELECT p.*, latest.diagnosis, latest.labelled_by, latest.ts AS label_ts
            FROM p LEFT JOIN latest ON latest.prediction_id = p.request_id{label_filter}
            ORDER BY {orders[order]}, p.request_id{_limit(limit)}"""
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

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

    # --- monitoring aggregations (for skinlesion.monitoring.health) ---------------------------------
    # Counts, percentiles and sums run here in DuckDB, so a health window over millions of answers
    # never loads them into memory; only the labelled minority comes back row by row, and only the
    # columns the label-based metrics need. A prediction's label is found by request id or image
    # hash, as in labelled_predictions; labels are aggregated per key before joining, so repeated
    # images do not multiply rows.

    def window_summary(self, start: datetime, end: datetime, *, model_version: str | None = None,
                       source: str | None = None, model_role: str | None = None,
                       simulated: bool | None = None, returned: bool | None = None) -> dict[str, Any]:
        """Operational numbers of the predictions in ``[start, end)`` (filters as in
        :meth:`query_predictions`), in one pass: ``n``; ``latency_p50_ms, latency_p95_ms,
        latency_p99_ms`` (linear interpolation, as numpy's percentile) and ``latency_mean_ms`` (None
        when empty); ``decisions`` ({decision: count} over :data:`DECISIONS`)."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "predictions")
        decisions = ", ".join(f"count(*) FILTER (WHERE decision = '{d}')" for d in DECISIONS)
        sql = (f"SELECT count(*), quantile_cont(latency_ms, [0.5, 0.95, 0.99]), avg(latency_ms), "
               f"{decisions} FROM predictions{where}")
        with self._connection(write=False) as con:
            n, quantiles, mean, *counts = con.execute(sql, params).fetchone()
        p50, p95, p99 = quantiles if quantiles is not None else (None, None, None)
        return {"n": int(n), "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99,
                "latency_mean_ms": mean, "decisions": dict(zip(DECISIONS, map(int, counts), strict=True))}

    def hourly_volume(self, start: datetime, end: datetime, *, model_version: str | None = None,
                      source: str | None = None, model_role: str | None = None,
                      simulated: bool | None = None, returned: bool | None = None) -> pd.DataFrame:
        """Predictions per UTC hour: ``hour`` (every hour from the one holding ``start`` up to
        ``end``, empty hours included with 0) and ``n``, counting predictions in
        ``[start, end)``."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "predictions")
        sql = f"""
            WITH hours AS (SELECT unnest(range(date_trunc('hour', ?::TIMESTAMPTZ), ?::TIMESTAMPTZ,
                                               INTERVAL 1 HOUR)) AS hour),
            counts AS (SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM predictions{where}
                       GROUP BY 1)
            SELECT hours.hour, coalesce(counts.n, 0)::BIGINT AS n
            FROM hours LEFT JOIN counts USING (hour) ORDER BY hours.hour"""
        with self._connection(write=False) as con:
            return con.execute(sql, [_utc(start), _utc(end), *params]).df()

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
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "predictions")
        called = "FILTER (WHERE p_malignant >= threshold)"
        benign = "FILTER (WHERE p_malignant < threshold)"
        totals_sql = f"""
            SELECT count(*), coalesce(sum(p_malignant) {called}, 0),
                   coalesce(sum(1 - p_malignant) {called}, 0), coalesce(sum(1 - p_malignant) {benign}, 0),
                   coalesce(sum(p_malignant) {benign}, 0),
                   coalesce(sum(-(q * ln(q) + (1 - q) * ln(1 - q))), 0)
            FROM (SELECT *, greatest(least(p_malignant, 1 - 1e-15), 1e-15) AS q
                  FROM predictions{where})"""
        histogram_sql = (f"SELECT round(p_malignant, {int(decimals)}) AS score, sum(p_malignant) AS pos, "
                         f"sum(1 - p_malignant) AS neg FROM predictions{where} GROUP BY 1 ORDER BY 1")
        with self._connection(write=False) as con:
            n, tp, fp, tn, fn, entropy = con.execute(totals_sql, params).fetchone()
            histogram = con.execute(histogram_sql, params).df()
        totals = {"n": int(n), "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn),
                  "entropy": float(entropy)}
        return totals, histogram

    def labelled_scores(self, start: datetime, end: datetime, *, model_version: str | None = None,
                        source: str | None = None, model_role: str | None = None,
                        simulated: bool | None = None, returned: bool | None = None) -> pd.DataFrame:
        """The labelled predictions of ``[start, end)`` with only what label-based metrics need:
        ``request_id, ts, threshold``, ``p_<CLASS>`` columns, ``p_malignant``, ``diagnosis`` (the
        latest label by request id or image hash, as :meth:`labelled_predictions`), ``label_ts``
        (its time) and ``first_label_ts`` (when the first label for it came: for label lag).
        Coverage is ``len(result) / window_summary()["n"]``."""
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                model_role=model_role, simulated=simulated,
                                                returned=returned), "predictions")
        probabilities = ", ".join(PROBABILITY_COLUMNS)
        # max() of a (ts, seq, diagnosis) struct is the latest label, ties broken by arrival
        latest = "max({'ts': ts, 'seq': seq, 'diagnosis': diagnosis}) AS latest, min(ts) AS first_ts"
        sql = f"""
            WITH p AS (SELECT request_id, image_sha256, ts, threshold, {probabilities}, p_malignant
                       FROM predictions{where}),
            by_request AS (SELECT request_id, {latest} FROM labels
                           WHERE request_id IN (SELECT request_id FROM p) GROUP BY request_id),
            by_image AS (SELECT image_sha256, {latest} FROM labels
                         WHERE image_sha256 IN (SELECT image_sha256 FROM p) GROUP BY image_sha256),
            j AS (SELECT p.request_id, p.ts, p.threshold, {probabilities}, p.p_malignant,
                         greatest(r.latest, i.latest) AS latest, least(r.first_ts, i.first_ts) AS first_ts
                  FROM p LEFT JOIN by_request r USING (request_id) LEFT JOIN by_image i USING (image_sha256)
                  WHERE r.latest IS NOT NULL OR i.latest IS NOT NULL)
            SELECT request_id, ts, threshold, {probabilities}, p_malignant,
                   latest.diagnosis AS diagnosis, latest.ts AS label_ts, first_ts AS first_label_ts
            FROM j ORDER BY ts, request_id"""
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

    # --- request failures (prediction requests answered with an error) ---

    def log_failure(self, failure: FailureRecord) -> bool:
        """Record a failed prediction request; False when its request id was already recorded."""
        with self._connection(write=True) as con:
            (inserted,) = con.execute(
                "INSERT INTO request_failures (request_id, ts, source, model_version, http_status, "
                "kind, field) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [failure.request_id, failure.ts, failure.source, failure.model_version,
                 failure.http_status, failure.kind, failure.field]).fetchone()
        return bool(inserted)

    def query_failures(self, start: datetime | None = None, end: datetime | None = None, *,
                       source: str | None = None, kind: str | None = None,
                       model_version: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Failed prediction requests with ``start <= ts < end`` matching the filters, newest first,
        with the ``request_failures`` columns."""
        where, params = _where(start, end, dict(source=source, kind=kind, model_version=model_version),
                               "f")
        with self._connection(write=False) as con:
            return con.execute(f"SELECT f.* FROM request_failures f{where} "
                               f"ORDER BY f.ts DESC, f.request_id{_limit(limit)}", params).df()

    def failure_counts(self, start: datetime, end: datetime, *, model_version: str | None = None,
                       source: str | None = None) -> dict[str, int]:
        """Failed prediction requests in ``[start, end)`` by kind: every :data:`FAILURE_KINDS` key,
        0 when none. With ``model_version`` only failures of that version count (most failures
        happen before a model answers and carry no version)."""
        where, params = _where(start, end, dict(model_version=model_version, source=source), "f")
        counts = ", ".join(f"count(*) FILTER (WHERE f.kind = '{k}')" for k in FAILURE_KINDS)
        with self._connection(write=False) as con:
            row = con.execute(f"SELECT {counts} FROM request_failures f{where}", params).fetchone()
        return dict(zip(FAILURE_KINDS, map(int, row), strict=True))

    # --- serving route ---

    def get_route(self) -> ServingRoute:
        """The current serving route: the newest one set, or the default :class:`ServingRoute`."""
        with self._connection(write=False) as con:
            return _current_route(con)

    def set_route(self, route: ServingRoute, *, actor: str, role: str, reason: str,
                  details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Make ``route`` current and audit it (with the previous route) in one transaction;
        ``details`` (e.g. ``{"operation": "rollback"}``) are added to the audit row's."""
        fields = tuple(ServingRoute.model_fields)
        with self._connection(write=True) as con:
            previous = _current_route(con)
            entry = AuditEntry(actor=actor, role=role, action="set_route", target=route.active_version,
                               reason=_non_blank(reason, "reason"),
                               details={**(details or {}), "route": route.model_dump(),
                                        "previous": previous.model_dump()})
            values = _route_values(route)
            con.execute(f"INSERT INTO serving_route (ts, audit_id, {', '.join(fields)}) "
                        f"VALUES (?, ?, {', '.join('?' for _ in fields)})",
                        [entry.ts, entry.id, *(values[f] for f in fields)])
            _insert_audit(con, entry)
        return entry

    def route_history(self, limit: int | None = None) -> pd.DataFrame:
        """Every route set, newest first, with who set it and why (``threshold_overrides`` as
        dicts)."""
        with self._connection(write=False) as con:
            frame = con.execute(
                "SELECT r.* EXCLUDE (audit_id), a.actor, a.role, a.reason FROM serving_route r "
                f"JOIN audit_log a ON a.id = r.audit_id ORDER BY r.id DESC{_limit(limit)}").df()
        frame["threshold_overrides"] = [_json_dict(v) for v in frame["threshold_overrides"]]
        return frame

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

    # --- a window's sample, for drift ---

    def sample_predictions(self, start: datetime | None = None, end: datetime | None = None, *,
                           n: int, seed: int = 0, model_version: str | None = None,
                           source: str | None = None, returned: bool | None = None,
                           include_embedding: bool = False) -> pd.DataFrame:
        """At most ``n`` of the predictions :meth:`query_predictions` would return, drawn uniformly
        (reservoir sample, repeatable for one ``seed``): drift over a month of traffic never loads
        the whole month, embeddings included. Oldest first."""
        if n < 1:
            raise DataError(f"must be 1 or more, got {n}", field="n")
        where, params = _where(start, end, dict(model_version=model_version, source=source,
                                                returned=returned), "p")
        columns = "p.*" if include_embedding else "p.* EXCLUDE (embedding)"
        sql = (f"SELECT * FROM (SELECT {columns} FROM predictions p{where}) "
               f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)}) ORDER BY ts, request_id")
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

    # --- health snapshots (written by `skinlesion monitor`, read by the dashboard) ---

    def save_snapshot(self, snapshot: HealthSnapshot) -> bool:
        """Store ``snapshot`` and its metrics in one transaction; returns False (and writes nothing)
        when a snapshot with its id is already stored, so a retried call never duplicates rows."""
        with self._connection(write=True) as con:
            (inserted,) = con.execute(
                "INSERT INTO health_snapshots (id, ts, window_name, window_start, window_end, "
                "model_version, source, status, report, simulated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [snapshot.id, snapshot.ts, snapshot.window_name, snapshot.window_start,
                 snapshot.window_end, snapshot.model_version, snapshot.source, snapshot.status,
                 json.dumps(snapshot.report), snapshot.simulated]).fetchone()
            if not inserted:
                return False
            if snapshot.metrics:
                con.executemany(
                    f"INSERT INTO health_metrics (snapshot_id, {', '.join(_SNAPSHOT_METRIC_COLUMNS)}) "
                    f"VALUES (?, {', '.join('?' for _ in _SNAPSHOT_METRIC_COLUMNS)})",
                    [[snapshot.id, *(getattr(m, c) for c in _SNAPSHOT_METRIC_COLUMNS)]
                     for m in snapshot.metrics])
        return True

    def query_snapshots(self, start: datetime | None = None, end: datetime | None = None, *,
                        metric: str | None = None, window_name: str | None = None,
                        model_version: str | None = None) -> pd.DataFrame:
        """Snapshot metrics over time: one row per metric per snapshot taken at ``start <= ts < end``,
        oldest first. Columns: ``snapshot_id, ts, window_name, window_start, window_end,
        model_version, source, snapshot_status`` (the snapshot's worst status), ``simulated``
        and the :class:`SnapshotMetric` columns ``metric, value, status, n, note, estimated,
        estimated_status, previous_value`` plus ``effective_status`` (the realised status, or the
        estimated one while the realised one is unknown: what the alerts follow)."""
        where, params = _where(start, end, dict(window_name=window_name,
                                                model_version=model_version), "s")
        if metric is not None:
            where += (" AND " if where else " WHERE ") + "m.metric = ?"
            params.append(metric)
        sql = ("SELECT s.id AS snapshot_id, s.ts, s.window_name, s.window_start, s.window_end, "
               "s.model_version, s.source, s.status AS snapshot_status, "
               "coalesce(s.simulated, false) AS simulated, "
               f"{', '.join('m.' + c for c in _SNAPSHOT_METRIC_COLUMNS)}, {_EFFECTIVE_STATUS} "
               f"FROM health_snapshots s JOIN health_metrics m ON m.snapshot_id = s.id{where} "
               "ORDER BY s.ts, s.seq, m.metric")
        with self._connection(write=False) as con:
            return con.execute(sql, params).df()

    def list_snapshots(self, start: datetime | None = None, end: datetime | None = None, *,
                       window_name: str | None = None, limit: int | None = None,
                       newest_first: bool = False) -> pd.DataFrame:
        """One row per snapshot (``id, ts, window_name, window_start, window_end, model_version,
        source, status, simulated``), without metrics or report: the status timeline."""
        where, params = _where(start, end, dict(window_name=window_name), "s")
        order = "DESC" if newest_first else "ASC"
        with self._connection(write=False) as con:
            return con.execute(
                "SELECT s.id, s.ts, s.window_name, s.window_start, s.window_end, s.model_version, "
                f"s.source, s.status, coalesce(s.simulated, false) AS simulated "
                f"FROM health_snapshots s{where} "
                f"ORDER BY s.ts {order}, s.seq {order}{_limit(limit)}", params).df()

    def get_snapshot(self, snapshot_id: str) -> HealthSnapshot | None:
        """The snapshot stored under ``snapshot_id`` with its metrics and report, or None."""
        with self._connection(write=False) as con:
            return _read_snapshot(con, "WHERE id = ?", [snapshot_id])

    def latest_snapshot(self, window_name: str | None = None) -> HealthSnapshot | None:
        """The newest snapshot (of ``window_name`` when given) with its metrics and report, or None."""
        where, params = ("WHERE window_name = ?", [window_name]) if window_name else ("", [])
        with self._connection(write=False) as con:
            return _read_snapshot(con, where, params)

    def metric_status_history(self, window_name: str, *, last: int,
                              until: datetime | None = None) -> dict[str, list[str]]:
        """The effective status (realised, or estimated while the realised one is unknown) of each
        metric over the newest ``last`` consecutive windows of ``window_name`` taken at or before
        ``until``, oldest first; ``unknown`` where a snapshot lacks the metric. Consecutive means
        windows that do not overlap: from the newest snapshot back, each earlier one is the newest
        whose window ended by the time the later one's began, so a monitor running every 15 min
        over a 24 h window compares today with yesterday, not with 15 min ago. Every list has one
        entry per window, so consecutive windows line up across metrics."""
        if last < 1:
            raise DataError(f"must be 1 or more, got {last}", field="last")
        clauses, params = ["window_name = ?"], [window_name]
        if until is not None:
            clauses.append("ts <= ?")
            params.append(_utc(until))
        chosen: list[str] = []
        with self._connection(write=False) as con:
            before: list[object] = []
            for _ in range(last):
                row = con.execute(
                    f"SELECT id, window_start FROM health_snapshots WHERE "
                    f"{' AND '.join([*clauses, *(['window_end <= ?'] if before else [])])} "
                    "ORDER BY ts DESC, seq DESC LIMIT 1", [*params, *before]).fetchone()
                if row is None:
                    break
                chosen.insert(0, row[0])
                before = [row[1]]
            rows = con.execute(
                f"SELECT m.snapshot_id, m.metric, {_EFFECTIVE_STATUS} FROM health_metrics m "
                f"WHERE m.snapshot_id IN ({', '.join('?' * len(chosen))})",
                chosen).fetchall() if chosen else []
        position = {snapshot_id: i for i, snapshot_id in enumerate(chosen)}
        history: dict[str, list[str]] = {}
        for snapshot_id, metric, status in rows:
            history.setdefault(metric, ["unknown"] * len(chosen))[position[snapshot_id]] = status
        return history

    # --- alerts (one open alert per key; updated in place as they escalate and resolve) ---

    def open_alerts(self, *, scope: str | None = None) -> list[Alert]:
        """The alerts not yet resolved (in ``scope`` when given), oldest first."""
        where, params = _alert_where(dict(scope=scope), open_only=True)
        with self._connection(write=False) as con:
            return _read_alerts(con, f"{where} ORDER BY opened_at, id", params)

    def get_alert(self, alert_id: str) -> Alert | None:
        """The alert stored under ``alert_id``, or None."""
        with self._connection(write=False) as con:
            found = _read_alerts(con, "WHERE id = ?", [alert_id])
        return found[0] if found else None

    def query_alerts(self, start: datetime | None = None, end: datetime | None = None, *,
                     include_resolved: bool = True, metric: str | None = None,
                     scope: str | None = None) -> pd.DataFrame:
        """Alerts active at some time in ``[start, end)`` (opened before ``end``, not resolved before
        ``start``), newest first, one row per alert with the :class:`Alert` columns; ``details``
        comes back as dicts. Without ``include_resolved`` only the open ones."""
        where, params = _alert_where(dict(metric=metric, scope=scope), open_only=not include_resolved)
        clauses = [where.removeprefix(" WHERE ")] if where else []
        if end is not None:
            clauses.append("opened_at < ?")
            params.append(_utc(end))
        if start is not None:
            clauses.append("(resolved_at IS NULL OR resolved_at >= ?)")
            params.append(_utc(start))
        sql = (f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
               f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''} ORDER BY opened_at DESC, id")
        with self._connection(write=False) as con:
            frame = con.execute(sql, params).df()
        frame["details"] = [json.loads(d) if isinstance(d, str) else {} for d in frame["details"]]
        return frame

    def upsert_alert(self, alert: Alert) -> Alert:
        """Insert ``alert``, or update the stored alert with its id (status, times, message, details,
        last event, notified); returns the stored alert.

        Deduplicated: a new open alert whose key already has another open alert is not stored; the
        one already open is returned unchanged (so two monitors racing never raise two alerts)."""
        alert = Alert.model_validate(alert.model_dump())
        values = alert.model_dump()
        values["details"] = json.dumps(alert.details)
        with self._connection(write=True) as con:
            if alert.is_open:
                found = _read_alerts(con, "WHERE key = ? AND resolved_at IS NULL AND id <> ?",
                                     [alert.key, alert.id])
                if found:
                    return found[0]
            updated = [c for c in ALERT_COLUMNS if c not in ("id", "key", "metric", "scope", "opened_at")]
            con.execute(
                f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in ALERT_COLUMNS)}) ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in updated),
                [values[c] for c in ALERT_COLUMNS])
        return alert

    def resolve_alert(self, alert_id: str, *, at: datetime | None = None,
                      message: str | None = None) -> Alert:
        """Resolve the alert ``alert_id`` at ``at`` (default now) as a new, not yet notified event;
        an alert already resolved is returned unchanged. StoreError for an unknown id."""
        at = _utc(at or _now())
        with self._connection(write=True) as con:
            found = _read_alerts(con, "WHERE id = ?", [alert_id])
            if not found:
                raise StoreError(f"no alert with id {alert_id!r}; list them with Store.query_alerts")
            if not found[0].is_open:
                return found[0]
            resolved = found[0].model_copy(update=dict(
                resolved_at=at, last_seen_at=max(at, found[0].last_seen_at),
                message=message or found[0].message, last_event="resolved", last_event_at=at,
                notified=False))
            con.execute("UPDATE alerts SET resolved_at = ?, last_seen_at = ?, message = ?, "
                        "last_event = 'resolved', last_event_at = ?, notified = false WHERE id = ?",
                        [resolved.resolved_at, resolved.last_seen_at, resolved.message, at, alert_id])
        return resolved

    def pending_alert_notifications(self) -> list[Alert]:
        """Alerts whose latest event has not been delivered yet, oldest event first."""
        with self._connection(write=False) as con:
            return _read_alerts(con, "WHERE NOT notified ORDER BY last_event_at, id", [])

    def mark_alert_notified(self, alert_id: str, event_at: datetime) -> bool:
        """Record that the event of ``alert_id`` at ``event_at`` was delivered; False when the alert
        has changed since (its newer event stays pending)."""
        with self._connection(write=True) as con:
            (changed,) = con.execute("UPDATE alerts SET notified = true "
                                     "WHERE id = ? AND last_event_at = ? AND NOT notified",
                                     [alert_id, _utc(event_at)]).fetchone()
        return bool(changed)

    # --- retraining jobs (skinlesion.jobs), their triggers and archived versions ---

    def create_job(self, job: JobRecord, *, is_live: Callable[[JobRecord], bool]) -> JobRecord:
        """Store the new ``job`` unless another unfinished job of the same model is live.

        In one write transaction (so two launchers racing cannot both pass): the unfinished jobs of
        ``job.model`` that ``is_live`` says are gone (their process died) are marked failed; if one
        is still live, :class:`~skinlesion.errors.JobConflictError` names it and nothing is stored."""
        job = JobRecord.model_validate(job.model_dump())
        with self._connection(write=True) as con:
            unfinished = _read_jobs(con, "WHERE model = ? AND status IN ('queued', 'running') "
                                    "ORDER BY seq", [job.model])
            for other in unfinished:
                if is_live(other):
                    raise JobConflictError(
                        f"a {other.kind} job for {other.model} is already {other.status} (job "
                        f"{other.id}, started by {other.requested_by} at "
                        f"{other.created_at:%Y-%m-%d %H:%M} UTC); wait for it or cancel it "
                        f"(`skinlesion jobs cancel {other.id}`)")
                gone = other.model_copy(update=dict(
                    status="failed", finished_at=_now(),
                    error=f"its process{f' (pid {other.pid})' if other.pid else ''} is gone; "
                          f"marked failed when job {job.id} was launched"))
                _write_job(con, gone)
            values = _job_values(job)
            con.execute(f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in JOB_COLUMNS)})",
                        [values[c] for c in JOB_COLUMNS])
        return job

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job stored under ``job_id`` (or a unique prefix of it, as printed), or None."""
        with self._connection(write=False) as con:
            found = _read_jobs(con, "WHERE id = ? OR id LIKE ? ORDER BY seq", [job_id, f"{job_id}%"])
        exact = [j for j in found if j.id == job_id]
        return exact[0] if exact else (found[0] if len(found) == 1 else None)

    def list_jobs(self, *, model: str | None = None, status: str | None = None,
                  limit: int | None = None) -> list[JobRecord]:
        """Jobs, newest first, of ``model`` and in ``status`` when given."""
        where, params = _alert_where(dict(model=model, status=status), open_only=False)
        with self._connection(write=False) as con:
            return _read_jobs(con, f"{where} ORDER BY seq DESC{_limit(limit)}", params)

    def update_job(self, job_id: str, *, expect: Iterable[str] | None = None,
                   **changes: Any) -> JobRecord | None:
        """Change fields of the job ``job_id`` (validated as a :class:`JobRecord`); with ``expect``
        only while its status is one of them (returns None and changes nothing otherwise, e.g. a
        job cancelled meanwhile is not marked succeeded). StoreError for an unknown id."""
        if {"id", "model", "created_at"} & set(changes):
            raise DataError("a job's id, model and creation time never change", field="changes")
        with self._connection(write=True) as con:
            found = _read_jobs(con, "WHERE id = ?", [job_id])
            if not found:
                raise StoreError(f"no job with id {job_id!r}; list them with `skinlesion jobs list`")
            if expect is not None and found[0].status not in tuple(expect):
                return None
            job = JobRecord.model_validate({**found[0].model_dump(), **changes})
            _write_job(con, job)
        return job

    def append_job_log(self, job_id: str, lines: Iterable[str]) -> int:
        """Append ``lines`` to the job's log; returns how many were stored."""
        rows = [[job_id, _now(), str(line)] for line in lines]
        if rows:
            with self._connection(write=True) as con:
                con.executemany("INSERT INTO job_log (job_id, ts, line) VALUES (?, ?, ?)", rows)
        return len(rows)

    def job_log(self, job_id: str, *, tail: int | None = None) -> pd.DataFrame:
        """The job's log lines (``ts``, ``line``), oldest first; only the last ``tail`` when given."""
        sql = ("SELECT ts, line FROM (SELECT seq, ts, line FROM job_log WHERE job_id = ? "
               f"ORDER BY seq DESC{_limit(tail)}) ORDER BY seq")
        with self._connection(write=False) as con:
            return con.execute(sql, [job_id]).df()

    def claim_trigger(self, key: str, trigger: str, *, details: Mapping[str, Any] | None = None,
                      at: datetime | None = None) -> bool:
        """Record that the retraining trigger ``key`` (e.g. ``alert:<id>``) fired; False when it
        had fired before (then nothing changes), so each incident launches at most once."""
        with self._connection(write=True) as con:
            (inserted,) = con.execute(
                "INSERT INTO retrain_triggers (key, trigger, ts, details) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [_non_blank(key, "key"), trigger, _utc(at or _now()),
                 json.dumps(_json_safe(dict(details or {})))]).fetchone()
        return bool(inserted)

    def settle_trigger(self, key: str, *, job_id: str | None, outcome: str) -> None:
        """Record what a claimed trigger led to: the job it launched, or why none was."""
        with self._connection(write=True) as con:
            con.execute("UPDATE retrain_triggers SET job_id = ?, outcome = ? WHERE key = ?",
                        [job_id, outcome, key])

    def list_triggers(self, *, trigger: str | None = None) -> pd.DataFrame:
        """The retraining triggers that fired, newest first: ``key, trigger, ts, job_id, outcome,
        details`` (dicts)."""
        where, params = _alert_where(dict(trigger=trigger), open_only=False)
        with self._connection(write=False) as con:
            frame = con.execute("SELECT key, trigger, ts, job_id, outcome, details FROM "
                                f"retrain_triggers{where} ORDER BY ts DESC, key", params).df()
        frame["details"] = [json.loads(d) if isinstance(d, str) else {} for d in frame["details"]]
        return frame

    def count_labels(self, *, source: str | None = None, since: datetime | None = None) -> int:
        """How many labels (from ``source``, e.g. ``review``) arrived after ``since``."""
        clauses, params = [], []
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        if since is not None:
            clauses.append("ts > ?")
            params.append(_utc(since))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        with self._connection(write=False) as con:
            (count,) = con.execute(f"SELECT count(*) FROM labels{where}", params).fetchone()
        return int(count)

    def retained_labelled_cases(self) -> pd.DataFrame:
        """Production cases usable for retraining: one row per image whose file was kept
        (``image_path``) and that has a label, with the metadata of its latest answer and its
        latest label. Columns: ``image_sha256, image_path, request_id, ts`` (of that answer),
        ``age_approx, sex, anatom_site_general, diagnosis, label_source, labelled_by, label_ts``;
        oldest answer first. Simulated answers count (the demo's traffic)."""
        sql = """
            WITH kept AS (
                SELECT request_id, ts, image_sha256, image_path, age_approx, sex, anatom_site_general
                FROM predictions WHERE image_path IS NOT NULL
                QUALIFY row_number() OVER (PARTITION BY image_sha256 ORDER BY ts DESC, request_id) = 1
            ),
            candidates AS (
                SELECT k.image_sha256, l.* EXCLUDE (image_sha256) FROM kept k
                JOIN predictions p ON p.image_sha256 = k.image_sha256
                JOIN labels l ON l.request_id = p.request_id
                UNION ALL
                SELECT k.image_sha256, l.* EXCLUDE (image_sha256) FROM kept k
                JOIN labels l ON l.image_sha256 = k.image_sha256
            ),
            latest AS (
                SELECT * FROM candidates
                QUALIFY row_number() OVER (PARTITION BY image_sha256 ORDER BY ts DESC, seq DESC) = 1
            )
            SELECT k.image_sha256, k.image_path, k.request_id, k.ts, k.age_approx, k.sex,
                   k.anatom_site_general, latest.diagnosis, latest.source AS label_source,
                   latest.labelled_by, latest.ts AS label_ts
            FROM kept k JOIN latest USING (image_sha256) ORDER BY k.ts, k.image_sha256"""
        with self._connection(write=False) as con:
            return con.execute(sql).df()

    def set_archived(self, version: str, archived: bool, *, actor: str, role: str, reason: str,
                     details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Archive (or restore) the model version ``version`` and audit it in one transaction."""
        entry = AuditEntry(actor=actor, role=role, action="archive" if archived else "unarchive",
                           target=_non_blank(version, "version"), reason=_non_blank(reason, "reason"),
                           details=dict(details or {}))
        with self._connection(write=True) as con:
            con.execute("INSERT INTO version_archive (version, archived, ts, audit_id) "
                        "VALUES (?, ?, ?, ?)", [version, archived, entry.ts, entry.id])
            _insert_audit(con, entry)
        return entry

    def archived_versions(self) -> list[str]:
        """The model versions archived now (the latest archive/restore of each wins), sorted."""
        with self._connection(write=False) as con:
            rows = con.execute("SELECT version FROM version_archive QUALIFY row_number() OVER "
                               "(PARTITION BY version ORDER BY seq DESC) = 1 AND archived "
                               "ORDER BY version").fetchall()
        return [version for (version,) in rows]


def _job_values(job: JobRecord) -> dict[str, Any]:
    values = job.model_dump()
    for column in _JOB_JSON_COLUMNS:
        values[column] = json.dumps(values[column])
    return values


def _write_job(con: duckdb.DuckDBPyConnection, job: JobRecord) -> None:
    """Overwrite the stored row of ``job`` (every column but the id, model and creation time)."""
    values = _job_values(job)
    columns = [c for c in JOB_COLUMNS if c not in ("id", "model", "created_at")]
    con.execute(f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                [*(values[c] for c in columns), job.id])


def _read_jobs(con: duckdb.DuckDBPyConnection, tail: str, params: list[object]) -> list[JobRecord]:
    """The jobs ``SELECT ... FROM jobs {tail}`` finds, as records."""
    rows = con.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs {tail}", params).fetchall()
    jobs = []
    for row in rows:
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        for column in _JOB_JSON_COLUMNS:
            values[column] = json.loads(values[column]) if values[column] else {}
        jobs.append(JobRecord(**values))
    return jobs

def _json_dict(value: object) -> dict[str, Any]:
    """A JSON column's object as a dict (NULL or a non-string as an empty dict)."""
    return json.loads(value) if isinstance(value, str) else {}


def _route_values(route: ServingRoute) -> dict[str, Any]:
    """The ``serving_route`` column values of ``route`` (the threshold overrides as JSON)."""
    values = route.model_dump()
    values["threshold_overrides"] = json.dumps(values["threshold_overrides"])
    return values


def _current_route(con: duckdb.DuckDBPyConnection) -> ServingRoute:
    fields = tuple(ServingRoute.model_fields)
    row = con.execute(f"SELECT {', '.join(fields)} FROM serving_route ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return ServingRoute()
    values = dict(zip(fields, row, strict=True))
    values["threshold_overrides"] = _json_dict(values["threshold_overrides"])
    return ServingRoute(**values)


def _insert_audit(con: duckdb.DuckDBPyConnection, entry: AuditEntry) -> None:
    con.execute("INSERT INTO audit_log (id, ts, actor, role, action, target, reason, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [entry.id, entry.ts, entry.actor, entry.role, entry.action, entry.target, entry.reason,
                 json.dumps(entry.details)])


#: The columns of ``alerts``, in the order of the :class:`Alert` fields.
ALERT_COLUMNS: tuple[str, ...] = tuple(Alert.model_fields)
_SNAPSHOT_METRIC_COLUMNS: tuple[str, ...] = tuple(SnapshotMetric.model_fields)
_EFFECTIVE_STATUS = ("CASE WHEN m.status = 'unknown' THEN m.estimated_status ELSE m.status END "
                     "AS effective_status")


def _alert_where(filters: Mapping[str, object], *, open_only: bool) -> tuple[str, list[object]]:
    """``WHERE`` over equality ``filters`` (None = no filter; keys fixed by the caller)."""
    clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
    params: list[object] = [value for value in filters.values() if value is not None]
    if open_only:
        clauses.append("resolved_at IS NULL")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _read_alerts(con: duckdb.DuckDBPyConnection, tail: str, params: list[object]) -> list[Alert]:
    """The alerts ``SELECT ... FROM alerts {tail}`` finds, as records."""
    rows = con.execute(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts {tail}", params).fetchall()
    alerts = []
    for row in rows:
        values = dict(zip(ALERT_COLUMNS, row, strict=True))
        values["details"] = json.loads(values["details"]) if values["details"] else {}
        alerts.append(Alert(**values))
    return alerts


def _read_snapshot(con: duckdb.DuckDBPyConnection, where: str,
                   params: list[object]) -> HealthSnapshot | None:
    """The newest snapshot matching ``where`` with its metrics, or None."""
    header = ("id", "ts", "window_name", "window_start", "window_end", "model_version", "source",
              "status", "report", "simulated")
    row = con.execute(f"SELECT {', '.join(header)} FROM health_snapshots {where} "
                      "ORDER BY ts DESC, seq DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    values = dict(zip(header, row, strict=True))
    values["report"] = json.loads(values["report"]) if values["report"] else {}
    values["simulated"] = bool(values["simulated"])
    metrics = con.execute(f"SELECT {', '.join(_SNAPSHOT_METRIC_COLUMNS)} FROM health_metrics "
                          "WHERE snapshot_id = ? ORDER BY metric", [values["id"]]).fetchall()
    values["metrics"] = tuple(SnapshotMetric(**dict(zip(_SNAPSHOT_METRIC_COLUMNS, m, strict=True)))
                              for m in metrics)
    return HealthSnapshot(**values)


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
