"""The store: the ONLY code that speaks SQL, as one module per aggregate.

- ``connection``: store URLs (``SKINLESION_STORE_URL``), the DuckDB and PostgreSQL backends, units of
  work, retries; ``migrations``: versioned schema migrations per backend;
- ``predictions``: predictions, labels, request failures and the monitoring aggregates;
- ``route``: the serving route with the audit log, API keys and archived versions;
- ``jobs``: retraining jobs with their log and the retraining triggers;
- ``snapshots``: health snapshots with alerts;
- ``writer``: group commit (:class:`PredictionWriter`); ``heartbeat``: a running job's
  :class:`JobHeartbeat`; ``transfer``: copying a store to another
  backend, verified; ``facade``: :class:`Store`, the thin facade everything else calls.

The record types live in :mod:`skinlesion.records` (no SQL) and are re-exported here, so
``from skinlesion.store import Store, PredictionRecord`` keeps working.
"""

from skinlesion.records import (
    ALERT_COLUMNS,
    ALERT_EVENTS,
    ALERT_STATUSES,
    API_KEY_PREFIX,
    API_SCOPES,
    DECISIONS,
    DEFAULT_ACTIVE_VERSION,
    ERROR_RATE_KINDS,
    FAILURE_KINDS,
    HEALTH_STATUSES,
    IMAGE_STAT_COLUMNS,
    JOB_COLUMNS,
    JOB_STATUSES,
    JOB_TRIGGERS,
    LABEL_COLUMNS,
    MODEL_ROLES,
    PREDICTION_COLUMNS,
    PROBABILITY_COLUMNS,
    SOURCES,
    UNFINISHED_JOB_STATUSES,
    Alert,
    AlertAction,
    AlertEvent,
    AlertStatus,
    AuditCheck,
    AuditEntry,
    Decision,
    FailureKind,
    FailureRecord,
    HealthSnapshot,
    HealthStatus,
    JobRecord,
    JobStatus,
    JobTrigger,
    LabelRecord,
    ModelRole,
    PredictionRecord,
    ServingRoute,
    SnapshotMetric,
    Source,
    alert_key,
)
from skinlesion.store.connection import StoreURL, parse_store_url
from skinlesion.store.facade import Store
from skinlesion.store.heartbeat import JobHeartbeat
from skinlesion.store.migrations import SCHEMA_VERSION
from skinlesion.store.writer import PredictionWriter

__all__ = [
    "ALERT_COLUMNS", "ALERT_EVENTS", "ALERT_STATUSES", "API_KEY_PREFIX", "API_SCOPES", "DECISIONS",
    "DEFAULT_ACTIVE_VERSION", "ERROR_RATE_KINDS", "FAILURE_KINDS", "HEALTH_STATUSES",
    "IMAGE_STAT_COLUMNS", "JOB_COLUMNS", "JOB_STATUSES", "JOB_TRIGGERS", "LABEL_COLUMNS",
    "MODEL_ROLES", "PREDICTION_COLUMNS", "PROBABILITY_COLUMNS", "SCHEMA_VERSION", "SOURCES",
    "UNFINISHED_JOB_STATUSES", "Alert", "AlertAction", "AlertEvent", "AlertStatus", "AuditCheck", "AuditEntry", "Decision",
    "FailureKind", "FailureRecord", "HealthSnapshot", "HealthStatus", "JobHeartbeat", "JobRecord", "JobStatus",
    "JobTrigger", "LabelRecord", "ModelRole", "PredictionRecord", "PredictionWriter", "ServingRoute",
    "SnapshotMetric", "Source", "Store", "StoreURL", "alert_key", "parse_store_url",
]
