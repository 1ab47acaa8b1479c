"""The record types that go into the store and come out of it: plain validated values, no SQL.

Every other module imports them from here (``skinlesion.store`` re-exports them). The field
validators shared by several records are written once, as ``Annotated`` types: :data:`UtcDatetime`
(aware UTC; a naive value is taken to be UTC already), :data:`CanonicalUuid`, :data:`NonBlank` and
:data:`Sha256Hex`. A bad value raises :class:`~skinlesion.errors.DataError` naming the field.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from skinlesion.errors import DataError
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
    "image_path", "simulated", "returned", "api_client")
LABEL_COLUMNS: tuple[str, ...] = (
    "id", "request_id", "image_sha256", "diagnosis", "source", "labelled_by", "ts", "simulated")

#: The model version served before anyone sets a route: the shipped reference version.
DEFAULT_ACTIVE_VERSION = "reference"
API_KEY_PREFIX = "skl_"
#: What an API key may do beyond its own answers: ``labeller`` labels any answer (a pathology lab's
#: system), ``admin`` also reads any answer. A key without scopes reads and labels its own only.
API_SCOPES: tuple[str, ...] = ("labeller", "admin")
#: Longest audit reason: a short why, never a place for patient details.
MAX_REASON_CHARS = 500
_PROBABILITY_SUM_TOLERANCE = 1e-3


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def canonical_uuid(value: object, field: str) -> str:
    """``value`` as a canonical lower-case UUID string; a DataError naming ``field`` otherwise."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise DataError(f"must be a UUID such as {new_id()}, got {value!r}", field=field) from None


def sha256_hex(value: str, field: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise DataError(f"must be a sha256 hex digest (64 hex characters), got {value!r}", field=field)
    return text


def non_blank(value: str, field: str) -> str:
    if not value.strip():
        raise DataError("must not be empty", field=field)
    return value.strip()


def _field(info: ValidationInfo) -> str:
    return info.field_name or "value"


#: An aware UTC datetime (a naive one is taken to be UTC).
UtcDatetime = Annotated[datetime, AfterValidator(utc)]
#: A canonical lower-case UUID string.
CanonicalUuid = Annotated[str, BeforeValidator(lambda v, info: canonical_uuid(v, _field(info)))]
#: A canonical UUID string, or None.
OptionalUuid = Annotated[str | None, BeforeValidator(
    lambda v, info: None if v is None else canonical_uuid(v, _field(info)))]
#: Text that is not blank, stripped.
NonBlank = Annotated[str, AfterValidator(lambda v, info: non_blank(v, _field(info)))]
#: A sha256 hex digest, lower case.
Sha256Hex = Annotated[str, AfterValidator(lambda v, info: sha256_hex(v, _field(info)))]


# --- records: the pure-Python types that go in and come out -------------------------------------------


class PredictionRecord(BaseModel):
    """One answer of a model: a row of ``predictions``. ``probabilities`` is keyed by CLASSES."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    request_id: CanonicalUuid = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    source: Source
    model_version: NonBlank
    model_role: ModelRole = "active"
    age_approx: float | None = None
    sex: str = MISSING
    anatom_site_general: str = MISSING
    image_sha256: Sha256Hex
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
    device: NonBlank
    embedding: list[float] | None = None
    image_path: str | None = None
    simulated: bool = False
    returned: bool = True
    #: the name of the API key that asked (None for answers not asked through the API)
    api_client: str | None = None

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

    id: str = Field(default_factory=new_id)
    request_id: OptionalUuid = None
    image_sha256: Sha256Hex | None = None
    diagnosis: str
    source: NonBlank
    labelled_by: NonBlank
    ts: UtcDatetime = Field(default_factory=now)
    simulated: bool = False

    @field_validator("diagnosis")
    @classmethod
    def _diagnosis(cls, value: str) -> str:
        class_index(value)
        return value

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

    active_version: NonBlank = DEFAULT_ACTIVE_VERSION
    fallback_version: str | None = None
    fallback_engaged: bool = False
    restricted_to_clear_cases: bool = False
    challenger_version: str | None = None
    challenger_share: float = Field(0.0, ge=0.0, le=1.0)
    shadow_version: str | None = None
    threshold_overrides: dict[str, float] = Field(default_factory=dict)

    @field_validator("threshold_overrides")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for version, threshold in value.items():
            non_blank(version, "threshold_overrides")
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

    id: str = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    actor: NonBlank
    role: NonBlank
    action: NonBlank
    target: str | None = None
    reason: str = ""  # at most MAX_REASON_CHARS, checked where it is stored (store.route)
    details: dict[str, Any] = Field(default_factory=dict)



class AuditCheck(BaseModel):
    """The audit chain verified (:meth:`Store.verify_audit`): ``rows`` in the log, ``checked`` of
    them intact from the oldest; where the chain breaks, the first broken row and what is wrong."""

    model_config = ConfigDict(frozen=True)

    rows: int
    checked: int
    broken_id: str | None = None
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_id is None


class FailureRecord(BaseModel):
    """A prediction request answered with an error: a row of ``request_failures``.

    No patient data: neither the request body nor the error message (which may quote a submitted
    value) is kept, only the field at fault. ``model_version`` is None when the request failed
    before a model answered (bad input, auth, no route)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: CanonicalUuid = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    source: Source = "api"
    model_version: str | None = None
    http_status: int = Field(ge=400, le=599)
    kind: FailureKind
    field: str | None = None



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


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN), recursively."""
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class SnapshotMetric(BaseModel):
    """One metric of a health snapshot (a row of ``health_metrics``).

    ``value`` is the realised (label-based) value with its ``status``; None where the metric is
    undefined in the window (``note`` says why, e.g. "not enough labels"). ``estimated`` is the
    value estimated before labels arrive (CBPE) with its ``estimated_status``; ``n`` the cases
    behind it; ``previous_value`` the realised value in the window before, for the trend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: NonBlank
    value: float | None = None
    status: HealthStatus = "unknown"
    n: int | None = None
    note: str = ""
    estimated: float | None = None
    estimated_status: HealthStatus = "unknown"
    previous_value: float | None = None

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

    id: str = Field(default_factory=new_id)
    ts: UtcDatetime = Field(default_factory=now)
    window_name: NonBlank
    window_start: UtcDatetime
    window_end: UtcDatetime
    model_version: str | None = None
    source: str | None = None
    status: HealthStatus
    metrics: tuple[SnapshotMetric, ...] = ()
    report: dict[str, Any] = Field(default_factory=dict)
    simulated: bool = False

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _plain_status(value)

    @field_validator("report")
    @classmethod
    def _report(cls, value: dict[str, Any]) -> dict[str, Any]:
        return json_safe(value)

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

    id: str = Field(default_factory=new_id)
    key: str = ""
    metric: NonBlank
    scope: NonBlank
    status: AlertStatus
    opened_at: UtcDatetime
    last_seen_at: UtcDatetime
    resolved_at: UtcDatetime | None = None
    message: NonBlank
    details: dict[str, Any] = Field(default_factory=dict)
    last_event: AlertEvent = "opened"
    last_event_at: UtcDatetime
    notified: bool = False

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: object) -> object:
        return _plain_status(value)

    @field_validator("details")
    @classmethod
    def _details(cls, value: dict[str, Any]) -> dict[str, Any]:
        return json_safe(value)

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


JobTrigger = Literal["manual", "scheduled", "event", "active_learning"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_TRIGGERS: tuple[str, ...] = get_args(JobTrigger)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
#: statuses of a job that may still be working (at most one such job per model)
UNFINISHED_JOB_STATUSES: tuple[str, ...] = ("queued", "running")
#: how often a running job's process records that it is alive (``jobs.heartbeat_at``)
JOB_HEARTBEAT_S = 10.0
#: a job on another host whose heartbeat is older than this counts as gone (missed beats: its
#: process or machine stopped)
JOB_STALE_AFTER = timedelta(seconds=6 * JOB_HEARTBEAT_S)


def this_host() -> str:
    """The name of the machine this process runs on (where a job it launches runs)."""
    return socket.gethostname()


class JobRecord(BaseModel):
    """A background job (a retraining run): a row of ``jobs``.

    ``model`` is the model version the job works on; at most one unfinished (queued or running) job
    per model is stored (:meth:`Store.create_job`). ``pid`` is the job's process once launched, on
    the machine ``host`` (the launcher's: a job runs where it was launched; None on rows stored
    before hosts were recorded, which count as this machine's); ``heartbeat_at`` is when that
    process last said it is alive (every :data:`JOB_HEARTBEAT_S` while it runs), which is how
    another host judges it; ``progress`` (0..1) and ``message`` say how far it got;
    ``cancel_requested`` asks it to stop at its next check; ``result`` holds what it produced (e.g.
    the new version id and the champion/challenger comparison), ``error`` why it failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_id)
    kind: NonBlank = "retrain"
    model: NonBlank
    trigger: JobTrigger
    status: JobStatus = "queued"
    reason: str = ""
    requested_by: NonBlank
    role: NonBlank
    created_at: UtcDatetime = Field(default_factory=now)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    pid: int | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""
    cancel_requested: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    host: str | None = Field(default_factory=this_host)
    heartbeat_at: UtcDatetime | None = None

    @field_validator("config", "result")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        return json_safe(value)

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED_JOB_STATUSES

    def runs_on(self, host: str) -> bool:
        """Whether the job's process is on the machine ``host`` (so its pid means something there);
        a job stored without a host counts as local."""
        return self.host is None or self.host == host

    def heartbeat_fresh(self, at: datetime, stale_after: timedelta = JOB_STALE_AFTER) -> bool:
        """Whether the job's process said it was alive less than ``stale_after`` before ``at``
        (before its first beat: since it started, or was queued)."""
        last = self.heartbeat_at or self.started_at or self.created_at
        return at - last < stale_after


#: The columns of ``jobs``, in the order of the :class:`JobRecord` fields.
JOB_COLUMNS: tuple[str, ...] = tuple(JobRecord.model_fields)
#: The columns of ``alerts``, in the order of the :class:`Alert` fields.
ALERT_COLUMNS: tuple[str, ...] = tuple(Alert.model_fields)
#: The columns of ``health_metrics`` but the snapshot id, in the order of :class:`SnapshotMetric`.
SNAPSHOT_METRIC_COLUMNS: tuple[str, ...] = tuple(SnapshotMetric.model_fields)

AlertActionKind = Literal["acknowledge", "silence", "unsilence", "assign"]


class AlertAction(BaseModel):
    """What an operator did about an alert (a row of ``alert_actions``, audited as ``audit_id``):
    ``acknowledge`` (seen; ``note``), ``silence`` (no notifications until ``silenced_until``;
    ``note`` says why), ``unsilence`` (the silence lifted early), ``assign`` (to ``assignee``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_id)
    alert_id: NonBlank
    ts: UtcDatetime = Field(default_factory=now)
    actor: NonBlank
    role: NonBlank
    kind: AlertActionKind
    note: str = Field("", max_length=MAX_REASON_CHARS)
    silenced_until: UtcDatetime | None = None
    assignee: str | None = Field(None, max_length=100)
    audit_id: str = ""

    @model_validator(mode="after")
    def _what_the_kind_needs(self) -> AlertAction:
        if self.kind == "silence" and not self.note.strip():
            raise DataError("a silence needs a reason (it is audited)", field="note")
        if self.kind == "silence" and (self.silenced_until is None or self.silenced_until <= self.ts):
            raise DataError("a silence needs an end after its start", field="silenced_until")
        if self.kind == "assign" and not (self.assignee or "").strip():
            raise DataError("name who the alert is assigned to", field="assignee")
        return self


#: The columns of ``alert_actions``, in the order of the :class:`AlertAction` fields.
ALERT_ACTION_COLUMNS: tuple[str, ...] = tuple(AlertAction.model_fields)
