"""The record types that go into the store and come out of it: plain validated values, no SQL.

Every other module imports them from here (``skinlesion.store`` re-exports them). One module per
aggregate of the store: ``predictions`` (answers, labels, failed requests), ``route`` (the serving
route, the audit log, API keys), ``snapshots`` (health snapshots, alerts, alert actions), ``jobs``
(retraining jobs); the field validators they share are written once, as ``Annotated`` types, in
``fields``.
"""

from skinlesion.records.fields import (
    MAX_REASON_CHARS,
    CanonicalUuid,
    ClassName,
    FiniteOrNone,
    JsonDict,
    NonBlank,
    OptionalUuid,
    Sha256Hex,
    UtcDatetime,
    canonical_uuid,
    json_safe,
    new_id,
    non_blank,
    now,
    sha256_hex,
    utc,
)
from skinlesion.records.jobs import (
    JOB_COLUMNS,
    JOB_HEARTBEAT_S,
    JOB_STALE_AFTER,
    JOB_STATUSES,
    JOB_TRIGGERS,
    UNFINISHED_JOB_STATUSES,
    JobRecord,
    JobStatus,
    JobTrigger,
    this_host,
)
from skinlesion.records.predictions import (
    DECISIONS,
    ERROR_RATE_KINDS,
    FAILURE_KINDS,
    IMAGE_STAT_COLUMNS,
    LABEL_COLUMNS,
    MODEL_ROLES,
    PREDICTION_COLUMNS,
    PROBABILITY_COLUMNS,
    SOURCES,
    Decision,
    FailureKind,
    FailureRecord,
    LabelRecord,
    ModelRole,
    PredictionRecord,
    Source,
)
from skinlesion.records.route import (
    API_KEY_PREFIX,
    API_SCOPES,
    DEFAULT_ACTIVE_VERSION,
    AuditCheck,
    AuditEntry,
    ServingRoute,
)
from skinlesion.records.snapshots import (
    ALERT_ACTION_COLUMNS,
    ALERT_COLUMNS,
    ALERT_EVENTS,
    ALERT_STATUSES,
    HEALTH_STATUSES,
    SNAPSHOT_METRIC_COLUMNS,
    Alert,
    AlertAction,
    AlertActionKind,
    AlertEvent,
    AlertStatus,
    HealthSnapshot,
    HealthStatus,
    SnapshotMetric,
    alert_key,
)

__all__ = [
    "ALERT_ACTION_COLUMNS", "ALERT_COLUMNS", "ALERT_EVENTS", "ALERT_STATUSES", "API_KEY_PREFIX",
    "API_SCOPES", "DECISIONS", "DEFAULT_ACTIVE_VERSION", "ERROR_RATE_KINDS", "FAILURE_KINDS",
    "HEALTH_STATUSES", "IMAGE_STAT_COLUMNS", "JOB_COLUMNS", "JOB_HEARTBEAT_S", "JOB_STALE_AFTER",
    "JOB_STATUSES", "JOB_TRIGGERS", "LABEL_COLUMNS", "MAX_REASON_CHARS", "MODEL_ROLES",
    "PREDICTION_COLUMNS", "PROBABILITY_COLUMNS", "SNAPSHOT_METRIC_COLUMNS", "SOURCES",
    "UNFINISHED_JOB_STATUSES", "Alert", "AlertAction", "AlertActionKind", "AlertEvent",
    "AlertStatus", "AuditCheck", "AuditEntry", "CanonicalUuid", "ClassName", "Decision",
    "FailureKind", "FailureRecord", "FiniteOrNone", "HealthSnapshot", "HealthStatus", "JobRecord",
    "JobStatus", "JobTrigger", "JsonDict", "LabelRecord", "ModelRole", "NonBlank", "OptionalUuid",
    "PredictionRecord", "ServingRoute", "Sha256Hex", "SnapshotMetric", "Source", "UtcDatetime",
    "alert_key", "canonical_uuid", "json_safe", "new_id", "non_blank", "now", "sha256_hex",
    "this_host", "utc",
]
